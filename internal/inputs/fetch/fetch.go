// Package fetch resolves a manifest input (file, url or deb source) to a
// verified local file. Remote content is streamed into the content-addressed
// cache and checked against its sha256 pin before anything uses it.
package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/tdforge/tdforge/internal/cli/progress"
	"github.com/tdforge/tdforge/internal/inputs/cache"
	"github.com/tdforge/tdforge/internal/manifest"
)

// NetworkError is a failure to obtain remote content (connection, DNS,
// HTTP status, apt download). The CLI maps it to exit code 3.
type NetworkError struct {
	Source string // URL or package
	Err    error
}

func (e *NetworkError) Error() string { return fmt.Sprintf("fetch %s: %v", e.Source, e.Err) }
func (e *NetworkError) Unwrap() error { return e.Err }

// IsNetwork reports whether err is (or wraps) a NetworkError.
func IsNetwork(err error) bool {
	var ne *NetworkError
	return errors.As(err, &ne)
}

// Client is the HTTP client used for url sources.
var Client = &http.Client{}

// AptGet is the apt-get binary used for deb sources.
var AptGet = "apt-get"

func where(src manifest.Source) string {
	if src.Range.Filename != "" {
		return src.Range.String() + ": "
	}
	return ""
}

// Resolve returns a local path holding src's bytes and their sha256. A
// pinned file is hashed and checked in place; url and deb content is
// fetched into c (or found there by its pin). A pin mismatch returns a
// *cache.MismatchError showing both digests; network failures return a
// *NetworkError. p may be nil.
func Resolve(ctx context.Context, src manifest.Source, c *cache.Cache, p progress.Reporter) (string, string, error) {
	p = progress.OrDiscard(p)
	switch src.Kind {
	case "file":
		return resolveFile(src, src.Path, p)
	case "url":
		return resolveURL(ctx, src, c, p)
	case "deb":
		switch {
		case src.DebFile != "":
			return resolveFile(src, src.DebFile, p)
		case src.URL != "":
			return resolveURL(ctx, src, c, p)
		case src.Package != "":
			return resolveApt(ctx, src, c, p)
		}
		return "", "", fmt.Errorf("%sdeb source needs package+version, a local file or a url", where(src))
	}
	return "", "", fmt.Errorf("%ssource kind %q is not a single pinned blob (want file, url or deb)", where(src), src.Kind)
}

func pin(src manifest.Source) (string, error) {
	if src.SHA256 == "" {
		return "", nil
	}
	s, err := cache.NormalizeSHA256(src.SHA256)
	if err != nil {
		return "", fmt.Errorf("%ssha256: %w", where(src), err)
	}
	return s, nil
}

