package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/tdforge/tdforge/internal/fsutil"
	"github.com/tdforge/tdforge/internal/tdx/refexport"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
)

func init() {
	register(&command{name: "export", summary: "convert reference values for other verifiers (checkconfig, rvps, flashbots)", run: runExport})
}

var exporters = map[string]func(*refvalues.Document) ([]byte, error){
	"checkconfig": refexport.CheckConfig, // go-tdx-guest tools/check policy (protojson)
	"rvps":        refexport.RVPSSample,  // Confidential Containers Trustee RVPS "sample" message
	"flashbots":   refexport.Flashbots,   // flashbots-style measurements list
}

func runExport(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	format := fs.String("format", "", "checkconfig (go-tdx-guest tools/check), rvps (Trustee RVPS sample) or flashbots (measurements list)")
	out := fs.String("o", "", "write here (atomically) instead of stdout")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: builder export --format checkconfig|rvps|flashbots [-o FILE] REFERENCE.json\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	fn, ok := exporters[*format]
	if !ok || fs.NArg() != 1 {
		if !ok {
			fmt.Fprintf(os.Stderr, "builder export: --format %q: want checkconfig, rvps or flashbots\n", *format)
		}
		fs.Usage()
		return exitUsage
	}
	doc, err := refvalues.ReadFile(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(os.Stderr, "builder export: %v\n", err)
		return exitFail
	}
	b, err := fn(doc)
	if err != nil {
		fmt.Fprintf(os.Stderr, "builder export: %s: %v\n", *format, err)
		return exitFail
	}
	if *out == "" {
		os.Stdout.Write(b)
		return exitOK
	}
	if err := fsutil.WriteFile(*out, b, 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "builder export: %v\n", err)
		return exitFail
	}
	return exitOK
}
