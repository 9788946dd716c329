package fstree

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// WriteDir writes every entry type with its mode, reads File content from
// Source or Data, and refuses content whose size is not the entry's.
func TestWriteDir(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	os.WriteFile(src, []byte("from the host"), 0o600)
	tr := &Tree{Entries: []Entry{
		{Path: "bin/tool", Type: File, Mode: 0o755, Data: []byte("#!/bin/sh\n"), Size: 10},
		{Path: "share/data", Type: File, Mode: 0o644, Source: src, Size: 13},
		{Path: "share/link", Type: Symlink, Mode: 0o777, Target: "data"},
	}}
	if err := tr.Normalize(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := tr.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "bin", "tool")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("bin/tool: %v %v", fi, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "share", "link")); err != nil || string(b) != "from the host" {
		t.Errorf("share/link -> data: %q %v", b, err)
	}
	tr.Entries = append(tr.Entries, Entry{Path: "short", Type: File, Mode: 0o644, Source: src, Size: 99})
	if err := tr.WriteDir(t.TempDir()); err == nil || !strings.Contains(err.Error(), "short: content is 13 bytes, the entry says 99") {
		t.Fatalf("size mismatch: %v", err)
	}
}
