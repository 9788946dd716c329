// Package selfbuild builds this repository's guest programs (initd, agent)
// reproducibly: static, stripped, path- and build-ID-free, for linux/amd64
// v1, so identical sources and Go version give identical bytes wherever and
// by whomever they are built.
package selfbuild

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Module is the module path that marks the repository root.
const Module = "github.com/tdforge/tdforge"

// FindRoot walks up from dir to the directory whose go.mod declares Module.
func FindRoot(dir string) (string, error) {
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && modulePath(b) == Module {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no %s checkout above %s: run the builder from the tdforge repository or pass its path", Module, dir)
		}
		d = parent
	}
}

func modulePath(gomod []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// Env returns the build environment: the caller's environment without
// variables that change the output, plus the fixed settings.
func Env() []string {
	drop := map[string]bool{"GOFLAGS": true, "CGO_ENABLED": true, "GOOS": true, "GOARCH": true, "GOAMD64": true,
		"GOEXPERIMENT": true, "GOTOOLCHAIN": true, "GOWORK": true, "GOFIPS140": true, "GODEBUG": true}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !drop[k] {
			env = append(env, kv)
		}
	}
	return append(env, "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1", "GOTOOLCHAIN=local", "GOWORK=off")
}

// Args are the go build flags used (before -o and the package).
var Args = []string{"build", "-trimpath", "-buildvcs=false", "-ldflags=-buildid= -s -w"}

// GoVersion returns the toolchain's version, e.g. "go1.26.8".
func GoVersion(ctx context.Context) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "version")
	cmd.Env = Env()
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go version: %w (is Go installed and on PATH?)", err)
	}
	f := strings.Fields(string(out)) // "go version go1.26.8 linux/amd64"
	if len(f) < 3 {
		return "", fmt.Errorf("go version: unexpected output %q", out)
	}
	return f[2], nil
}

// Build compiles main package pkg (e.g. "./cmd/initd") of the repository at
// repoRoot into the file out (written atomically: built in a temporary
// directory, then renamed) and returns the Go version used. The go
// command's output (module downloads, compiler messages) goes to log (nil:
// discarded) and, on failure, into the error.
func Build(ctx context.Context, repoRoot, pkg, out string, log io.Writer) (string, error) {
	if log == nil {
		log = io.Discard
	}
	ver, err := GoVersion(ctx)
	if err != nil {
		return "", err
	}
	outDir := filepath.Dir(out)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(outDir, ".selfbuild-*")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "bin")
	args := append(append([]string{}, Args...), "-o", bin, pkg)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = repoRoot
	cmd.Env = Env()
	var stderr bytes.Buffer
	cmd.Stdout = io.MultiWriter(&stderr, log)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s in %s: %v\n%s", pkg, repoRoot, err, strings.TrimSpace(stderr.String()))
	}
	if err := os.Chmod(bin, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(bin, out); err != nil {
		return "", err
	}
	return ver, nil
}
