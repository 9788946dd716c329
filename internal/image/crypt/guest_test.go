package crypt_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/tdforge/tdforge/internal/image/crypt"
	"github.com/tdforge/tdforge/internal/image/fstree"
	"github.com/tdforge/tdforge/internal/image/gptdisk"
	"github.com/tdforge/tdforge/internal/testutil/guestvm"
)

// guestModules are the Debian 6.1 cloud kernel modules the guest loads, in
// dependency order: dm-verity and EROFS, then dm-crypt (the generic AES
// cipher is built in; ecb and xts are not).
var guestModules = append(guestvm.VerityModules[:len(guestvm.VerityModules):len(guestvm.VerityModules)],
	"crypto/ecb.ko", "crypto/xts.ko", "drivers/md/dm-crypt.ko")

// testPayload is a payload spanning many 4096-byte sectors (a wrong IV
// sector unit would garble every sector but the first).
func testPayload(t *testing.T, dir string) (*fstree.Tree, map[string]string) {
	rng := rand.New(rand.NewPCG(7, 8))
	big := make([]byte, 3<<20+777)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	src := filepath.Join(dir, "weights.bin")
	if err := os.WriteFile(src, big, 0o644); err != nil {
		t.Fatal(err)
	}
	small := []byte("template: {{ .Prompt }}\n")
	sum := func(d []byte) string { s := sha256.Sum256(d); return hex.EncodeToString(s[:]) }
	return &fstree.Tree{Epoch: 1700000000, Entries: []fstree.Entry{
		{Path: "blobs/weights.bin", Type: fstree.File, Mode: 0o644, Source: src, Size: int64(len(big))},
		{Path: "manifests/tiny", Type: fstree.File, Mode: 0o644, Data: small, Size: int64(len(small))},
	}}, map[string]string{"blobs/weights.bin": sum(big), "manifests/tiny": sum(small)}
}

// TestGuestDMCrypt proves the format against the kernel's own dm-crypt: it
// boots the pinned Debian kernel under QEMU TCG with a payload disk whose
// partition gptdisk encrypted, maps dm-verity over the ciphertext and
// dm-crypt (the table crypt.Table writes, with iv_large_sectors) over it,
// and checks the decrypted device equals the plaintext EROFS image byte for
// byte and mounts. Without iv_large_sectors in the table (plain64 counting
// 512-byte sectors), every sector after the first decrypts to garbage and
// the image digest differs.
func TestGuestDMCrypt(t *testing.T) {
	if testing.Short() {
		t.Skip("QEMU boot test")
	}
	k := guestvm.Kernel(t)
	dir := t.TempDir()
	tree, expect := testPayload(t, dir)
	key := bytes.Repeat([]byte{0x5a, 0xc3, 0x17, 0x88}, 16)

	// The plaintext image, from an unencrypted disk of the same payload.
	plainDisk := filepath.Join(dir, "plain.raw")
	pl, err := gptdisk.Build(context.Background(), plainDisk, []gptdisk.Payload{{Name: "model", Tree: tree}}, gptdisk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pp := pl.Partitions[0]
	f, _ := os.Open(plainDisk)
	h := sha256.New()
	io.Copy(h, io.NewSectionReader(f, int64(pp.StartLBA)*512, int64(pp.DataSize)))
	f.Close()
	imageSHA := hex.EncodeToString(h.Sum(nil))

	disk := filepath.Join(dir, "disk.raw")
	l, err := gptdisk.Build(context.Background(), disk, []gptdisk.Payload{{Name: "model", Tree: tree, Key: key}}, gptdisk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	part := l.Partitions[0]
	if part.DataSize != pp.DataSize || part.RootHash == pp.RootHash || !part.Encrypted {
		t.Fatalf("encrypted partition %+v vs plaintext %+v", part, pp)
	}
	polPayload := part.Policy("/payload/model")
	e := crypt.Params("tdforge/test/model")
	polPayload.Encryption = &e

	cfg := map[string]any{
		"disk_guid": l.DiskGUID, "payload": polPayload, "key": hex.EncodeToString(key),
		"image_sha256": imageSHA, "expect": expect,
	}
	initrd := guestvm.Build(t, "./testdata/guest", cfg, k.ModDir(), guestModules)
	out, err := guestvm.Boot(t, guestvm.Options{Kernel: k.Vmlinuz, Initrd: initrd, Disks: []guestvm.Disk{{Path: disk, ReadOnly: true}}})
	guestvm.RequirePass(t, out, err, "dm-crypt plaintext matches the EROFS image", "blobs/weights.bin ok")
}
