package gobuild

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/dirhash"
	modzip "golang.org/x/mod/zip"
)

var ollamaSpec = Ollama057

// TestBuildOllama builds Ollama v0.5.7 (about 2 minutes on 2 cores the first
// time; cached in the tdforge cache dir afterwards), checks that it is static
// and runs, and that a second Build is served from the cache.
func TestBuildOllama(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var log bytes.Buffer
	res, err := Build(ctx, ollamaSpec, "", &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, tail(log.String()))
	}
	if !res.Static {
		t.Fatalf("ollama is not static")
	}
	if ok, err := IsStatic(res.Binary); err != nil || !ok {
		t.Fatalf("IsStatic(%s) = %v, %v", res.Binary, ok, err)
	}
	out, err := exec.CommandContext(ctx, res.Binary, "--version").CombinedOutput()
	if !strings.Contains(string(out), "0.5.7") {
		t.Fatalf("ollama --version: %v: %s", err, out)
	}
	if res.GoVersion == "" || res.CCVersion == "" || res.Info.LDVersion == "" {
		t.Fatalf("toolchain versions not recorded: %+v", res.Info)
	}
	t.Logf("ollama %s sha256 %s size %d cached=%v (%s, %s)", res.Binary, res.SHA256, res.Size, res.Cached, res.GoVersion, res.CCVersion)
	again, err := Build(ctx, ollamaSpec, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Cached || again.SHA256 != res.SHA256 || again.Binary != res.Binary {
		t.Fatalf("second build not served from cache: %+v", again)
	}
}

func tail(s string) string {
	if len(s) > 4000 {
		return s[len(s)-4000:]
	}
	return s
}

const tinyMod = "example.com/tinycgo"

// fileProxy writes a file:// GOPROXY serving tinyMod@v1.0.0, a small cgo
// program that embeds __FILE__ (so a leaked build path would show up in the
// bytes), and returns the proxy URL and the module's h1 sum.
func fileProxy(t *testing.T) (string, string) {
	t.Helper()
	src := t.TempDir()
	files := map[string]string{
		"go.mod": "module " + tinyMod + "\n\ngo 1.22\n",
		"cmd/hello/main.go": `package main

/*
#include <stdio.h>
#include <stdlib.h>
static const char *where(void) { return __FILE__; }
static void greet(const char *s) { printf("hello %s from %s\n", s, where()); fflush(stdout); }
*/
import "C"

import "unsafe"

var Version = "dev"

func main() {
	s := C.CString(Version)
	defer C.free(unsafe.Pointer(s))
	C.greet(s)
}
`,
	}
	for name, body := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	proxy := t.TempDir()
	vdir := filepath.Join(proxy, tinyMod, "@v")
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		t.Fatal(err)
	}
	mv := module.Version{Path: tinyMod, Version: "v1.0.0"}
	zf, err := os.Create(filepath.Join(vdir, "v1.0.0.zip"))
	if err != nil {
		t.Fatal(err)
	}
	if err := modzip.CreateFromDir(zf, mv, src); err != nil {
		t.Fatal(err)
	}
	zf.Close()
	for name, body := range map[string]string{
		"list":        "v1.0.0\n",
		"v1.0.0.info": `{"Version":"v1.0.0","Time":"2024-01-01T00:00:00Z"}`,
		"v1.0.0.mod":  files["go.mod"],
	} {
		if err := os.WriteFile(filepath.Join(vdir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := dirhash.HashZip(filepath.Join(vdir, "v1.0.0.zip"), dirhash.Hash1)
	if err != nil {
		t.Fatal(err)
	}
	return "file://" + proxy, sum
}

// isolate points the go command at the file proxy and at fresh module and
// build caches.
func isolate(t *testing.T, proxy string) {
	t.Setenv("GOPROXY", proxy)
	t.Setenv("GONOSUMDB", tinyMod)
	t.Setenv("GOCACHE", t.TempDir())
	mc := t.TempDir()
	t.Setenv("GOMODCACHE", mc)
	t.Cleanup(func() { makeWritable(mc) })
}

// makeWritable undoes the module cache's read-only modes so that the
// temporary directory can be removed.
func makeWritable(dir string) {
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			os.Chmod(p, fi.Mode().Perm()|0o200)
		}
		return nil
	})
}

func tinySpec(sum string) Spec {
	return Spec{
		Module: tinyMod, Version: "v1.0.0", Sum: sum, Package: tinyMod + "/cmd/hello",
		CGO: true, Static: true,
		Ldflags: []string{"-X", "main.Version=1.0 pinned"},
		Smoke:   &Smoke{Want: "hello 1.0 pinned from"},
	}
}

// TestReproducibleCgo builds the same static cgo program in two isolated
// environments (different module cache, build cache and tdforge cache
// paths) and requires identical bytes.
func TestReproducibleCgo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	proxy, sum := fileProxy(t)
	var bins [][]byte
	var sums []string
	for i := 0; i < 2; i++ {
		t.Run("", func(t *testing.T) {
			isolate(t, proxy)
			var log bytes.Buffer
			res, err := Build(ctx, tinySpec(sum), t.TempDir(), &log)
			if err != nil {
				t.Fatalf("%v\n%s", err, log.String())
			}
			if res.Cached || !res.Static {
				t.Fatalf("want a fresh static build, got %+v", res)
			}
			b, err := os.ReadFile(res.Binary)
			if err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(res.Binary).Output()
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(out), os.Getenv("GOMODCACHE")) || strings.Contains(string(b), os.Getenv("GOMODCACHE")) {
				t.Fatalf("host module cache path leaked into the binary: %s", out)
			}
			bins = append(bins, b)
			sums = append(sums, res.SHA256)
		})
	}
	if len(bins) != 2 {
		t.Fatal("a build failed")
	}
	if !bytes.Equal(bins[0], bins[1]) {
		t.Fatalf("builds differ: %s vs %s", sums[0], sums[1])
	}
	t.Logf("reproducible: sha256 %s", sums[0])
}

