package gptdisk

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/tdforge/tdforge/internal/image/crypt"
	"github.com/tdforge/tdforge/internal/image/fstree"
)

// An encrypted payload: the same tree and key give the same disk bytes
// (fresh caches, direct and cached builds); another key gives another root
// hash, salt, content key and GUIDs; the data area is the plaintext image
// encrypted (crypt.Decrypt recovers it) and verity covers the ciphertext;
// a cached plaintext partition is never reused for the encrypted one.
func TestEncryptedPayloadDeterministic(t *testing.T) {
	data := bytes.Repeat([]byte("weights-"), 40000)
	tree := func() *fstree.Tree {
		return &fstree.Tree{Epoch: 1, Entries: []fstree.Entry{{Path: "w.bin", Type: fstree.File, Mode: 0o644, Data: data, Size: int64(len(data))}}}
	}
	key := bytes.Repeat([]byte{7}, crypt.KeySize)
	other := bytes.Repeat([]byte{8}, crypt.KeySize)
	dir := t.TempDir()
	sharedCache := filepath.Join(dir, "cache")
	build := func(name string, k []byte, cacheDir string) ([]byte, *Layout) {
		out := filepath.Join(dir, name)
		l, err := Build(context.Background(), out, []Payload{{Name: "model", Tree: tree(), Key: k}}, Options{CacheDir: cacheDir})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(out)
		return b, l
	}
	plain, pl := build("plain.raw", nil, sharedCache)
	a, al := build("a.raw", key, sharedCache)
	b, _ := build("b.raw", key, "")
	c, _ := build("c.raw", key, filepath.Join(dir, "cache2"))
	if !bytes.Equal(a, b) || !bytes.Equal(a, c) {
		t.Fatal("same tree and key gave different disks")
	}
	o, ol := build("o.raw", other, sharedCache)
	if bytes.Equal(a, o) || al.Partitions[0].RootHash == ol.Partitions[0].RootHash || al.Partitions[0].Salt == ol.Partitions[0].Salt ||
		al.Partitions[0].ContentKey == ol.Partitions[0].ContentKey || al.DiskGUID == ol.DiskGUID {
		t.Fatal("another key gave the same disk, root hash, salt, content key or GUID")
	}
	pp, ap := pl.Partitions[0], al.Partitions[0]
	if !ap.Encrypted || pp.Encrypted || ap.RootHash == pp.RootHash || ap.ContentKey == pp.ContentKey || ap.DataSize != pp.DataSize {
		t.Fatalf("encrypted %+v vs plaintext %+v", ap, pp)
	}
	start := int(ap.StartLBA * sector)
	img := bytes.Clone(a[start : start+int(ap.DataSize)])
	want := plain[int(pp.StartLBA*sector) : int(pp.StartLBA*sector)+int(pp.DataSize)]
	if bytes.Equal(img, want) || bytes.Contains(a, data[:4096]) {
		t.Fatal("the encrypted disk holds the plaintext")
	}
	if err := crypt.Decrypt(key, img, 0); err != nil || !bytes.Equal(img, want) {
		t.Fatalf("decrypting the data area does not give the plaintext image: %v", err)
	}
	// Verity covers the ciphertext: the hash area differs from the
	// plaintext build's.
	if bytes.Equal(a[start+int(ap.HashOffset):start+int(ap.SizeBytes)], plain[int(pp.StartLBA*sector)+int(pp.HashOffset):int(pp.StartLBA*sector)+int(pp.SizeBytes)]) {
		t.Fatal("hash area equals the plaintext build's")
	}
	if _, err := Build(context.Background(), filepath.Join(dir, "bad.raw"), []Payload{{Name: "model", Tree: tree(), Key: key[:32]}}, Options{}); err == nil {
		t.Fatal("32-byte key accepted")
	}
}
