package main

import (
	"errors"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/tdforge/tdforge/internal/inputs/cache"
	"github.com/tdforge/tdforge/internal/inputs/fetch"
	"github.com/tdforge/tdforge/internal/manifest"
)

// manifestFlags are the variable flags shared by build and measure (the
// same -var/-var-file handling as validate).
type manifestFlags struct {
	vars     varFlags
	varFiles *listFlag
}

func (f *manifestFlags) register(fs *flag.FlagSet) { f.vars, f.varFiles = addVarFlags(fs) }

// load evaluates a manifest with the flags; diagnostics go to stderr.
func (f *manifestFlags) load(path string, allowUnknown bool) (*manifest.Manifest, bool) {
	m, diags := manifest.Load(path, manifest.LoadOptions{Vars: f.vars, VarFiles: *f.varFiles, Environ: os.Environ(), AllowUnknown: allowUnknown})
	if diags != nil && len(diags.Diags) > 0 {
		printDiags(os.Stderr, diags)
	}
	if diags.HasErrors() || m == nil {
		return nil, false
	}
	return m, true
}

// openCache opens the input cache, honouring -cache.
func openCache(dir string) (*cache.Cache, error) {
	if dir != "" {
		return cache.Open(dir)
	}
	return cache.Default()
}

// findRepoRoot locates this repository (go.mod of github.com/tdforge/tdforge)
// from the given start directories, for building initd and agent.
func findRepoRoot(starts ...string) string {
	for _, s := range starts {
		d, err := filepath.Abs(s)
		if err != nil {
			continue
		}
		for {
			b, err := os.ReadFile(filepath.Join(d, "go.mod"))
			if err == nil && strings.Contains(string(b), "module github.com/tdforge/tdforge\n") {
				return d
			}
			parent := filepath.Dir(d)
			if parent == d {
				break
			}
			d = parent
		}
	}
	return ""
}

// logger is quiet structured logging to stderr when not on a terminal.
func logger() *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("TDFORGE_LOG") == "debug" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// exitCodeFor maps an error to the documented exit codes.
func exitCodeFor(err error) int {
	var ne *fetch.NetworkError
	if errors.As(err, &ne) {
		return exitNetwork
	}
	return exitFail
}
