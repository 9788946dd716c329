package dmverity

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/guest/blockdev"
	"github.com/tdforge/tdforge/internal/guest/devmapper"
	"github.com/tdforge/tdforge/internal/image/fstree"
	"github.com/tdforge/tdforge/internal/image/gptdisk"
	"github.com/tdforge/tdforge/internal/tdx/policy"
	"github.com/tdforge/tdforge/internal/testutil/fakeblock"
)

func testDisk(t *testing.T, dir string) (string, *gptdisk.Layout) {
	t.Helper()
	tree := func(s string) *fstree.Tree {
		data := bytes.Repeat([]byte(s), 10000)
		return &fstree.Tree{Epoch: 1, Entries: []fstree.Entry{{Path: "f", Type: fstree.File, Mode: 0o644, Data: data, Size: int64(len(data))}}}
	}
	disk := filepath.Join(dir, "disk.raw")
	l, err := gptdisk.Build(context.Background(), disk, []gptdisk.Payload{{Name: "one", Tree: tree("1")}, {Name: "two", Tree: tree("2")}}, gptdisk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return disk, l
}

func policyPayload(p gptdisk.Partition) policy.Payload { return p.Policy("/" + p.Name) }

func TestTable(t *testing.T) {
	root := strings.Repeat("ab", 32)
	p := policy.Payload{Name: "models", DataSize: 8192 * 4096, HashOffset: 8192 * 4096, DataBlockSize: 4096, HashBlockSize: 4096, HashAlg: "sha256", RootHash: root, Salt: "0102"}
	length, params, err := Table("254:17", p)
	if err != nil {
		t.Fatal(err)
	}
	want := "1 254:17 254:17 4096 4096 8192 8193 sha256 " + root + " 0102"
	if params != want || length != 8192*8 {
		t.Fatalf("Table = %d %q\nwant %d %q", length, params, 8192*8, want)
	}
	p.Salt = ""
	if _, params, _ = Table("x", p); !strings.HasSuffix(params, " -") {
		t.Errorf("empty salt must be '-': %q", params)
	}
	for name, mut := range map[string]func(*policy.Payload){
		"alg":       func(p *policy.Payload) { p.HashAlg = "sha1" },
		"block":     func(p *policy.Payload) { p.DataBlockSize = 512 },
		"unaligned": func(p *policy.Payload) { p.HashOffset++ },
		"overlap":   func(p *policy.Payload) { p.HashOffset = 4096 },
		"root":      func(p *policy.Payload) { p.RootHash = "abc" },
		"salt":      func(p *policy.Payload) { p.Salt = "zz" },
	} {
		q := p
		mut(&q)
		if _, _, err := Table("x", q); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// fakeSys builds a sysfs/dev tree: vdb holds the payload disk and vda
// has no GPT.
func fakeSys(t *testing.T, dir, disk string) {
	t.Helper()
	devices = fakeblock.New(t)
	t.Cleanup(func() { devices = blockdev.Tree{} })
	fakeblock.AddDisk(t, devices, "vdb", disk, 1, 2)
	noGPT := filepath.Join(dir, "vda.raw")
	if err := os.WriteFile(noGPT, bytes.Repeat([]byte("x"), 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	fakeblock.AddDisk(t, devices, "vda", noGPT)
}

func TestFindPartition(t *testing.T) {
	dir := t.TempDir()
	disk, l := testDisk(t, dir)
	fakeSys(t, dir, disk)
	got, err := FindPartition(strings.ToUpper(l.DiskGUID), 2)
	if err != nil || got != filepath.Join(devices.Dev, "vdb2") {
		t.Fatalf("FindPartition = %q, %v", got, err)
	}
	if _, err := FindPartition("00000000-0000-0000-0000-000000000001", 1); err == nil || !strings.Contains(err.Error(), "no disk") {
		t.Errorf("unknown GUID: %v", err)
	}
	if _, err := FindPartition(l.DiskGUID, 3); err == nil || !strings.Contains(err.Error(), "no partition 3") {
		t.Errorf("missing index: %v", err)
	}
	// A corrupted header CRC is not trusted.
	b, _ := os.ReadFile(disk)
	b[512+40] ^= 1
	os.WriteFile(disk, b, 0o644)
	if _, err := FindPartition(l.DiskGUID, 2); err == nil || !strings.Contains(err.Error(), "refused: GPT of "+filepath.Join(devices.Dev, "vdb")+": header CRC32 mismatch") {
		t.Errorf("header with a bad CRC: %v", err)
	}
	b[512+40] ^= 1
	os.WriteFile(disk, b, 0o644)
	// Two disks with the same GUID (host cloned the disk): refuse.
	cp := filepath.Join(dir, "clone.raw")
	os.WriteFile(cp, b, 0o644)
	// A loop device (guest-made, never host-attached) is not a candidate:
	// it may map a guest file that holds a copy of the disk.
	fakeblock.AddDisk(t, devices, "loop0", cp, 1, 2)
	if got, err := FindPartition(l.DiskGUID, 2); err != nil || got != filepath.Join(devices.Dev, "vdb2") {
		t.Errorf("with a loop device holding a copy: %q, %v", got, err)
	}
	fakeblock.AddDisk(t, devices, "vdc", cp)
	if _, err := FindPartition(l.DiskGUID, 2); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Errorf("duplicate disks: %v", err)
	}
}

func TestSuperblockCheck(t *testing.T) {
	dir := t.TempDir()
	disk, l := testDisk(t, dir)
	p := l.Partitions[1]
	in, _ := os.Open(disk)
	defer in.Close()
	part := filepath.Join(dir, "part")
	out, _ := os.Create(part)
	io.Copy(out, io.NewSectionReader(in, int64(p.StartLBA)*512, int64(p.SizeBytes)))
	out.Close()
	pp := policyPayload(p)
	if err := checkSuperblock(part, pp); err != nil {
		t.Fatal(err)
	}
	other := policyPayload(l.Partitions[0])
	if err := checkSuperblock(part, other); err == nil {
		t.Error("superblock of another payload accepted")
	}
	pp.HashOffset = 0
	if err := checkSuperblock(part, pp); err == nil {
		t.Error("wrong hash offset accepted")
	}
}

// TestSetupLive activates real dm-verity devices on loop devices when the
// kernel has device-mapper, and reads the mapped device back.
func TestSetupLive(t *testing.T) {
	// The node may be missing, or exist without a driver behind it.
	if err := devmapper.Available(); err != nil {
		t.Skipf("device-mapper does not answer (%v); the QEMU guest boot test covers Setup", err)
	}
	dir := t.TempDir()
	disk, l := testDisk(t, dir)
	out, err := exec.Command("losetup", "--show", "-f", "-P", "-r", disk).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v\n%s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", loop).Run()
	p := l.Partitions[1]
	// losetup -P asks the kernel to scan the partition table; the
	// partitions appear in sysfs shortly after, not before losetup returns.
	// FindPartition skips loop devices (never a host-attached disk), so the
	// partition is looked up on the loop device itself.
	var dev string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if dev, err = (blockdev.Tree{}).PartitionNode(filepath.Base(loop), p.Index); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("tdforge-test-%d", os.Getpid())
	node, err := Setup(name, dev, policyPayload(p))
	if err != nil {
		t.Fatal(err)
	}
	defer Remove(name)
	got, err := os.ReadFile(node)
	if err != nil {
		t.Fatalf("reading %s: %v", node, err)
	}
	in, _ := os.Open(disk)
	defer in.Close()
	want := make([]byte, p.DataSize)
	in.ReadAt(want, int64(p.StartLBA)*512)
	if !bytes.Equal(got, want) {
		t.Fatal("dm-verity device content differs from the EROFS image")
	}
	if err := Remove(name); err != nil {
		t.Fatal(err)
	}
}
