// Package cache is tdforge's content-addressed download and build cache.
//
// Layout under the root ($TDFORGE_CACHE, else $XDG_CACHE_HOME/tdforge, else
// ~/.cache/tdforge):
//
//	sha256/<hex>   verified blobs, read-only, named by their SHA-256
//	tmp/           in-flight writes (removed on error; stale ones are swept)
//	<name>/        named sub-caches owned by other steps (Dir)
//
// Concurrency: a blob is streamed to a private temp file while hashing and
// then renamed into place. Rename is atomic and every writer of a key writes
// identical bytes, so parallel builds may race on the same key safely and
// readers never see a partial blob. Each temp file is flock'ed by its writer;
// opening a cache removes temp files whose lock is free (their writer died).
package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Cache is an opened cache root.
type Cache struct {
	root string
}

// DefaultRoot returns the cache root from the environment.
func DefaultRoot() (string, error) {
	if d := os.Getenv("TDFORGE_CACHE"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "tdforge"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("cache: no cache directory: set TDFORGE_CACHE (%v)", err)
	}
	return filepath.Join(home, ".cache", "tdforge"), nil
}

// Default opens the cache at DefaultRoot.
func Default() (*Cache, error) {
	root, err := DefaultRoot()
	if err != nil {
		return nil, err
	}
	return Open(root)
}

// Open creates (if needed) and opens the cache at root, sweeping temp files
// left by dead writers.
func Open(root string) (*Cache, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	c := &Cache{root: abs}
	for _, d := range []string{"sha256", "tmp"} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o755); err != nil {
			return nil, fmt.Errorf("cache: cannot create %s (set TDFORGE_CACHE to a writable directory): %w", filepath.Join(abs, d), err)
		}
	}
	c.sweep()
	return c, nil
}

// Root is the cache's absolute root directory.
func (c *Cache) Root() string { return c.root }

var subName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

// Dir returns (creating it) the named sub-cache directory, e.g. "partitions"
// or "gobuild". Names are lower-case [a-z0-9._-]; "sha256" and "tmp" are
// reserved.
func (c *Cache) Dir(name string) (string, error) {
	if !subName.MatchString(name) || name == "sha256" || name == "tmp" {
		return "", fmt.Errorf("cache: invalid sub-cache name %q (use lower-case letters, digits, '.', '_' or '-'; not sha256/tmp)", name)
	}
	d := filepath.Join(c.root, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", fmt.Errorf("cache: %w", err)
	}
	return d, nil
}

// NormalizeSHA256 lower-cases a hex SHA-256 and checks its form.
func NormalizeSHA256(s string) (string, error) {
	s = strings.ToLower(strings.TrimPrefix(strings.TrimSpace(s), "sha256:"))
	if len(s) != 64 {
		return "", fmt.Errorf("invalid sha256 %q: want 64 hex digits", s)
	}
	if _, err := hex.DecodeString(s); err != nil {
		return "", fmt.Errorf("invalid sha256 %q: want 64 hex digits", s)
	}
	return s, nil
}

// Path is where the blob with this digest lives (whether or not it exists).
func (c *Cache) Path(sha string) string { return filepath.Join(c.root, "sha256", sha) }

// Lookup returns the path of the blob with the given SHA-256 if cached.
func (c *Cache) Lookup(sha string) (string, bool) {
	s, err := NormalizeSHA256(sha)
	if err != nil {
		return "", false
	}
	p := c.Path(s)
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
		return p, true
	}
	return "", false
}

// MismatchError reports content whose digest differs from its pin.
type MismatchError struct {
	What string // what was hashed, e.g. a URL or file
	Want string
	Got  string
}

func (e *MismatchError) Error() string {
	w := e.What
	if w == "" {
		w = "content"
	}
	return fmt.Sprintf("sha256 mismatch for %s: pinned %s, got %s (update the pin if the new content is intended)", w, e.Want, e.Got)
}

// Put streams r into the cache, hashing it. When wantSHA256 is set and the
// digest differs, Put returns a *MismatchError and keeps nothing. When the
// blob is already cached under wantSHA256, r is not read. With an empty
// wantSHA256 the content is stored under its own digest (the base name of
// the returned path). The blob's digest is also returned by PutDigest.
func (c *Cache) Put(r io.Reader, wantSHA256 string) (string, error) {
	p, _, err := c.PutDigest(r, wantSHA256, "")
	return p, err
}

// PutDigest is Put that also returns the hex digest; what names the content
// in a mismatch error.
func (c *Cache) PutDigest(r io.Reader, wantSHA256, what string) (path, sha string, err error) {
	want := ""
	if wantSHA256 != "" {
		if want, err = NormalizeSHA256(wantSHA256); err != nil {
			return "", "", fmt.Errorf("cache: %w", err)
		}
		if p, ok := c.Lookup(want); ok {
			return p, want, nil
		}
	}
	tmp, err := os.CreateTemp(filepath.Join(c.root, "tmp"), "put-*")
	if err != nil {
		return "", "", fmt.Errorf("cache: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// Hold an exclusive lock while writing so a sweeper never removes a
	// live temp file.
	if err := unix.Flock(int(tmp.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return "", "", fmt.Errorf("cache: lock %s: %w", tmp.Name(), err)
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), r); err != nil {
		return "", "", err
	}
	got := hex.EncodeToString(h.Sum(nil))
	if want != "" && got != want {
		return "", "", &MismatchError{What: what, Want: want, Got: got}
	}
	if err := tmp.Chmod(0o444); err != nil {
		return "", "", fmt.Errorf("cache: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return "", "", fmt.Errorf("cache: %w", err)
	}
	dst := c.Path(got)
	// Rename while still holding the lock, then close (which unlocks).
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", "", fmt.Errorf("cache: %w", err)
	}
	committed = true
	tmp.Close()
	return dst, got, nil
}

// PutFile copies the file at path into the cache (see PutDigest).
func (c *Cache) PutFile(path, wantSHA256 string) (string, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	return c.PutDigest(f, wantSHA256, path)
}

// sweep removes temp files whose writer is gone (its flock is free).
func (c *Cache) sweep() {
	dir := filepath.Join(c.root, "tmp")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "put-") {
			continue
		}
		// Skip young files: a writer locks its file just after creating it.
		if fi, err := e.Info(); err != nil || time.Since(fi.ModTime()) < time.Minute {
			continue
		}
		p := filepath.Join(dir, e.Name())
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			os.Remove(p)
		}
		f.Close()
	}
}

// Verify re-hashes a cached blob and removes it when it is corrupt.
func (c *Cache) Verify(sha string) error {
	s, err := NormalizeSHA256(sha)
	if err != nil {
		return err
	}
	f, err := os.Open(c.Path(s))
	if err != nil {
		return err
	}
	h := sha256.New()
	_, err = io.Copy(h, f)
	f.Close()
	if err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != s {
		os.Remove(c.Path(s))
		return &MismatchError{What: "cached blob " + c.Path(s), Want: s, Got: got}
	}
	return nil
}
