package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tdforge/tdforge/internal/build"
	"github.com/tdforge/tdforge/internal/cli/progress"
)

func init() { measureManifest = runMeasureManifest }

// runMeasureManifest is `builder measure [flags] MANIFEST`: the registers of
// the image the manifest describes, computed with the same code as build,
// without publishing an image.
func runMeasureManifest(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("measure", flag.ContinueOnError)
	var mf manifestFlags
	mf.register(fs)
	asJSON := fs.Bool("json", false, "print JSON: mrtd, rtmr0..3 (null when unknown), reasons, platform, events")
	explain := fs.Bool("explain", false, "print the events behind each register")
	cacheDir := fs.String("cache", "", "input cache directory")
	repo := fs.String("repo", "", "tdforge source tree (default: found from the manifest or the working directory)")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: builder measure [-var k=v]... [-var-file F]... [--json] [--explain] MANIFEST\n       builder measure --firmware F [--kernel K --initrd I --cmdline C --memory 2G --cpus 2 --platform P] (raw mode)\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	m, ok := mf.load(fs.Arg(0), true)
	if !ok {
		return exitFail
	}
	c, err := openCache(*cacheDir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "builder measure: cache: %v\n", err)
		return exitFail
	}
	root := *repo
	if root == "" {
		root = findRepoRoot(filepath.Dir(fs.Arg(0)), ".")
	}
	var rep progress.Reporter
	if !*asJSON {
		rep = progress.New(os.Stderr)
	}
	r, prof, err := build.Measure(ctx, m, build.Options{Cache: c, RepoRoot: root, Progress: rep, Log: logger()})
	if err != nil {
		fmt.Fprintf(os.Stderr, "builder measure: %v\n", err)
		return exitCodeFor(err)
	}
	if *asJSON {
		b, err := r.JSON()
		if err != nil {
			fmt.Fprintf(os.Stderr, "builder measure: %v\n", err)
			return exitFail
		}
		os.Stdout.Write(b)
		return exitOK
	}
	printMeasure(os.Stdout, r, prof, *explain)
	return exitOK
}
