package dmverity

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/testutil/testdeps"

	"github.com/tdforge/tdforge/internal/image/fstree"
	"github.com/tdforge/tdforge/internal/image/gptdisk"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// guestModules are the Debian cloud kernel modules the guest loads, in
// dependency order.
var guestModules = []string{
	"drivers/virtio/virtio_ring.ko", "drivers/virtio/virtio.ko",
	"drivers/virtio/virtio_pci_modern_dev.ko", "drivers/virtio/virtio_pci_legacy_dev.ko",
	"drivers/virtio/virtio_pci.ko", "drivers/block/virtio_blk.ko",
	"drivers/md/dm-mod.ko", "drivers/md/dm-bufio.ko", "lib/reed_solomon/reed_solomon.ko",
	"drivers/md/dm-verity.ko", "lib/libcrc32c.ko", "fs/erofs/erofs.ko",
}

// TestGuestVerity boots the pinned Debian kernel under QEMU TCG with a
// payload disk from gptdisk and a Go /init that uses FindPartition and
// Setup (real device-mapper ioctls), mounts each EROFS payload through
// dm-verity and checks every file; a payload with one flipped data byte
// must fail to read. This proves the table (hash_start = hash_offset/4096
// + 1; with hash_offset/4096 the kernel fails the first read with EIO) and
// the EROFS images (flat and chunk-based files) against the kernel itself.
func TestGuestVerity(t *testing.T) {
	deb := testdeps.Kernel61Deb(t)
	dir := t.TempDir()
	kroot := filepath.Join(dir, "k")
	if out, err := exec.Command("dpkg-deb", "-x", deb, kroot).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}
	vmlinuz, _ := filepath.Glob(filepath.Join(kroot, "boot", "vmlinuz-*"))
	moddirs, _ := filepath.Glob(filepath.Join(kroot, "lib", "modules", "*", "kernel"))
	if len(vmlinuz) != 1 || len(moddirs) != 1 {
		t.Fatalf("unexpected kernel package layout: %v %v", vmlinuz, moddirs)
	}

	// Payloads: "apps" has nested dirs, a symlink and a chunk-based file
	// (> 16 MiB); "models" gets one data byte flipped after the build.
	rng := rand.New(rand.NewPCG(5, 6))
	big := make([]byte, 16<<20+12345)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	src := filepath.Join(dir, "big.bin")
	os.WriteFile(src, big, 0o644)
	weights := bytes.Repeat([]byte("weights!"), 100000)
	payloads := []gptdisk.Payload{
		{Name: "apps", Tree: &fstree.Tree{Epoch: 1700000000, Entries: []fstree.Entry{
			{Path: "bin/big.bin", Type: fstree.File, Mode: 0o755, Source: src, Size: int64(len(big))},
			{Path: "etc/deep/conf", Type: fstree.File, Mode: 0o644, Data: []byte("k=v\n"), Size: 4},
			{Path: "lib/link", Type: fstree.Symlink, Target: "../etc/deep/conf"},
		}}},
		{Name: "models", Tree: &fstree.Tree{Epoch: 1700000000, Entries: []fstree.Entry{
			{Path: "w.bin", Type: fstree.File, Mode: 0o644, Data: weights, Size: int64(len(weights))},
		}}},
	}
	// A directory spanning several dirent blocks exercises the kernel's
	// binary search across blocks; "-dash" sorts before ".".
	apps := payloads[0].Tree
	for i := 0; i < 700; i++ {
		name := fmt.Sprintf("many/file-with-a-longish-name-%04d", i)
		apps.Entries = append(apps.Entries, fstree.Entry{Path: name, Type: fstree.File, Mode: 0o644, Data: []byte(name), Size: int64(len(name))})
	}
	apps.Entries = append(apps.Entries, fstree.Entry{Path: "many/-dash", Type: fstree.File, Mode: 0o644, Data: []byte("d"), Size: 1})
	disk := filepath.Join(dir, "disk.raw")
	l, err := gptdisk.Build(context.Background(), disk, payloads, gptdisk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Flip a byte in the last data block of the models image (file data).
	mp := l.Partitions[1]
	f, _ := os.OpenFile(disk, os.O_RDWR, 0)
	off := int64(mp.StartLBA)*512 + int64(mp.DataSize) - 4096 + 100
	b := []byte{0}
	f.ReadAt(b, off)
	b[0] ^= 0xff
	f.WriteAt(b, off)
	f.Close()

	sum := func(d []byte) string { s := sha256.Sum256(d); return hex.EncodeToString(s[:]) }
	cfg := map[string]any{
		"disk_guid": strings.ToUpper(l.DiskGUID), // GUIDs compare case-insensitively
		"expect": map[string]map[string]string{
			"apps": {"bin/big.bin": sum(big), "etc/deep/conf": sum([]byte("k=v\n")), "lib/link": sum([]byte("k=v\n")),
				"many/file-with-a-longish-name-0000": sum([]byte("many/file-with-a-longish-name-0000")),
				"many/file-with-a-longish-name-0377": sum([]byte("many/file-with-a-longish-name-0377")),
				"many/file-with-a-longish-name-0699": sum([]byte("many/file-with-a-longish-name-0699")),
				"many/-dash":                         sum([]byte("d"))},
		},
		"corrupt": map[string]string{"models": "w.bin"},
	}
	var pls []policy.Payload
	for _, p := range l.Partitions {
		pls = append(pls, policyPayload(p))
	}
	cfg["payloads"] = pls

	// Initramfs: /init (the guest program), modules, /config.json.
	ir := filepath.Join(dir, "initramfs")
	os.MkdirAll(filepath.Join(ir, "lib", "modules"), 0o755)
	build := exec.Command("go", "build", "-o", filepath.Join(ir, "init"), "./testdata/guest")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building guest init: %v\n%s", err, out)
	}
	var mods []string
	for _, m := range guestModules {
		data, err := os.ReadFile(filepath.Join(moddirs[0], m))
		if err != nil {
			t.Fatal(err)
		}
		dst := "/lib/modules/" + filepath.Base(m)
		os.WriteFile(filepath.Join(ir, dst), data, 0o644)
		mods = append(mods, dst)
	}
	cfg["modules"] = mods
	js, _ := json.Marshal(cfg)
	os.WriteFile(filepath.Join(ir, "config.json"), js, 0o644)
	cpio := exec.Command("sh", "-c", "find . | LC_ALL=C sort | cpio --quiet -o -H newc > ../initrd")
	cpio.Dir = ir
	if out, err := cpio.CombinedOutput(); err != nil {
		t.Fatalf("cpio: %v\n%s", err, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	q := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "tcg", "-cpu", "qemu64", "-m", "512", "-smp", "1",
		"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
		"-kernel", vmlinuz[0], "-initrd", filepath.Join(dir, "initrd"),
		"-append", "console=ttyS0 panic=-1 loglevel=3",
		"-drive", "file="+disk+",format=raw,if=virtio,readonly=on")
	out, err := q.CombinedOutput()
	t.Logf("guest ran %.1fs", time.Since(start).Seconds())
	s := string(out)
	if !strings.Contains(s, "GUEST-RESULT: PASS") {
		t.Fatalf("guest did not pass (qemu err %v):\n%s", err, s)
	}
	for _, want := range []string{"apps:bin/big.bin ok", "models:w.bin corrupted read failed"} {
		if !strings.Contains(s, want) {
			t.Errorf("guest output lacks %q:\n%s", want, s)
		}
	}
}
