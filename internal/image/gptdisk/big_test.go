package gptdisk

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/image/fstree"
)

// genRandom writes n bytes of an AES-CTR keystream to p and returns their
// SHA-256 (hashed concurrently with generation).
func genRandom(t testing.TB, p string, n int64) [32]byte {
	t.Helper()
	blk, _ := aes.NewCipher(bytes.Repeat([]byte{7}, 16))
	s := cipher.NewCTR(blk, make([]byte, 16))
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	bufs := [2][]byte{make([]byte, 4<<20), make([]byte, 4<<20)}
	done := make(chan struct{}, 1)
	done <- struct{}{}
	for k := 0; n > 0; k++ {
		b := bufs[k&1][:min(int64(4<<20), n)]
		clear(b)
		s.XORKeyStream(b, b)
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
		<-done
		go func() { h.Write(b); done <- struct{}{} }()
		n -= int64(len(b))
	}
	<-done
	return [32]byte(h.Sum(nil))
}

func fileSHA256(t testing.TB, p string) [32]byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// TestLargeFilePayload builds a payload holding one file larger than 4 GiB
// (needs an extended inode with a 64-bit size) and checks it with
// fsck.erofs (extract + SHA-256 compare) and veritysetup verify.
func TestLargeFilePayload(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "big.gguf")
	size := int64(4<<30) + 100<<20 + 4095 // 4.1 GiB, ends mid-block
	start := time.Now()
	stage := func(what string) { t.Logf("%-28s %6.1fs", what, time.Since(start).Seconds()); start = time.Now() }
	want := genRandom(t, src, size)
	stage("generate 4.1 GiB source")
	tree := &fstree.Tree{Epoch: 1700000000, Entries: []fstree.Entry{
		{Path: "blobs/big.gguf", Type: fstree.File, Mode: 0o644, Source: src, Size: size},
		{Path: "manifest.json", Type: fstree.File, Mode: 0o644, Data: []byte(`{"m":1}`), Size: 7},
	}}
	cache := filepath.Join(dir, "cache")
	disk := filepath.Join(dir, "disk.raw")
	l, err := Build(context.Background(), disk, []Payload{{Name: "models", Tree: tree}}, Options{CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	stage("gptdisk.Build")
	p := l.Partitions[0]
	key, _ := hex.DecodeString(p.ContentKey)
	part := filepath.Join(cache, "parts", partKey(p.Name, [32]byte(key))+".part")
	// The disk holds exactly the cached partition.
	if !sameRange(t, disk, int64(p.StartLBA)*512, part, int64(p.SizeBytes)) {
		t.Fatal("disk partition differs from the cached partition image")
	}
	os.Remove(disk)
	stage("compare disk with cache")
	if err := veritysetupVerify(part, p); err != nil {
		t.Fatalf("veritysetup verify: %v", err)
	}
	stage("veritysetup verify")
	x := filepath.Join(dir, "x")
	if out, err := exec.Command("fsck.erofs", "--extract="+x, part).CombinedOutput(); err != nil {
		t.Fatalf("fsck.erofs: %v\n%s", err, out)
	}
	stage("fsck.erofs --extract")
	if got := fileSHA256(t, filepath.Join(x, "blobs", "big.gguf")); got != want {
		t.Fatalf("extracted file SHA-256 %x, want %x", got, want)
	}
	stage("sha256 of extracted file")
	if b, _ := os.ReadFile(filepath.Join(x, "manifest.json")); string(b) != `{"m":1}` {
		t.Fatalf("manifest.json: %q", b)
	}
}

// sameRange compares a's bytes [off, off+n) with the first n bytes of b.
func sameRange(t testing.TB, a string, off int64, b string, n int64) bool {
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	ba, bb := make([]byte, 4<<20), make([]byte, 4<<20)
	for pos := int64(0); pos < n; {
		k := min(int64(len(ba)), n-pos)
		if _, err := fa.ReadAt(ba[:k], off+pos); err != nil {
			t.Fatal(err)
		}
		if _, err := fb.ReadAt(bb[:k], pos); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ba[:k], bb[:k]) {
			return false
		}
		pos += k
	}
	return true
}