func resolveFile(src manifest.Source, path string, p progress.Reporter) (string, string, error) {
	want, err := pin(src)
	if err != nil {
		return "", "", err
	}
	if path == "" {
		return "", "", fmt.Errorf("%sfile source has no path", where(src))
	}
	f, err := os.Open(path)
	if err != nil {
		return "", "", fmt.Errorf("%s%w", where(src), err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", "", err
	}
	if !fi.Mode().IsRegular() {
		return "", "", fmt.Errorf("%s%s is not a regular file", where(src), path)
	}
	task := p.Start("hash "+filepath.Base(path), fi.Size())
	h := sha256.New()
	_, err = io.Copy(h, progress.Reader(f, task))
	task.Done()
	if err != nil {
		return "", "", fmt.Errorf("%s%s: %w", where(src), path, err)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if want != "" && got != want {
		return "", "", fmt.Errorf("%s%w", where(src), &cache.MismatchError{What: path, Want: want, Got: got})
	}
	return path, got, nil
}

func resolveURL(ctx context.Context, src manifest.Source, c *cache.Cache, p progress.Reporter) (string, string, error) {
	u, err := url.Parse(src.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", "", fmt.Errorf("%surl %q: only http(s) URLs are supported", where(src), src.URL)
	}
	want, err := pin(src)
	if err != nil {
		return "", "", err
	}
	if want == "" {
		return "", "", fmt.Errorf("%surl %s has no sha256 pin: add sha256 = \"<hex>\" (remote inputs must be pinned)", where(src), src.URL)
	}
	if c == nil {
		return "", "", errors.New("fetch: no cache")
	}
	if path, ok := c.Lookup(want); ok {
		return path, want, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src.URL, nil)
	if err != nil {
		return "", "", fmt.Errorf("%surl %q: %w", where(src), src.URL, err)
	}
	resp, err := Client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return "", "", ctx.Err()
		}
		return "", "", &NetworkError{Source: src.URL, Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", "", &NetworkError{Source: src.URL, Err: fmt.Errorf("HTTP status %s", resp.Status)}
	}
	task := p.Start("download "+src.URL, resp.ContentLength)
	path, _, err := c.PutDigest(progress.Reader(resp.Body, task), want, src.URL)
	task.Done()
	if err != nil {
		var me *cache.MismatchError
		if errors.As(err, &me) {
			return "", "", fmt.Errorf("%s%w", where(src), err)
		}
		if ctx.Err() != nil {
			return "", "", ctx.Err()
		}
		return "", "", &NetworkError{Source: src.URL, Err: err}
	}
	return path, want, nil
}

func resolveApt(ctx context.Context, src manifest.Source, c *cache.Cache, p progress.Reporter) (string, string, error) {
	want, err := pin(src)
	if err != nil {
		return "", "", err
	}
	if want == "" {
		return "", "", fmt.Errorf("%sdeb %s has no sha256 pin: add the .deb's sha256 (see apt-cache show %s)", where(src), src.Package, src.Package)
	}
	if src.DebVersion == "" {
		return "", "", fmt.Errorf("%sdeb %s has no version: pin one (apt-cache policy %s lists them)", where(src), src.Package, src.Package)
	}
	if c == nil {
		return "", "", errors.New("fetch: no cache")
	}
	if path, ok := c.Lookup(want); ok {
		return path, want, nil
	}
	spec := src.Package
	if src.Arch != "" {
		spec += ":" + src.Arch
	}
	spec += "=" + src.DebVersion
	tmp, err := os.MkdirTemp(filepath.Join(c.Root(), "tmp"), "apt-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(tmp)
	os.Chmod(tmp, 0o755) // apt's sandbox user must be able to write here
	task := p.Start("apt-get download "+spec, -1)
	cmd := exec.CommandContext(ctx, AptGet, "download", "-q", spec)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	task.Done()
	if err != nil {
		if ctx.Err() != nil {
			return "", "", ctx.Err()
		}
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "Unable to locate package") || strings.Contains(msg, "Can't find a version") ||
			(strings.Contains(msg, "Version '") && strings.Contains(msg, "was not found")) {
			return "", "", fmt.Errorf("%sdeb %s is not in the apt package index: run `apt-get update` (or check the version/arch); apt-get said: %s", where(src), spec, msg)
		}
		if _, lerr := exec.LookPath(AptGet); lerr != nil {
			return "", "", fmt.Errorf("%sdeb %s: apt-get not found; install apt or give the .deb as a file/url: %v", where(src), spec, lerr)
		}
		return "", "", &NetworkError{Source: spec, Err: fmt.Errorf("apt-get download: %v: %s", err, msg)}
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return "", "", fmt.Errorf("%sapt-get download %s produced %d .deb files, want 1", where(src), spec, len(debs))
	}
	path, _, err := c.PutFile(debs[0], want)
	if err != nil {
		var me *cache.MismatchError
		if errors.As(err, &me) {
			me.What = spec
			return "", "", fmt.Errorf("%s%w", where(src), me)
		}
		return "", "", err
	}
	return path, want, nil
}
