// Package fakeblock builds a fake /sys/block and /dev under a test's temp
// directory, for testing code that finds disks through
// internal/guest/blockdev without root or real devices: a disk's node is
// a symbolic link to a disk image file.
package fakeblock

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/tdforge/tdforge/internal/guest/blockdev"
)

// New returns an empty tree under a new temp directory of t.
func New(t testing.TB) blockdev.Tree {
	t.Helper()
	dir := t.TempDir()
	tr := blockdev.Tree{SysBlock: filepath.Join(dir, "sys", "block"), Dev: filepath.Join(dir, "dev")}
	for _, d := range []string{tr.SysBlock, tr.Dev} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return tr
}

// AddDisk lists disk name (512-byte sectors) in tr's sysfs with the
// given partition numbers, and makes its node a link to image. Each
// partition gets a sysfs entry <name><n> and an empty node.
func AddDisk(t testing.TB, tr blockdev.Tree, name, image string, parts ...int) {
	t.Helper()
	write := func(p, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sys := filepath.Join(tr.SysBlock, name)
	write(filepath.Join(sys, "dev"), "254:0\n")
	write(filepath.Join(sys, "queue", "logical_block_size"), "512\n")
	for _, n := range parts {
		part := fmt.Sprintf("%s%d", name, n)
		write(filepath.Join(sys, part, "partition"), fmt.Sprintf("%d\n", n))
		write(filepath.Join(tr.Dev, part), "")
	}
	if err := os.Symlink(image, filepath.Join(tr.Dev, name)); err != nil {
		t.Fatal(err)
	}
}
