package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"

	"github.com/tdforge/tdforge/internal/build"
	"github.com/tdforge/tdforge/internal/canonjson"
	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/image/imagedir"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/register"
)

func runBuild(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var pf pipelineFlags
	pf.register(fs)
	out := fs.String("o", "", "output directory (replaced atomically)")
	updateLock := fs.Bool("update-lock", false, "accept changed local inputs and rewrite MANIFEST.lock.hcl")
	asJSON := fs.Bool("json", false, "print build.json and the registers as JSON")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: builder build -o DIR [--secrets DIR] [-var k=v]... [-var-file F]... [-update-lock] [--json] [--verbose] MANIFEST\n\n"+
			"The tools' own output goes to DIR.build.log, shown when the build fails.\n\n")
		fs.PrintDefaults()
	}
	if code, ok := cli.ParseArgs(fs, args, -1); !ok {
		return code
	}
	if fs.NArg() != 1 || *out == "" {
		fs.Usage()
		return cli.ExitUsage
	}
	p, code := pf.open("build", fs.Arg(0), filepath.Clean(*out)+".build.log", false, *asJSON, stderr)
	if p == nil {
		return code
	}
	p.opts.OutDir, p.opts.UpdateLock = *out, *updateLock
	if !*asJSON {
		fmt.Fprintf(stderr, "building %s %s from %s (tool output: %s)\n", p.m.Image.Name, p.m.Image.Version, fs.Arg(0), p.log.path)
	}
	res, err := build.Build(ctx, p.plan, p.opts)
	pf.finish(p, err, stderr)
	if err != nil {
		return fail(stderr, "build", err)
	}
	ref := res.Reference
	if *asJSON {
		if err := canonjson.Encode(stdout, map[string]any{"build": res.Info, "registers": ref.Registers, "reasons": ref.Reasons}); err != nil {
			return fail(stderr, "build", err)
		}
		return cli.ExitOK
	}
	fmt.Fprintf(stdout, "built %s %s%s into %s\n", res.Info.Image.Name, res.Info.Image.Version, devMark(res.Info), *out)
	for _, n := range slices.Sorted(maps.Keys(res.Info.Artifacts)) {
		fmt.Fprintf(stdout, "  %-24s sha256:%s\n", n, res.Info.Artifacts[n])
	}
	printRegisters(stdout, ref)
	return cli.ExitOK
}

func devMark(i *imagedir.Info) string {
	switch {
	case i.TDX.Simulate:
		return " [DEV, SIMULATED TDX]"
	case i.Image.Dev:
		return " [DEV]"
	}
	return ""
}

func printRegisters(w io.Writer, ref *refvalues.Document) {
	fmt.Fprintf(w, "reference values (platform %s):\n", ref.Platform.Name)
	for _, reg := range register.All {
		v := ref.Registers.Get(reg)
		if v == nil {
			fmt.Fprintf(w, "  %-6s unknown: %s\n", reg.Key(), ref.Reasons[reg.Key()])
			continue
		}
		fmt.Fprintf(w, "  %-6s %s\n", reg.Key(), *v)
	}
}
