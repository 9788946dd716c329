package selfbuild

import (
	"bytes"
	"context"
	"debug/elf"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeModule makes a small copy of a tdforge-like module in dir.
func writeModule(t *testing.T, dir string) {
	t.Helper()
	files := map[string]string{
		"go.mod":            "module github.com/tdforge/tdforge\n\ngo 1.26.0\n",
		"cmd/hello/main.go": "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n)\n\nfunc main() { fmt.Println(\"hello from\", os.Args[0]) }\n",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFindRoot(t *testing.T) {
	dir := t.TempDir()
	writeModule(t, dir)
	root, err := FindRoot(filepath.Join(dir, "cmd", "hello"))
	if err != nil || root != dir {
		t.Fatal(root, err)
	}
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "go.mod"), []byte("module example.com/x\n"), 0o644)
	if _, err := FindRoot(other); err == nil {
		t.Fatal("foreign module accepted")
	}
}

// TestReproducible builds the same sources in two directories with two
// different build caches (one of them cold) and compares the bytes.
func TestReproducible(t *testing.T) {
	ctx := context.Background()
	a, b := t.TempDir(), filepath.Join(t.TempDir(), "elsewhere", "deeper")
	writeModule(t, a)
	writeModule(t, b)
	t.Setenv("GOFLAGS", "-race") // must be ignored
	t.Setenv("CGO_ENABLED", "1")
	outA := filepath.Join(t.TempDir(), "a", "hello")
	ver, err := Build(ctx, a, "./cmd/hello", outA, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ver, "go1.") {
		t.Fatalf("go version %q", ver)
	}
	t.Setenv("GOCACHE", t.TempDir())
	outB := filepath.Join(t.TempDir(), "hello")
	if _, err := Build(ctx, b, "./cmd/hello", outB, nil); err != nil {
		t.Fatal(err)
	}
	ba, _ := os.ReadFile(outA)
	bb, _ := os.ReadFile(outB)
	if len(ba) == 0 || !bytes.Equal(ba, bb) {
		t.Fatalf("builds differ: %d vs %d bytes", len(ba), len(bb))
	}
	for _, dir := range []string{a, b} {
		if bytes.Contains(ba, []byte(dir)) {
			t.Fatalf("binary contains build path %s", dir)
		}
	}
	f, err := elf.Open(outA)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		t.Fatalf("machine %v", f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("binary is dynamically linked")
		}
	}
	if f.Section(".symtab") != nil {
		t.Fatal("binary not stripped")
	}
	// Output dir holds only the result.
	ents, _ := os.ReadDir(filepath.Dir(outA))
	if len(ents) != 1 {
		t.Fatalf("temp files left: %v", ents)
	}
	// A broken package reports the compiler error.
	os.WriteFile(filepath.Join(a, "cmd/hello/bad.go"), []byte("package main\nfunc x() { undefined() }\n"), 0o644)
	var log strings.Builder
	if _, err := Build(ctx, a, "./cmd/hello", outA+"2", &log); err == nil || !strings.Contains(err.Error(), "undefined") || !strings.Contains(log.String(), "undefined") {
		t.Fatalf("want compiler error, got %v", err)
	}
}
