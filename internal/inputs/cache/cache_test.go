package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func digest(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func tmpEntries(t *testing.T, c *Cache) []os.DirEntry {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(c.Root(), "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	return ents
}

func TestRootFromEnv(t *testing.T) {
	t.Setenv("TDFORGE_CACHE", "/x/y")
	if r, _ := DefaultRoot(); r != "/x/y" {
		t.Fatal(r)
	}
	t.Setenv("TDFORGE_CACHE", "")
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	if r, _ := DefaultRoot(); r != "/xdg/tdforge" {
		t.Fatal(r)
	}
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "/home/u")
	if r, _ := DefaultRoot(); r != "/home/u/.cache/tdforge" {
		t.Fatal(r)
	}
}

func TestPutLookup(t *testing.T) {
	c, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("hello cache")
	want := digest(data)
	if _, ok := c.Lookup(want); ok {
		t.Fatal("empty cache has blob")
	}
	p, err := c.Put(bytes.NewReader(data), strings.ToUpper(want))
	if err != nil {
		t.Fatal(err)
	}
	if p != filepath.Join(c.Root(), "sha256", want) {
		t.Fatalf("path %s", p)
	}
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("content %q %v", got, err)
	}
	if lp, ok := c.Lookup(want); !ok || lp != p {
		t.Fatal("lookup failed")
	}
	// Unpinned put stores under its own digest.
	p2, sha, err := c.PutDigest(strings.NewReader("other"), "", "")
	if err != nil || sha != digest([]byte("other")) || filepath.Base(p2) != sha {
		t.Fatal(p2, sha, err)
	}
	if err := c.Verify(sha); err != nil {
		t.Fatal(err)
	}
	if len(tmpEntries(t, c)) != 0 {
		t.Fatal("temp files left")
	}
}

func TestPinMismatchKeepsNothing(t *testing.T) {
	c, _ := Open(t.TempDir())
	wrong := digest([]byte("something else"))
	_, err := c.Put(strings.NewReader("actual"), wrong)
	var me *MismatchError
	if !errors.As(err, &me) {
		t.Fatalf("want MismatchError, got %v", err)
	}
	if !strings.Contains(err.Error(), wrong) || !strings.Contains(err.Error(), digest([]byte("actual"))) {
		t.Fatalf("error must show both digests: %v", err)
	}
	if _, ok := c.Lookup(digest([]byte("actual"))); ok {
		t.Fatal("mismatching content was kept")
	}
	if len(tmpEntries(t, c)) != 0 {
		t.Fatal("temp files left")
	}
	if _, err := c.Put(strings.NewReader("x"), "abc"); err == nil {
		t.Fatal("bad pin accepted")
	}
}

type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n > 3 {
		return 0, errors.New("connection reset")
	}
	f.n++
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}

func TestInterruptedReaderLeavesNothing(t *testing.T) {
	c, _ := Open(t.TempDir())
	_, err := c.Put(&failingReader{}, digest([]byte("x")))
	if err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("want reader error, got %v", err)
	}
	if len(tmpEntries(t, c)) != 0 {
		t.Fatal("temp files left")
	}
	ents, _ := os.ReadDir(filepath.Join(c.Root(), "sha256"))
	if len(ents) != 0 {
		t.Fatal("blob left after interruption")
	}
}

func TestSweepStaleTemp(t *testing.T) {
	root := t.TempDir()
	c, _ := Open(root)
	stale := filepath.Join(root, "tmp", "put-dead")
	os.WriteFile(stale, []byte("partial"), 0o600)
	old := time.Now().Add(-time.Hour)
	os.Chtimes(stale, old, old)
	young := filepath.Join(root, "tmp", "put-young")
	os.WriteFile(young, []byte("partial"), 0o600)
	if _, err := Open(root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatal("stale unlocked temp file not swept")
	}
	if _, err := os.Stat(young); err != nil {
		t.Fatal("young temp file removed")
	}
	_ = c
}

func TestConcurrentPutSameBlob(t *testing.T) {
	root := t.TempDir()
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	want := digest(data)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := Open(root) // separate handles, as separate builds would
			if err != nil {
				errs <- err
				return
			}
			// Small chunks interleave the writers.
			p, err := c.Put(io.LimitReader(&chunky{b: data}, int64(len(data))), want)
			if err != nil {
				errs <- err
				return
			}
			got, err := os.ReadFile(p)
			if err != nil {
				errs <- err
				return
			}
			if digest(got) != want {
				errs <- errors.New("reader saw a partial blob")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(filepath.Join(root, "sha256"))
	if len(ents) != 1 {
		t.Fatalf("%d blobs", len(ents))
	}
	ents, _ = os.ReadDir(filepath.Join(root, "tmp"))
	if len(ents) != 0 {
		t.Fatalf("%d temp files left", len(ents))
	}
}

type chunky struct {
	b   []byte
	off int
}

func (c *chunky) Read(p []byte) (int, error) {
	if c.off >= len(c.b) {
		return 0, io.EOF
	}
	if len(p) > 4096 {
		p = p[:4096]
	}
	n := copy(p, c.b[c.off:])
	c.off += n
	return n, nil
}

func TestDir(t *testing.T) {
	c, _ := Open(t.TempDir())
	d, err := c.Dir("partitions")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
		t.Fatal("sub-cache not created")
	}
	for _, bad := range []string{"", "../x", "sha256", "tmp", "A"} {
		if _, err := c.Dir(bad); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
}
