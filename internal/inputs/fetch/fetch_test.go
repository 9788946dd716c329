package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tdforge/tdforge/internal/testutil/netutil"
	"github.com/tdforge/tdforge/internal/testutil/testdeps"

	"github.com/hashicorp/hcl/v2"

	"github.com/tdforge/tdforge/internal/inputs/cache"
	"github.com/tdforge/tdforge/internal/manifest"
)

func digest(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func newCache(t *testing.T) *cache.Cache {
	c, err := cache.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestURL(t *testing.T) {
	body := bytes.Repeat([]byte("model weights "), 50000)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.URL.Path {
		case "/blob":
			w.Write(body)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	c := newCache(t)
	ctx := context.Background()
	src := manifest.Source{Kind: "url", URL: srv.URL + "/blob", SHA256: digest(body)}
	path, sha, err := Resolve(ctx, src, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if sha != digest(body) || !bytes.Equal(got, body) || filepath.Dir(path) != filepath.Join(c.Root(), "sha256") {
		t.Fatalf("path %s sha %s", path, sha)
	}
	// Second resolve is served from the cache.
	if _, _, err := Resolve(ctx, src, c, nil); err != nil || hits.Load() != 1 {
		t.Fatalf("hits %d err %v", hits.Load(), err)
	}

	// Pin mismatch: both digests named, nothing kept, not a network error.
	wrong := digest([]byte("other"))
	src2 := manifest.Source{Kind: "url", URL: srv.URL + "/blob", SHA256: wrong, Range: hcl.Range{Filename: "m.hcl", Start: hcl.Pos{Line: 3, Column: 5}, End: hcl.Pos{Line: 3, Column: 9}}}
	c2 := newCache(t)
	_, _, err = Resolve(ctx, src2, c2, nil)
	var me *cache.MismatchError
	if !errors.As(err, &me) || IsNetwork(err) || !strings.Contains(err.Error(), wrong) || !strings.Contains(err.Error(), digest(body)) || !strings.Contains(err.Error(), "m.hcl:3") {
		t.Fatalf("mismatch error: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(c2.Root(), "sha256")); len(ents) != 0 {
		t.Fatal("mismatching download kept")
	}

	// HTTP 404 and a refused connection are network errors.
	_, _, err = Resolve(ctx, manifest.Source{Kind: "url", URL: srv.URL + "/missing", SHA256: wrong}, c2, nil)
	if !IsNetwork(err) || !strings.Contains(err.Error(), "404") {
		t.Fatalf("404: %v", err)
	}
	_, _, err = Resolve(ctx, manifest.Source{Kind: "url", URL: "http://" + netutil.FreeAddr(t) + "/x", SHA256: wrong}, c2, nil)
	if !IsNetwork(err) {
		t.Fatalf("refused: %v", err)
	}

	// Unpinned and non-http URLs are input errors.
	for _, s := range []manifest.Source{
		{Kind: "url", URL: srv.URL + "/blob"},
		{Kind: "url", URL: "ftp://example.org/x", SHA256: wrong},
		{Kind: "dir", Path: "/tmp"},
	} {
		if _, _, err := Resolve(ctx, s, c2, nil); err == nil || IsNetwork(err) {
			t.Fatalf("%+v: %v", s, err)
		}
	}
}

func TestCancelledDownloadLeavesNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10000000")
		w.Write(make([]byte, 100000))
		w.(http.Flusher).Flush()
		cancel()
		<-r.Context().Done()
	}))
	defer srv.Close()
	c := newCache(t)
	_, _, err := Resolve(ctx, manifest.Source{Kind: "url", URL: srv.URL, SHA256: digest(nil)}, c, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	for _, d := range []string{"sha256", "tmp"} {
		if ents, _ := os.ReadDir(filepath.Join(c.Root(), d)); len(ents) != 0 {
			t.Fatalf("%s not empty after cancel", d)
		}
	}
}

func TestFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f.bin")
	os.WriteFile(p, []byte("content"), 0o644)
	ctx := context.Background()
	path, sha, err := Resolve(ctx, manifest.Source{Kind: "file", Path: p, SHA256: strings.ToUpper(digest([]byte("content")))}, nil, nil)
	if err != nil || path != p || sha != digest([]byte("content")) {
		t.Fatal(path, sha, err)
	}
	// Unpinned local file: hashed, accepted.
	if _, sha, err := Resolve(ctx, manifest.Source{Kind: "file", Path: p}, nil, nil); err != nil || sha != digest([]byte("content")) {
		t.Fatal(err)
	}
	_, _, err = Resolve(ctx, manifest.Source{Kind: "file", Path: p, SHA256: digest([]byte("x"))}, nil, nil)
	var me *cache.MismatchError
	if !errors.As(err, &me) || me.Got != digest([]byte("content")) {
		t.Fatal(err)
	}
}

func ovmfDeb(t *testing.T) string { return testdeps.OVMFDeb(t) }

func TestDebLocalFile(t *testing.T) {
	deb := ovmfDeb(t)
	const pinned = "e73d3d1a8799f7f6fc16b73501d913edcdd86237556fbff30693e747e6dc262e"
	path, sha, err := Resolve(context.Background(), manifest.Source{Kind: "deb", DebFile: deb, SHA256: pinned}, newCache(t), nil)
	if err != nil || path != deb || sha != pinned {
		t.Fatal(path, sha, err)
	}
}

// TestDebApt uses the real apt-get against the host's package index.
func TestDebApt(t *testing.T) {
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Fatalf("apt-get required: %v", err)
	}
	ctx := context.Background()
	c := newCache(t)
	// A version the index does not have: the error says to run apt-get update.
	_, _, err := Resolve(ctx, manifest.Source{Kind: "deb", Package: "hello", DebVersion: "0.0-not-a-version", SHA256: digest(nil)}, c, nil)
	if err == nil || !strings.Contains(err.Error(), "apt-get update") || IsNetwork(err) {
		t.Fatalf("missing version: %v", err)
	}
	// The real package, pinned with the digest from the package index.
	out, err := exec.Command("apt-cache", "show", "--no-all-versions", "hello").Output()
	if err != nil {
		t.Fatalf("apt-cache show hello: %v (run apt-get update)", err)
	}
	var version, sha string
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "Version: "); ok {
			version = v
		}
		if v, ok := strings.CutPrefix(l, "SHA256: "); ok {
			sha = v
		}
	}
	path, got, err := Resolve(ctx, manifest.Source{Kind: "deb", Package: "hello", DebVersion: version, Arch: "amd64", SHA256: sha}, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if got != sha || digest(b) != sha {
		t.Fatalf("digest %s want %s", got, sha)
	}
	// Wrong pin: mismatch error naming both digests.
	c2 := newCache(t)
	_, _, err = Resolve(ctx, manifest.Source{Kind: "deb", Package: "hello", DebVersion: version, SHA256: digest(nil)}, c2, nil)
	var me *cache.MismatchError
	if !errors.As(err, &me) || !strings.Contains(err.Error(), sha) || !strings.Contains(err.Error(), digest(nil)) {
		t.Fatalf("wrong pin: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(c2.Root(), "tmp")); len(ents) != 0 {
		t.Fatal("temp files left")
	}
}
