package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/tdforge/tdforge/internal/build"
	"github.com/tdforge/tdforge/internal/image/imagedir"
	"github.com/tdforge/tdforge/internal/cli/progress"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
)

func init() {
	register(&command{name: "build", summary: "build a deterministic TD image from a manifest", run: runBuild})
}

func runBuild(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	var mf manifestFlags
	mf.register(fs)
	out := fs.String("o", "", "output directory (replaced atomically)")
	updateLock := fs.Bool("update-lock", false, "accept changed local inputs and rewrite MANIFEST.lock.hcl")
	asJSON := fs.Bool("json", false, "print build.json and the registers as JSON")
	cacheDir := fs.String("cache", "", "input cache directory (default $TDFORGE_CACHE, $XDG_CACHE_HOME/tdforge or ~/.cache/tdforge)")
	repo := fs.String("repo", "", "tdforge source tree to build initd and agent from (default: found from the manifest or the working directory)")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: builder build -o DIR [-var k=v]... [-var-file F]... [-update-lock] [--json] MANIFEST\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() != 1 || *out == "" {
		fs.Usage()
		return exitUsage
	}
	m, ok := mf.load(fs.Arg(0), false)
	if !ok {
		return exitFail
	}
	c, err := openCache(*cacheDir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "builder build: cache: %v\n", err)
		return exitFail
	}
	root := *repo
	if root == "" {
		root = findRepoRoot(filepath.Dir(fs.Arg(0)), ".")
	}
	res, err := build.Build(ctx, m, build.Options{
		OutDir: *out, UpdateLock: *updateLock, Cache: c, RepoRoot: root,
		Progress: progress.New(os.Stdout), Log: logger(),
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "builder build: %v\n", err)
		return exitCodeFor(err)
	}
	ref, err := refvalues.ReadFile(filepath.Join(*out, imagedir.ReferenceValues))
	if err != nil {
		fmt.Fprintf(os.Stderr, "builder build: %v\n", err)
		return exitFail
	}
	if *asJSON {
		json.NewEncoder(os.Stdout).Encode(map[string]any{"build": res.Info, "registers": ref.Registers, "reasons": ref.Reasons})
		return exitOK
	}
	fmt.Printf("built %s %s%s into %s\n", res.Info.Image.Name, res.Info.Image.Version, devMark(res.Info), *out)
	names := make([]string, 0, len(res.Info.Artifacts))
	for n := range res.Info.Artifacts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Printf("  %-24s sha256:%s\n", n, res.Info.Artifacts[n])
	}
	printRegisters(ref)
	return exitOK
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

func printRegisters(ref *refvalues.Document) {
	fmt.Printf("reference values (platform %s):\n", ref.Platform.Name)
	for _, n := range refvalues.RegisterNames {
		v := ref.Registers.Get(n)
		if v == nil {
			fmt.Printf("  %-6s unknown: %s\n", n, ref.Reasons[n])
			continue
		}
		fmt.Printf("  %-6s %s\n", n, *v)
	}
}
