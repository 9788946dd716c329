// Package debpkg reads Debian binary packages (.deb): an ar archive whose
// data.tar member (uncompressed, .gz, .xz or .zst) holds the files. Paths are
// reported cleaned and relative ("usr/bin/x", without "./").
package debpkg

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Entry describes one file in the data archive.
type Entry struct {
	Path     string // clean, relative, no "./"
	Type     byte   // tar.TypeReg, TypeDir, TypeSymlink, TypeLink, ...
	Mode     fs.FileMode
	Size     int64
	Linkname string // symlink target as stored, or (hardlink) the cleaned target path
}

// ErrNotFound is returned (wrapped) when a path is not in the package.
var ErrNotFound = errors.New("not in package")

// cleanPath turns "./usr/x/" into "usr/x"; the root becomes "".
func cleanPath(p string) string {
	p = path.Clean("/" + p)
	return strings.TrimPrefix(p, "/")
}

// Walk calls fn for each entry of deb's data archive in archive order; r
// reads the entry's content (regular files only).
func Walk(deb string, fn func(e Entry, r io.Reader) error) error {
	f, err := os.Open(deb)
	if err != nil {
		return err
	}
	defer f.Close()
	data, name, err := dataMember(bufio.NewReaderSize(f, 1<<16))
	if err != nil {
		return fmt.Errorf("%s: %w", deb, err)
	}
	dr, closeFn, err := decompressor(data, name)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", deb, name, err)
	}
	defer closeFn()
	tr := tar.NewReader(dr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %s: %w", deb, name, err)
		}
		e := Entry{Path: cleanPath(h.Name), Type: h.Typeflag, Mode: fs.FileMode(h.Mode) & fs.ModePerm, Size: h.Size, Linkname: h.Linkname}
		if e.Path == "" {
			continue
		}
		switch h.Typeflag {
		case tar.TypeLink:
			e.Linkname = cleanPath(h.Linkname)
			e.Size = 0
		case tar.TypeReg, tar.TypeChar, tar.TypeBlock, tar.TypeFifo, tar.TypeDir, tar.TypeSymlink:
		default:
			if h.Typeflag == '\x00' { // old-style regular file
				e.Type = tar.TypeReg
			}
		}
		if err := fn(e, tr); err != nil {
			return err
		}
	}
}

// dataMember positions r at the data.tar* member of the ar archive.
func dataMember(r io.Reader) (io.Reader, string, error) {
	magic := make([]byte, 8)
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != "!<arch>\n" {
		return nil, "", errors.New("not a Debian package (missing ar magic)")
	}
	hdr := make([]byte, 60)
	for {
		if _, err := io.ReadFull(r, hdr); err != nil {
			if err == io.EOF {
				return nil, "", errors.New("no data.tar member in package")
			}
			return nil, "", fmt.Errorf("truncated ar archive: %w", err)
		}
		if string(hdr[58:60]) != "`\n" {
			return nil, "", errors.New("corrupt ar member header")
		}
		name := strings.TrimSuffix(strings.TrimSpace(string(hdr[0:16])), "/")
		size, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || size < 0 {
			return nil, "", fmt.Errorf("corrupt ar member size for %q", name)
		}
		if strings.HasPrefix(name, "data.tar") {
			return io.LimitReader(r, size), name, nil
		}
		if _, err := io.CopyN(io.Discard, r, size+size%2); err != nil {
			return nil, "", fmt.Errorf("truncated ar member %q: %w", name, err)
		}
	}
}

func decompressor(r io.Reader, name string) (io.Reader, func(), error) {
	switch path.Ext(name) {
	case ".tar":
		return r, func() {}, nil
	case ".gz":
		z, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, err
		}
		return z, func() { z.Close() }, nil
	case ".xz":
		z, err := xz.NewReader(r)
		if err != nil {
			return nil, nil, err
		}
		return z, func() {}, nil
	case ".zst":
		z, err := zstd.NewReader(r)
		if err != nil {
			return nil, nil, err
		}
		return z, z.Close, nil
	}
	return nil, nil, fmt.Errorf("unsupported compression (want data.tar, .gz, .xz or .zst)")
}

// List returns every entry of the package's data archive.
func List(deb string) ([]Entry, error) {
	var out []Entry
	err := Walk(deb, func(e Entry, _ io.Reader) error {
		out = append(out, e)
		return nil
	})
	return out, err
}

// resolve follows symlinks and hardlinks of p within the listing to a
// regular file.
func resolve(entries map[string]Entry, p string) (Entry, error) {
	orig := p
	for hops := 0; hops < 40; hops++ {
		e, ok := entries[p]
		if !ok {
			np, ok := viaParentLink(entries, p)
			if !ok {
				return Entry{}, fmt.Errorf("%s: %w", orig, ErrNotFound)
			}
			p = np
			continue
		}
		switch e.Type {
		case tar.TypeSymlink:
			p = cleanPath(linkBase(p, e.Linkname))
		case tar.TypeLink:
			p = e.Linkname
		case tar.TypeReg:
			return e, nil
		default:
			return Entry{}, fmt.Errorf("%s is not a regular file in the package", orig)
		}
	}
	return Entry{}, fmt.Errorf("%s: too many levels of links", orig)
}

