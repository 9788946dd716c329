package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/fsutil"
	"github.com/tdforge/tdforge/internal/tdx/refexport"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
)

var exporters = map[string]func(*refvalues.Document) ([]byte, error){
	"checkconfig": refexport.CheckConfig, // go-tdx-guest tools/check policy (protojson)
	"rvps":        refexport.RVPSSample,  // Confidential Containers Trustee RVPS "sample" message
	"flashbots":   refexport.Flashbots,   // flashbots-style measurements list
}

func runExport(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	format := fs.String("format", "", "checkconfig (go-tdx-guest tools/check), rvps (Trustee RVPS sample) or flashbots (measurements list)")
	out := fs.String("o", "", "write here (atomically) instead of stdout")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: builder export --format checkconfig|rvps|flashbots [-o FILE] REFERENCE.json\n\n")
		fs.PrintDefaults()
	}
	if code, ok := cli.ParseArgs(fs, args, -1); !ok {
		return code
	}
	fn, ok := exporters[*format]
	if !ok || fs.NArg() != 1 {
		if !ok {
			fmt.Fprintf(stderr, "builder export: --format %q: want checkconfig, rvps or flashbots\n", *format)
		}
		fs.Usage()
		return cli.ExitUsage
	}
	doc, err := refvalues.ReadFile(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "builder export: %v\n", err)
		return cli.ExitFail
	}
	b, err := fn(doc)
	if err != nil {
		fmt.Fprintf(stderr, "builder export: %s: %v\n", *format, err)
		return cli.ExitFail
	}
	if *out == "" {
		stdout.Write(b)
		return cli.ExitOK
	}
	if err := fsutil.WriteFile(*out, b, 0o644); err != nil {
		fmt.Fprintf(stderr, "builder export: %v\n", err)
		return cli.ExitFail
	}
	return cli.ExitOK
}
