package blockdev_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdforge/tdforge/internal/guest/blockdev"
	"github.com/tdforge/tdforge/internal/testutil/fakeblock"
)

// TestDisks: guest-made devices (device-mapper, RAM, zram, loop) are not
// listed; the sector size comes from sysfs; a disk without a node or a
// sysfs device number is left out.
func TestDisks(t *testing.T) {
	tr := fakeblock.New(t)
	img := filepath.Join(t.TempDir(), "img")
	os.WriteFile(img, nil, 0o644)
	for _, name := range []string{"vda", "nvme0n1", "dm-0", "ram0", "zram0", "loop0"} {
		fakeblock.AddDisk(t, tr, name, img)
	}
	os.WriteFile(filepath.Join(tr.SysBlock, "nvme0n1", "queue", "logical_block_size"), []byte("4096\n"), 0o644)
	os.MkdirAll(filepath.Join(tr.SysBlock, "sr0"), 0o755) // no node, no dev file
	got, err := tr.Disks()
	if err != nil {
		t.Fatal(err)
	}
	want := []blockdev.Disk{
		{Name: "nvme0n1", Node: filepath.Join(tr.Dev, "nvme0n1"), SectorSize: 4096},
		{Name: "vda", Node: filepath.Join(tr.Dev, "vda"), SectorSize: 512},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("Disks = %+v\nwant %+v", got, want)
	}
	if _, err := (blockdev.Tree{SysBlock: filepath.Join(tr.SysBlock, "none")}).Disks(); err == nil {
		t.Error("a missing /sys/block was accepted")
	}
}

// TestPartitionNode: a partition is found by its sysfs "partition"
// number, not its name; a missing one is a *NoPartitionError.
func TestPartitionNode(t *testing.T) {
	tr := fakeblock.New(t)
	fakeblock.AddDisk(t, tr, "nvme0n1", "/nonexistent")
	for name, n := range map[string]string{"nvme0n1p1": "1", "nvme0n1p2": "2"} {
		os.MkdirAll(filepath.Join(tr.SysBlock, "nvme0n1", name), 0o755)
		os.WriteFile(filepath.Join(tr.SysBlock, "nvme0n1", name, "partition"), []byte(n+"\n"), 0o644)
		os.WriteFile(filepath.Join(tr.Dev, name), nil, 0o644)
	}
	got, err := tr.PartitionNode("nvme0n1", 2)
	if want := filepath.Join(tr.Dev, "nvme0n1p2"); err != nil || got != want {
		t.Fatalf("PartitionNode = %q, %v; want %s", got, err, want)
	}
	_, err = tr.PartitionNode("nvme0n1", 3)
	var np *blockdev.NoPartitionError
	if !errors.As(err, &np) || np.Index != 3 || err.Error() != "disk nvme0n1 has no partition 3 in "+tr.SysBlock {
		t.Errorf("missing partition: %v", err)
	}
}

// TestNodeCreated: a node missing from /dev is made from sysfs's device
// number (needs mknod: root).
func TestNodeCreated(t *testing.T) {
	tr := fakeblock.New(t)
	os.MkdirAll(filepath.Join(tr.SysBlock, "vdb", "vdb1"), 0o755)
	os.WriteFile(filepath.Join(tr.SysBlock, "vdb", "vdb1", "partition"), []byte("1\n"), 0o644)
	os.WriteFile(filepath.Join(tr.SysBlock, "vdb", "vdb1", "dev"), []byte("254:17\n"), 0o644)
	node, err := tr.PartitionNode("vdb", 1)
	if errors.Is(err, unix.EPERM) {
		t.Skip("mknod needs root")
	}
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(node, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != unix.Mkdev(254, 17) {
		t.Errorf("%s: mode %o rdev %x; want a block device 254:17", node, st.Mode, st.Rdev)
	}
}
