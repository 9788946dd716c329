// Package fstree describes a normalized file tree to be written into a
// read-only payload filesystem or an archive. Entries reference host files by
// path so that multi-GB content is streamed, never loaded whole.
package fstree

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Type is an entry type.
type Type int

const (
	Dir Type = iota
	File
	Symlink
)

// Entry is one node. Owner is always 0:0 and times are the tree's epoch;
// only the permission bits of Mode are kept.
type Entry struct {
	Path   string // clean, slash-separated, relative, no leading "/"; "" is never used (root is implicit)
	Type   Type
	Mode   fs.FileMode // permission bits only (0755, 0644, ...)
	Source string      // File: host path to read content from (or "" with Data)
	Data   []byte      // File: inline content when Source is ""
	Size   int64       // File: content size in bytes
	Target string      // Symlink: link target
}

// Tree is a set of entries plus the timestamp every entry gets.
type Tree struct {
	Epoch   int64 // SOURCE_DATE_EPOCH applied to every inode
	Entries []Entry
}

// Normalize validates entries, adds missing parent directories (0755) and
// sorts entries by path bytewise. It is idempotent.
func (t *Tree) Normalize() error {
	seen := map[string]int{}
	var out []Entry
	for _, e := range t.Entries {
		p := path.Clean(strings.TrimPrefix(e.Path, "/"))
		if p == "." || p == "" || strings.HasPrefix(p, "../") || p == ".." {
			return fmt.Errorf("fstree: invalid path %q", e.Path)
		}
		e.Path = p
		e.Mode &= fs.ModePerm
		switch e.Type {
		case File:
			if e.Source == "" && int64(len(e.Data)) != e.Size {
				return fmt.Errorf("fstree: %s: inline size %d != %d", p, len(e.Data), e.Size)
			}
		case Dir, Symlink:
		default:
			return fmt.Errorf("fstree: %s: unknown type %d", p, e.Type)
		}
		if i, ok := seen[p]; ok {
			if out[i].Type == Dir && e.Type == Dir {
				continue
			}
			return fmt.Errorf("fstree: duplicate path %q", p)
		}
		seen[p] = len(out)
		out = append(out, e)
	}
	for i := 0; i < len(out); i++ {
		for d := path.Dir(out[i].Path); d != "."; d = path.Dir(d) {
			if j, ok := seen[d]; ok {
				if out[j].Type != Dir {
					return fmt.Errorf("fstree: %s is inside non-directory %s", out[i].Path, d)
				}
				continue
			}
			seen[d] = len(out)
			out = append(out, Entry{Path: d, Type: Dir, Mode: 0o755})
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Path < out[b].Path })
	t.Entries = out
	return nil
}

// WriteDir writes t's entries as files under dir (which may exist): the
// inverse of a filesystem image, for checking one against its tree. Times
// and owners are left as the host sets them. A File whose content is not
// Size bytes is an error.
func (t *Tree) WriteDir(dir string) error {
	for _, e := range t.Entries {
		p := filepath.Join(dir, filepath.FromSlash(e.Path))
		switch e.Type {
		case Dir:
			if err := os.MkdirAll(p, e.Mode); err != nil {
				return err
			}
		case File:
			data := e.Data
			if e.Source != "" {
				var err error
				if data, err = os.ReadFile(e.Source); err != nil {
					return err
				}
			}
			if int64(len(data)) != e.Size {
				return fmt.Errorf("fstree: %s: content is %d bytes, the entry says %d", e.Path, len(data), e.Size)
			}
			if err := os.WriteFile(p, data, e.Mode); err != nil {
				return err
			}
		case Symlink:
			if err := os.Symlink(e.Target, p); err != nil {
				return err
			}
		default:
			return fmt.Errorf("fstree: %s: unknown type %d", e.Path, e.Type)
		}
	}
	return nil
}
