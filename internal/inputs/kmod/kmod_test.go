package kmod

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/testutil/testdeps"
)

func kernelDeb(t *testing.T) string { return testdeps.Kernel61Deb(t) }

func index(names []string) map[string]int {
	m := map[string]int{}
	for i, n := range names {
		m[n] = i
	}
	return m
}

func TestResolveDebianCloudKernel(t *testing.T) {
	deb := kernelDeb(t)
	set, err := Resolve(deb, []string{"virtio_pci", "virtio_blk", "virtio_net", "dm-verity", "erofs", "qemu_fw_cfg"})
	if err != nil {
		t.Fatal(err)
	}
	if set.Release != "6.1.0-56-cloud-amd64" {
		t.Fatalf("release %q", set.Release)
	}
	names := set.Names()
	t.Logf("load order: %v", names)
	want := []string{"virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio", "virtio_pci", "virtio_blk",
		"failover", "net_failover", "virtio_net", "reed_solomon", "dm_mod", "dm_bufio", "dm_verity", "libcrc32c", "erofs", "qemu_fw_cfg"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("order\n got %v\nwant %v", names, want)
	}
	pos := index(names)
	for _, before := range [][2]string{
		{"virtio", "virtio_pci"}, {"virtio_ring", "virtio_pci"}, {"virtio_ring", "virtio"},
		{"dm_mod", "dm_verity"}, {"dm_bufio", "dm_verity"}, {"dm_mod", "dm_bufio"},
		{"failover", "net_failover"}, {"net_failover", "virtio_net"}, {"libcrc32c", "erofs"},
	} {
		if pos[before[0]] >= pos[before[1]] {
			t.Errorf("%s must load before %s", before[0], before[1])
		}
	}
	for _, m := range set.Modules {
		if !strings.HasPrefix(m.Path, "lib/modules/6.1.0-56-cloud-amd64/kernel/") || !strings.HasSuffix(m.Path, ".ko") {
			t.Errorf("path %q", m.Path)
		}
	}
	if m := set.Modules[pos["dm_verity"]]; m.Path != "lib/modules/6.1.0-56-cloud-amd64/kernel/drivers/md/dm-verity.ko" {
		t.Errorf("dm_verity path %q", m.Path)
	}

	// Extract and check against dpkg-deb's own extraction.
	dest := t.TempDir()
	entries, err := set.Entries(deb, dest)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(set.Modules)+1 {
		t.Fatalf("%d entries", len(entries))
	}
	ref := t.TempDir()
	if out, err := exec.Command("sh", "-c", "dpkg-deb --fsys-tarfile \"$0\" | tar -x -C \"$1\" ./lib/modules/6.1.0-56-cloud-amd64/kernel/drivers/md/dm-verity.ko", deb, ref).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	a, _ := os.ReadFile(filepath.Join(ref, "lib/modules/6.1.0-56-cloud-amd64/kernel/drivers/md/dm-verity.ko"))
	b, err := os.ReadFile(filepath.Join(dest, "lib/modules/6.1.0-56-cloud-amd64/kernel/drivers/md/dm-verity.ko"))
	if err != nil || len(a) == 0 || !bytes.Equal(a, b) {
		t.Fatal("extracted dm-verity.ko differs from dpkg-deb's", err)
	}
	for _, e := range entries {
		if fi, err := os.Stat(e.Source); err != nil || fi.Size() != e.Size || !strings.HasPrefix(e.Path, "lib/modules/6.1.0-56-cloud-amd64/") {
			t.Errorf("entry %+v: %v", e, err)
		}
	}
	dep, _ := os.ReadFile(filepath.Join(dest, "lib/modules/6.1.0-56-cloud-amd64/modules.dep"))
	if !strings.Contains(string(dep), "kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko kernel/lib/reed_solomon/reed_solomon.ko\n") {
		t.Fatalf("modules.dep:\n%s", dep)
	}

	// Unknown module: clear error with close matches.
	_, err = Resolve(deb, []string{"virtio-blk", "virtio_blkk"})
	if err == nil || !strings.Contains(err.Error(), `"virtio_blkk"`) || !strings.Contains(err.Error(), "did you mean virtio_blk") {
		t.Fatalf("unknown module error: %v", err)
	}
}

func TestModulesDepOrder(t *testing.T) {
	mods := map[string]*modInfo{
		"a": {name: "a", debPath: "lib/modules/r/kernel/a.ko"},
		"b": {name: "b", debPath: "lib/modules/r/kernel/b.ko"},
		"c": {name: "c", debPath: "lib/modules/r/kernel/c.ko"},
	}
	if err := applyModulesDep([]byte("kernel/a.ko: kernel/b.ko kernel/c.ko\nkernel/b.ko: kernel/c.ko\nkernel/c.ko:\n"), mods); err != nil {
		t.Fatal(err)
	}
	if strings.Join(mods["a"].depends, ",") != "c,b" {
		t.Fatalf("a deps %v", mods["a"].depends)
	}
	s := &Set{Release: "r", Modules: []Module{
		{Name: "c", Path: "lib/modules/r/kernel/c.ko"},
		{Name: "b", Path: "lib/modules/r/kernel/b.ko", Depends: []string{"c"}},
		{Name: "a", Path: "lib/modules/r/kernel/a.ko", Depends: []string{"c", "b"}},
	}}
	if got := string(s.ModulesDep()); got != "kernel/c.ko:\nkernel/b.ko: kernel/c.ko\nkernel/a.ko: kernel/b.ko kernel/c.ko\n" {
		t.Fatalf("modules.dep:\n%s", got)
	}
	if d := distance("virtio_blkk", "virtio_blk"); d != 1 {
		t.Fatal(d)
	}
}
