package dmverity

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/image/fstree"
	"github.com/tdforge/tdforge/internal/image/gptdisk"
	"github.com/tdforge/tdforge/internal/tdx/policy"
	"github.com/tdforge/tdforge/internal/testutil/guestvm"
)

// TestGuestVerity boots the pinned Debian kernel under QEMU TCG with a
// payload disk from gptdisk and a Go /init that uses FindPartition and
// Setup (real device-mapper ioctls), mounts each EROFS payload through
// dm-verity and checks every file; a payload with one flipped data byte
// must fail to read. This proves the table (hash_start = hash_offset/4096
// + 1; with hash_offset/4096 the kernel fails the first read with EIO) and
// the EROFS images (flat and chunk-based files) against the kernel itself.
func TestGuestVerity(t *testing.T) {
	k := guestvm.Kernel(t)
	dir := t.TempDir()

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

	initrd := guestvm.Build(t, "./testdata/guest", cfg, k.ModDir(), guestvm.VerityModules)
	out, err := guestvm.Boot(t, guestvm.Options{Kernel: k.Vmlinuz, Initrd: initrd, Disks: []guestvm.Disk{{Path: disk, ReadOnly: true}}})
	guestvm.RequirePass(t, out, err, "apps:bin/big.bin ok", "models:w.bin corrupted read failed")
}