// viaParentLink rewrites p when one of its parent directories is a symlink.
func viaParentLink(entries map[string]Entry, p string) (string, bool) {
	dir, rest := p, ""
	for dir != "." && dir != "" {
		rest = path.Join(path.Base(dir), rest)
		dir = path.Dir(dir)
		if d, ok := entries[dir]; ok && d.Type == tar.TypeSymlink {
			return cleanPath(path.Join(linkBase(dir, d.Linkname), rest)), true
		}
	}
	return "", false
}

// linkBase resolves a symlink target relative to the link's directory.
func linkBase(link, target string) string {
	if strings.HasPrefix(target, "/") {
		return target
	}
	return path.Join(path.Dir(link), target)
}

// copyRegular copies the first entry at path in deb to w when it is a
// regular file; found is false when it is not one or deb has no such path.
func copyRegular(deb, path string, w io.Writer) (n int64, found bool, err error) {
	err = Walk(deb, func(e Entry, r io.Reader) error {
		if e.Path != path {
			return nil
		}
		if e.Type != tar.TypeReg {
			return errStop
		}
		var cerr error
		n, cerr = io.Copy(w, r)
		if cerr != nil {
			return cerr
		}
		found = true
		return errStop
	})
	if err != nil && err != errStop {
		return 0, false, err
	}
	return n, found, nil
}

// ExtractFile writes the content of the regular file pathInside (following
// symlinks and hardlinks inside the package) to w and returns its size.
func ExtractFile(deb, pathInside string, w io.Writer) (int64, error) {
	want := cleanPath(pathInside)
	// Fast path: one pass when the path is a regular file.
	n, found, err := copyRegular(deb, want, w)
	if err != nil || found {
		return n, err
	}
	// Slow path: resolve links from a full listing, then extract the target.
	entries, err := List(deb)
	if err != nil {
		return 0, err
	}
	m := make(map[string]Entry, len(entries))
	for _, e := range entries {
		m[e.Path] = e
	}
	e, err := resolve(m, want)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", deb, err)
	}
	n, found, err = copyRegular(deb, e.Path, w)
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("%s: %s: %w", deb, want, ErrNotFound)
	}
	return n, nil
}

var errStop = errors.New("stop")

// ExtractTree extracts every entry under prefix (a directory inside the
// package, "" for all) into destDir, with prefix stripped: "usr/share/x" with
// prefix "usr/share" lands at destDir/x. Regular files keep their permission
// bits, symlinks are recreated as-is, hardlinks are linked to their target
// (which must be under prefix), device nodes and FIFOs are skipped. Nothing is
// ever written outside destDir or through a symlink. It returns the number of
// entries written.
func ExtractTree(deb, prefix, destDir string) (int, error) {
	prefix = cleanPath(prefix)
	if err := os.MkdirAll(destDir, 0o755); err != nil {
		return 0, err
	}
	links := map[string]bool{} // relative paths of symlinks written
	count := 0
	rel := func(p string) (string, bool) {
		if prefix == "" {
			return p, true
		}
		if p == prefix {
			return "", true
		}
		if strings.HasPrefix(p, prefix+"/") {
			return p[len(prefix)+1:], true
		}
		return "", false
	}
	err := Walk(deb, func(e Entry, r io.Reader) error {
		rp, ok := rel(e.Path)
		if !ok {
			return nil
		}
		if rp == "" {
			if e.Type == tar.TypeSymlink {
				return fmt.Errorf("%s: prefix %s is a symlink to %s; use the target directory", deb, prefix, e.Linkname)
			}
			return nil
		}
		for d := path.Dir(rp); d != "."; d = path.Dir(d) {
			if links[d] {
				return fmt.Errorf("%s: %s lies under symlink %s; refusing to write through it", deb, e.Path, d)
			}
		}
		dst := filepath.Join(destDir, filepath.FromSlash(rp))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		switch e.Type {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
			if err := os.Chmod(dst, e.Mode|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			os.Remove(dst)
			f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, e.Mode|0o600)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, r); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			if err := os.Chmod(dst, e.Mode); err != nil {
				return err
			}
		case tar.TypeSymlink:
			os.Remove(dst)
			if err := os.Symlink(e.Linkname, dst); err != nil {
				return err
			}
			links[rp] = true
		case tar.TypeLink:
			trp, ok := rel(e.Linkname)
			if !ok || trp == "" {
				return fmt.Errorf("%s: hardlink %s -> %s points outside %q", deb, e.Path, e.Linkname, prefix)
			}
			os.Remove(dst)
			if err := os.Link(filepath.Join(destDir, filepath.FromSlash(trp)), dst); err != nil {
				return err
			}
		default:
			return nil
		}
		count++
		return nil
	})
	return count, err
}

// ReadFile returns a (small) file's content; see ExtractFile.
func ReadFile(deb, pathInside string) ([]byte, error) {
	var b bytes.Buffer
	if _, err := ExtractFile(deb, pathInside, &b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
