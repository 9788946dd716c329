package crypt

import (
	"bytes"
	"crypto/aes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/xts"
)

func testKey() []byte {
	k := make([]byte, KeySize)
	for i := range k {
		k[i] = byte(i*7 + 1)
	}
	return k
}

// TestEncryptInPlace checks the parallel file encryption against a
// sector-by-sector reference (tweak = 4096-byte sector number) across chunk
// boundaries, and that it is deterministic and reversible.
func TestEncryptInPlace(t *testing.T) {
	key := testKey()
	size := 3*chunk + 5*SectorSize
	plain := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range plain {
		plain[i] = byte(rng.Uint32())
	}
	want := append([]byte(nil), plain...)
	ref, _ := xts.NewCipher(aes.NewCipher, key)
	for s := 0; s < size/SectorSize; s++ {
		b := want[s*SectorSize : (s+1)*SectorSize]
		ref.Encrypt(b, b, uint64(s))
	}
	for run := 0; run < 2; run++ {
		p := filepath.Join(t.TempDir(), "img")
		os.WriteFile(p, plain, 0o644)
		f, _ := os.OpenFile(p, os.O_RDWR, 0)
		var last int64
		if err := EncryptInPlace(f, int64(size), key, func(d int64) { last = d }); err != nil {
			t.Fatal(err)
		}
		f.Close()
		got, _ := os.ReadFile(p)
		if !bytes.Equal(got, want) {
			t.Fatalf("run %d: ciphertext differs from the sector-by-sector reference", run)
		}
		if last != int64(size) {
			t.Fatalf("progress ended at %d, want %d", last, size)
		}
		if err := Decrypt(key, got, 0); err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("decrypt: %v, round trip equal %v", err, bytes.Equal(got, plain))
		}
	}
	// A sector's ciphertext depends on its number: the same plaintext in
	// sector 0 and sector 1 encrypts differently.
	two := make([]byte, 2*SectorSize)
	Encrypt(key, two, 0)
	if bytes.Equal(two[:SectorSize], two[SectorSize:]) {
		t.Fatal("equal plaintext sectors gave equal ciphertext")
	}
}

func TestBadInput(t *testing.T) {
	f, _ := os.Create(filepath.Join(t.TempDir(), "img"))
	defer f.Close()
	if err := EncryptInPlace(f, 4096, make([]byte, 32), nil); err == nil || !strings.Contains(err.Error(), "64 bytes") {
		t.Fatalf("32-byte key: %v", err)
	}
	if err := EncryptInPlace(f, 4000, testKey(), nil); err == nil {
		t.Fatal("size not a sector multiple accepted")
	}
	if err := EncryptInPlace(f, 8192, testKey(), nil); err == nil {
		t.Fatal("short file accepted")
	}
}

func TestTable(t *testing.T) {
	e := Params("tdforge/dev/model")
	n, params, err := Table(e, testKey(), "253:0", 3*4096)
	if err != nil {
		t.Fatal(err)
	}
	want := "aes-xts-plain64 " + "0108"
	if n != 24 || !strings.HasPrefix(params, want) || !strings.HasSuffix(params, " 0 253:0 0 2 sector_size:4096 iv_large_sectors") {
		t.Fatalf("table %d %q", n, params)
	}
	e.IVLargeSectors = false
	if _, _, err := Table(e, testKey(), "253:0", 4096); err == nil {
		t.Fatal("512-byte IV sectors accepted")
	}
	if _, _, err := Table(Params("a/b/c"), testKey()[:32], "253:0", 4096); err == nil {
		t.Fatal("short key accepted")
	}
}
