package hashtree

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// randomFile writes n pseudo-random bytes (AES-CTR keystream) to p.
func randomFile(t testing.TB, p string, n int64, seed byte) {
	t.Helper()
	blk, _ := aes.NewCipher(bytes.Repeat([]byte{seed}, 16))
	s := cipher.NewCTR(blk, make([]byte, 16))
	buf := make([]byte, 1<<20)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for n > 0 {
		k := min(int64(len(buf)), n)
		clear(buf)
		s.XORKeyStream(buf[:k], buf[:k])
		if _, err := f.Write(buf[:k]); err != nil {
			t.Fatal(err)
		}
		n -= k
	}
}

func build(t *testing.T, p string, dataSize int64, salt []byte) Result {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := Build(f, dataSize, salt, f, dataSize)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	if st.Size() != dataSize+r.HashSize || r.HashSize != HashAreaSize(dataSize) {
		t.Fatalf("file %d bytes, want data %d + hash %d (HashAreaSize %d)", st.Size(), dataSize, r.HashSize, HashAreaSize(dataSize))
	}
	return r
}

func verify(p string, dataSize int64, root []byte) error {
	out, err := exec.Command("veritysetup", "verify", p, p, hex.EncodeToString(root), fmt.Sprintf("--hash-offset=%d", dataSize)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

var rootRE = regexp.MustCompile(`Root hash:\s+([0-9a-f]{64})`)

// TestMatchesVeritysetup checks sizes covering 0, 1, 2 and 3 tree levels and
// partial blocks at every level: veritysetup verify accepts our tree, and
// veritysetup format with the same salt and UUID writes the same bytes.
func TestMatchesVeritysetup(t *testing.T) {
	dir := t.TempDir()
	salt := bytes.Repeat([]byte{0xa5}, 32)
	for _, blocks := range []int64{1, 2, 128, 129, 128*128 + 5} {
		t.Run(fmt.Sprint(blocks), func(t *testing.T) {
			size := blocks * BlockSize
			ours := filepath.Join(dir, fmt.Sprintf("ours%d", blocks))
			randomFile(t, ours, size, byte(blocks))
			r := build(t, ours, size, salt)
			if err := verify(ours, size, r.RootHash); err != nil {
				t.Fatalf("veritysetup verify rejects our tree: %v", err)
			}
			theirs := filepath.Join(dir, fmt.Sprintf("theirs%d", blocks))
			randomFile(t, theirs, size, byte(blocks))
			uuid := fmt.Sprintf("%x-%x-%x-%x-%x", r.UUID[0:4], r.UUID[4:6], r.UUID[6:8], r.UUID[8:10], r.UUID[10:16])
			out, err := exec.Command("veritysetup", "format", theirs, theirs, "--hash-offset="+fmt.Sprint(size),
				"--salt="+hex.EncodeToString(salt), "--uuid="+uuid).CombinedOutput()
			if err != nil {
				t.Fatalf("veritysetup format: %v\n%s", err, out)
			}
			m := rootRE.FindSubmatch(out)
			if m == nil || string(m[1]) != hex.EncodeToString(r.RootHash) {
				t.Fatalf("root hash differs: ours %x, veritysetup:\n%s", r.RootHash, out)
			}
			a, _ := os.ReadFile(ours)
			b, _ := os.ReadFile(theirs)
			if !bytes.Equal(a, b) {
				t.Fatalf("hash area differs from veritysetup's (%d vs %d bytes)", len(a), len(b))
			}
			salt2, n, err := ParseSuperblock(a[size:])
			if err != nil || n != uint64(blocks) || !bytes.Equal(salt2, salt) {
				t.Fatalf("ParseSuperblock: %x %d %v", salt2, n, err)
			}
		})
	}
}

func TestCorruptionDetected(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "d")
	size := int64(300 * BlockSize)
	randomFile(t, p, size, 9)
	r := build(t, p, size, []byte("salt"))
	if err := verify(p, size, r.RootHash); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	b := []byte{0}
	f.ReadAt(b, 200*BlockSize+17)
	b[0] ^= 1
	f.WriteAt(b, 200*BlockSize+17)
	f.Close()
	if err := verify(p, size, r.RootHash); err == nil {
		t.Fatal("veritysetup verify accepted a flipped data byte")
	}
}

func TestDeterministicAndInputs(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "d")
	size := int64(5000 * BlockSize)
	randomFile(t, p, size, 3)
	r1 := build(t, p, size, []byte{1, 2, 3})
	a, _ := os.ReadFile(p)
	r2 := build(t, p, size, []byte{1, 2, 3})
	b, _ := os.ReadFile(p)
	if !bytes.Equal(a, b) || !bytes.Equal(r1.RootHash, r2.RootHash) {
		t.Fatal("rebuild differs")
	}
	if r3 := build(t, p, size, []byte{1, 2, 4}); bytes.Equal(r3.RootHash, r1.RootHash) {
		t.Fatal("salt does not change the root hash")
	}
	f, _ := os.Open(p)
	defer f.Close()
	if _, err := Build(f, 4095, nil, nil, 0); err == nil {
		t.Error("unaligned data size accepted")
	}
	if _, err := Build(f, BlockSize, make([]byte, 257), nil, 0); err == nil {
		t.Error("oversized salt accepted")
	}
	if HashStartBlock(8192) != 3 {
		t.Error("HashStartBlock must skip the superblock block")
	}
}

// BenchmarkBuild measures hashing throughput (MB/s) on a page-cached file.
func BenchmarkBuild(b *testing.B) {
	dir := b.TempDir()
	p := filepath.Join(dir, "d")
	size := int64(256 << 20)
	randomFile(b, p, size, 1)
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	defer f.Close()
	b.SetBytes(size)
	for i := 0; i < b.N; i++ {
		if _, err := Build(f, size, []byte("s"), f, size); err != nil {
			b.Fatal(err)
		}
	}
}
