package crypt

import (
	"bytes"
	"crypto/aes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/xts"

	"github.com/tdforge/tdforge/internal/inputs/secret"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

func testKey() []byte {
	k := make([]byte, KeySize)
	for i := range k {
		k[i] = byte(i*7 + 1)
	}
	return k
}

// TestEncrypter checks the encrypt-as-read image against a sector-by-sector
// reference (tweak = 4096-byte sector number) with chunks read in parallel
// in any order, as the hash tree builder does, and that it is
// deterministic, reversible and refuses a sector read twice.
func TestEncrypter(t *testing.T) {
	key := testKey()
	const chunk = 64 * SectorSize
	size := 7*chunk + 5*SectorSize
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
		e, err := NewEncrypter(f, int64(size), key)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for _, off := range rng.Perm(size/chunk + 1) {
			wg.Add(1)
			go func(off int) {
				defer wg.Done()
				b := make([]byte, min(chunk, size-off*chunk))
				if _, err := e.ReadAt(b, int64(off*chunk)); err != nil {
					t.Error(err)
				} else if !bytes.Equal(b, want[off*chunk:off*chunk+len(b)]) {
					t.Errorf("chunk %d: ciphertext differs from the reference", off)
				}
			}(off)
		}
		wg.Wait()
		if err := e.Finish(); err != nil {
			t.Fatal(err)
		}
		if _, err := e.ReadAt(make([]byte, SectorSize), 2*SectorSize); err == nil || !strings.Contains(err.Error(), "read twice") {
			t.Fatalf("second read of a sector: %v", err)
		}
		f.Close()
		got, _ := os.ReadFile(p)
		if !bytes.Equal(got, want) {
			t.Fatalf("run %d: file differs from the reference ciphertext", run)
		}
		if err := Decrypt(key, got, 0); err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("decrypt: %v, round trip equal %v", err, bytes.Equal(got, plain))
		}
	}
	// A sector's ciphertext depends on its number.
	two := make([]byte, 2*SectorSize)
	Encrypt(key, two, 0)
	if bytes.Equal(two[:SectorSize], two[SectorSize:]) {
		t.Fatal("equal plaintext sectors gave equal ciphertext")
	}
}

func TestBadInput(t *testing.T) {
	f, _ := os.Create(filepath.Join(t.TempDir(), "img"))
	defer f.Close()
	if _, err := NewEncrypter(f, 4096, make([]byte, 32)); err == nil || !strings.Contains(err.Error(), "64 bytes") {
		t.Fatalf("32-byte key: %v", err)
	}
	if _, err := NewEncrypter(f, 4000, testKey()); err == nil {
		t.Fatal("size not a sector multiple accepted")
	}
	e, _ := NewEncrypter(f, 8192, testKey())
	if _, err := e.ReadAt(make([]byte, 4096), 100); err == nil {
		t.Fatal("unaligned read accepted")
	}
	if _, err := e.ReadAt(make([]byte, 4096), 0); err == nil {
		t.Fatal("short file accepted")
	}
	if err := e.Finish(); err == nil {
		t.Fatal("Finish with sectors never read")
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
	// Table checks the parameters with the policy's own rule.
	if _, _, err := Table(Params("../model"), testKey(), "253:0", 4096); err == nil || !strings.Contains(err.Error(), "encryption resource") {
		t.Fatalf("invalid resource id: %v", err)
	}
	if KeySize*8 != policy.EncryptionKeyBits || KeySize != secret.KeySize {
		t.Fatalf("key size %d bytes; the policy says %d bits, the resource format %d bytes", KeySize, policy.EncryptionKeyBits, secret.KeySize)
	}
}

func BenchmarkEncrypt(b *testing.B) {
	buf := make([]byte, 1<<20)
	key := testKey()
	b.SetBytes(int64(len(buf)))
	for i := 0; i < b.N; i++ {
		Encrypt(key, buf, uint64(i))
	}
}

// TestEncryptChunks checks Encrypt and Decrypt over many 1 MiB work items
// (and a partial last one) against the sector-by-sector reference, with
// several goroutines, and that every run gives the same bytes.
func TestEncryptChunks(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	key := testKey()
	const first = 1000
	plain := make([]byte, 9*chunkSize+3*SectorSize)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range plain {
		plain[i] = byte(rng.Uint32())
	}
	want := bytes.Clone(plain)
	ref, _ := xts.NewCipher(aes.NewCipher, key)
	for s := 0; s < len(want)/SectorSize; s++ {
		b := want[s*SectorSize : (s+1)*SectorSize]
		ref.Encrypt(b, b, first+uint64(s))
	}
	for run := 0; run < 3; run++ {
		b := bytes.Clone(plain)
		if err := Encrypt(key, b, first); err != nil {
			t.Fatal(err)
		}
		for s := 0; s < len(b)/SectorSize; s++ {
			if !bytes.Equal(b[s*SectorSize:(s+1)*SectorSize], want[s*SectorSize:(s+1)*SectorSize]) {
				t.Fatalf("run %d: sector %d differs from the reference", run, first+s)
			}
		}
		if err := Decrypt(key, b, first); err != nil || !bytes.Equal(b, plain) {
			t.Fatalf("run %d: decrypt: %v, round trip equal %v", run, err, bytes.Equal(b, plain))
		}
	}
}