func TestCacheHitAndRepair(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	proxy, sum := fileProxy(t)
	isolate(t, proxy)
	cache := t.TempDir()
	first, err := Build(ctx, tinySpec(sum), cache, nil)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.ReadFile(filepath.Join(filepath.Dir(first.Binary), "buildinfo.json"))
	if err != nil || !bytes.Contains(info, []byte(first.SHA256)) {
		t.Fatalf("buildinfo.json missing or without digest: %v %s", err, info)
	}
	var libc bool
	for p, h := range first.Info.StaticLibs {
		libc = libc || (filepath.Base(p) == "libc.a" && len(h) == 64)
	}
	if !libc || !bytes.Contains(info, []byte("libc.a")) {
		t.Fatalf("static build does not record libc.a: %v", first.Info.StaticLibs)
	}
	second, err := Build(ctx, tinySpec(sum), cache, nil)
	if err != nil || !second.Cached || second.SHA256 != first.SHA256 {
		t.Fatalf("want cache hit: %+v %v", second, err)
	}
	// A corrupted cache entry is rebuilt, not served.
	if err := os.WriteFile(first.Binary, []byte("corrupt"), 0o755); err != nil {
		t.Fatal(err)
	}
	third, err := Build(ctx, tinySpec(sum), cache, nil)
	if err != nil || third.Cached || third.SHA256 != first.SHA256 {
		t.Fatalf("want a rebuild with the same bytes: %+v %v", third, err)
	}
	// A different flag is a different cache entry.
	other := tinySpec(sum)
	other.Ldflags = []string{"-X", "main.Version=2"}
	other.Smoke.Want = "hello 2 from"
	fourth, err := Build(ctx, other, cache, nil)
	if err != nil || fourth.Cached || fourth.Binary == first.Binary {
		t.Fatalf("want a separate entry: %+v %v", fourth, err)
	}
}

func TestPinMismatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	proxy, sum := fileProxy(t)
	isolate(t, proxy)
	wrong := "h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	_, err := Build(ctx, tinySpec(wrong), t.TempDir(), nil)
	if err == nil || !strings.Contains(err.Error(), wrong) || !strings.Contains(err.Error(), sum) {
		t.Fatalf("want a mismatch error naming both sums, got %v", err)
	}
}

func TestTamperedModuleCache(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	proxy, sum := fileProxy(t)
	isolate(t, proxy)
	// Populate the module cache, then modify the extracted source.
	cmd := exec.CommandContext(ctx, "go", "mod", "download", tinyMod+"@v1.0.0")
	cmd.Dir = t.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	mainGo := filepath.Join(os.Getenv("GOMODCACHE"), tinyMod+"@v1.0.0", "cmd", "hello", "main.go")
	makeWritable(filepath.Dir(mainGo))
	if err := os.WriteFile(mainGo, []byte("package main\n\nfunc main() { println(\"evil\") }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Build(ctx, tinySpec(sum), t.TempDir(), nil)
	if err == nil || !strings.Contains(err.Error(), "module cache was modified") {
		t.Fatalf("want a tampered module cache error, got %v", err)
	}
}

func TestSpecErrors(t *testing.T) {
	good := Spec{Module: "example.com/m", Version: "v1.0.0", Sum: "h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", CGO: true}
	for name, tc := range map[string]struct {
		mut  func(*Spec)
		want string
	}{
		"no module":     {func(s *Spec) { s.Module = "" }, "no module path"},
		"branch":        {func(s *Spec) { s.Version = "main" }, "exact semantic version"},
		"short version": {func(s *Spec) { s.Version = "v1.0" }, "exact semantic version"},
		"gomod sum":     {func(s *Spec) { s.Sum = "abc" }, "go.sum hash"},
		"outside":       {func(s *Spec) { s.Package = "example.com/other" }, "not inside module"},
		"static no cgo": {func(s *Spec) { s.CGO = false; s.Static = true }, "static already"},
		"quoted flag":   {func(s *Spec) { s.Ldflags = []string{`-X a="b"`} }, "quotes"},
		"bad tag":       {func(s *Spec) { s.Tags = []string{"a,b"} }, "build tag"},
	} {
		s := good
		tc.mut(&s)
		_, err := Build(context.Background(), s, t.TempDir(), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want error containing %q", name, err, tc.want)
		}
	}
}

func TestArgs(t *testing.T) {
	s := ollamaSpec
	s.Package = s.Module
	got := strings.Join(s.args(), "|")
	want := "install|-trimpath|-buildvcs=false|-ldflags|-buildid= -s -w -X github.com/ollama/ollama/version.Version=0.5.7 -linkmode external -extldflags -static|-tags|netgo,osusergo|github.com/ollama/ollama@v0.5.7"
	if got != want {
		t.Fatalf("args\n got %s\nwant %s", got, want)
	}
}

func TestIsStaticDynamic(t *testing.T) {
	// The go command itself may be static; /bin/sh on Debian never is.
	ok, err := IsStatic("/bin/sh")
	if err != nil || ok {
		t.Fatalf("IsStatic(/bin/sh) = %v, %v; want false", ok, err)
	}
	if _, err := IsStatic("/etc/hostname"); err == nil {
		t.Fatal("want an error for a non-ELF file")
	}
}
