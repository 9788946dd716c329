package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/tdforge/tdforge/internal/build"
	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/cli/progress"
	"github.com/tdforge/tdforge/internal/image/imagedir"
	"github.com/tdforge/tdforge/internal/inputs/cache"
	"github.com/tdforge/tdforge/internal/inputs/fetch"
	"github.com/tdforge/tdforge/internal/inputs/lockfile"
	"github.com/tdforge/tdforge/internal/inputs/secret"
	"github.com/tdforge/tdforge/internal/manifest"
)

// pipelineFlags are the flags of the commands that run the build pipeline
// (build, measure): the manifest variables (as validate takes them), the
// input cache, the source tree and -verbose.
type pipelineFlags struct {
	vars     varFlags
	varFiles *listFlag
	cacheDir *string
	repo     *string
	verbose  *bool
	secrets  *string
}

func (f *pipelineFlags) register(fs *flag.FlagSet) {
	f.vars, f.varFiles = addVarFlags(fs)
	f.cacheDir = fs.String("cache", "", "input cache directory (default $TDFORGE_CACHE, $XDG_CACHE_HOME/tdforge or ~/.cache/tdforge)")
	f.repo = fs.String("repo", "", "tdforge source tree to build initd and agent from (default: found from the manifest or the working directory)")
	f.verbose = fs.Bool("verbose", false, "also show the tools' output (compilers, downloads) that goes to the build log")
	f.secrets = fs.String("secrets", "", "directory of key-broker resource files DIR/<repo>/<type>/<tag> holding the keys of encrypted payloads (build creates missing ones, mode 0600); verifier serve --resources reads the same directory")
}

// pipeline is a loaded manifest ready to run: its plan and the run's
// options (cache, source tree, build log; step lines and progress bars on
// stderr unless quiet).
type pipeline struct {
	m    *manifest.Manifest
	plan *build.Plan
	opts build.Options
	log  *buildLog
}

// open loads the manifest at path with the flags and prepares its run; the
// build log goes to logPath ("" keeps it in memory). On failure it has
// printed why (diagnostics, or "builder CMD: err") and returns nil and the
// exit code.
func (f *pipelineFlags) open(cmd, path, logPath string, allowUnknown, quiet bool, stderr io.Writer) (*pipeline, int) {
	m, diags := manifest.Load(path, manifest.LoadOptions{Vars: f.vars, VarFiles: *f.varFiles, Environ: os.Environ(), AllowUnknown: allowUnknown})
	if diags != nil && len(diags.Diags) > 0 {
		printDiags(stderr, diags)
	}
	if diags.HasErrors() || m == nil {
		return nil, cli.ExitFail
	}
	plan, err := build.NewPlan(m)
	if err != nil {
		return nil, fail(stderr, cmd, err)
	}
	c, err := openCache(*f.cacheDir)
	if err != nil {
		return nil, fail(stderr, cmd, fmt.Errorf("cache: %w", err))
	}
	root := *f.repo
	if root == "" {
		root = findRepoRoot(filepath.Dir(path), ".")
	}
	log, err := openBuildLog(logPath, *f.verbose, stderr)
	if err != nil {
		return nil, fail(stderr, cmd, err)
	}
	p := &pipeline{m: m, plan: plan, log: log, opts: build.Options{Cache: c, RepoRoot: root, Log: log, Secrets: *f.secrets}}
	if !quiet {
		p.opts.OnStep = stepPrinter(stderr)
		p.opts.Progress = progress.New(stderr)
	}
	return p, cli.ExitOK
}

// finish closes the run's build log, showing it when the run failed or
// with -verbose.
func (f *pipelineFlags) finish(p *pipeline, err error, stderr io.Writer) {
	p.log.finish(err != nil, *f.verbose, stderr)
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

// exitCodeFor maps an error to the documented exit codes.
func exitCodeFor(err error) int {
	var ne *fetch.NetworkError
	if errors.As(err, &ne) {
		return cli.ExitNetwork
	}
	return cli.ExitFail
}

// withHints adds the command-line advice for the library errors that have
// one: the libraries state facts, the commands know the flags.
func withHints(err error) error {
	var changed *lockfile.ChangedError
	var syntax *lockfile.SyntaxError
	var unset *build.UnsetError
	var notBuild *imagedir.NotBuildError
	switch {
	case errors.Is(err, lockfile.ErrNotRecorded):
		return cli.WithHint(err, "run 'builder build -update-lock' to record it")
	case errors.As(err, &changed):
		return cli.WithHint(err, "if the change is intended, run 'builder build -update-lock' to record the new digest")
	case errors.As(err, &syntax):
		return cli.WithHint(err, "delete it and run 'builder build -update-lock' to recreate it")
	case errors.As(err, &unset):
		return cli.WithHint(err, "give each variable a value with -var NAME=VALUE or -var-file FILE")
	case errors.As(err, &notBuild):
		return cli.WithHint(err, "build one with 'builder build -o %s MANIFEST'", notBuild.Dir)
	case errors.Is(err, build.ErrNoSecrets):
		return cli.WithHint(err, "pass --secrets DIR, the directory of key-broker resource files that holds (or receives) the key as DIR/<key id>; `verifier serve --resources` serves the same directory")
	case errors.Is(err, secret.ErrDevSecret):
		return cli.WithHint(err, "give --secrets a directory of real keys")
	case errors.Is(err, build.ErrNoRepoRoot):
		return cli.WithHint(err, "run builder inside the tdforge repository or pass -repo DIR")
	}
	return err
}

// fail prints err (with its hints) as "builder CMD: err" and returns its
// exit code.
func fail(stderr io.Writer, cmd string, err error) int {
	cli.PrintError(stderr, "builder "+cmd, withHints(err))
	return exitCodeFor(err)
}

// stepPrinter returns an OnStep callback writing one line per step to w.
func stepPrinter(w io.Writer) func(build.Step) {
	return func(s build.Step) {
		if s.Skipped != "" {
			fmt.Fprintf(w, "[%d/%d] %s: skipped: %s\n", s.Index, s.Total, s.Name, s.Skipped)
			return
		}
		fmt.Fprintf(w, "[%d/%d] %s: %s\n", s.Index, s.Total, s.Name, s.Summary)
	}
}
