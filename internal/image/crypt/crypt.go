// Package crypt encrypts a payload image in dm-crypt's format, with no
// header: aes-xts-plain64, a 512-bit key (two AES-256 halves), 4096-byte
// sectors and the iv_large_sectors option, so sector n of the image (bytes
// n*4096 to n*4096+4095) is encrypted with the XTS tweak n as a 64-bit
// little-endian integer. The key is never written: the guest puts it in the
// dm-crypt table (Table) after the key broker releases it.
//
// The cipher is golang.org/x/crypto/xts over crypto/aes; this package only
// maps sectors to tweaks and spreads the sectors over the CPUs. AES-XTS
// with plain64 IVs is deterministic: the same image and key always give the
// same ciphertext, so encrypted builds stay reproducible.
package crypt

import (
	"crypto/aes"
	"encoding/hex"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/xts"

	"github.com/tdforge/tdforge/internal/inputs/secret"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// The format's fixed parameters (policy.Encryption holds them per payload),
// defined once by the policy and the key-broker resource format.
const (
	Cipher     = policy.EncryptionCipher
	KeySize    = secret.KeySize // bytes; policy.EncryptionKeyBits / 8
	SectorSize = policy.EncryptionSectorSize
)

// Params returns the policy encryption parameters for a payload whose key is
// the key-broker resource id.
func Params(resource string) policy.Encryption {
	return policy.Encryption{Cipher: Cipher, KeyBits: KeySize * 8, SectorSize: SectorSize, IVLargeSectors: true, Resource: resource}
}

// ReaderWriterAt is a file region read and rewritten in place.
type ReaderWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// Encrypter encrypts an image in place as it is read: ReadAt reads
// plaintext sectors, encrypts them, writes the ciphertext back and returns
// it. Handed to the dm-verity hash tree builder, which reads every data
// block once (in parallel chunks), it encrypts the image in the same pass
// that hashes the ciphertext. A sector read twice is an error (it would be
// encrypted twice), and Finish checks that every sector was read.
type Encrypter struct {
	f    ReaderWriterAt
	size int64
	c    *xts.Cipher
	mu   sync.Mutex
	seen []bool // per sector
	left int64  // sectors not yet read
}

// NewEncrypter encrypts the first size bytes of f (a positive multiple of
// SectorSize) with key as they are read.
func NewEncrypter(f ReaderWriterAt, size int64, key []byte) (*Encrypter, error) {
	c, err := newCipher(key)
	if err != nil {
		return nil, err
	}
	if size <= 0 || size%SectorSize != 0 {
		return nil, fmt.Errorf("dm-crypt: image size %d is not a positive multiple of %d", size, SectorSize)
	}
	return &Encrypter{f: f, size: size, c: c, seen: make([]bool, size/SectorSize), left: size / SectorSize}, nil
}

// ReadAt encrypts and returns whole sectors at off.
func (e *Encrypter) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 || off%SectorSize != 0 || len(b)%SectorSize != 0 || off+int64(len(b)) > e.size {
		return 0, fmt.Errorf("dm-crypt: read of %d bytes at %d is not whole sectors of the %d-byte image", len(b), off, e.size)
	}
	first, n := off/SectorSize, int64(len(b)/SectorSize)
	e.mu.Lock()
	for s := first; s < first+n; s++ {
		if e.seen[s] {
			e.mu.Unlock()
			return 0, fmt.Errorf("dm-crypt: internal error: sector %d read twice", s)
		}
	}
	for s := first; s < first+n; s++ {
		e.seen[s] = true
	}
	e.left -= n
	e.mu.Unlock()
	if _, err := e.f.ReadAt(b, off); err != nil {
		return 0, fmt.Errorf("dm-crypt: reading the image at %d: %w", off, err)
	}
	xtsSectors(b, uint64(first), e.c.Encrypt)
	if _, err := e.f.WriteAt(b, off); err != nil {
		return 0, fmt.Errorf("dm-crypt: writing the image at %d: %w", off, err)
	}
	return len(b), nil
}

// Finish reports an error unless every sector has been read (encrypted).
func (e *Encrypter) Finish() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.left != 0 {
		return fmt.Errorf("dm-crypt: internal error: %d of %d sectors were never encrypted", e.left, len(e.seen))
	}
	return nil
}

// Decrypt decrypts b (whole sectors of an image Encrypter encrypted) in
// place; b's first sector is sector number first of the image. Tests use
// it to check ciphertext.
func Decrypt(key, b []byte, first uint64) error {
	return inPlace(key, b, first, (*xts.Cipher).Decrypt)
}

// inPlace applies op (the cipher's Encrypt or Decrypt) to each sector of b
// in place.
func inPlace(key, b []byte, first uint64, op func(c *xts.Cipher, dst, src []byte, sector uint64)) error {
	c, err := newCipher(key)
	if err != nil {
		return err
	}
	if len(b)%SectorSize != 0 {
		return fmt.Errorf("dm-crypt: %d bytes is not a whole number of %d-byte sectors", len(b), SectorSize)
	}
	xtsSectors(b, first, func(dst, src []byte, sector uint64) { op(c, dst, src, sector) })
	return nil
}

// chunkSize is the work item of encryption and decryption: 256 sectors.
const chunkSize = 256 * SectorSize

// xtsSectors runs fn (an xts.Cipher's Encrypt or Decrypt) in place over the
// whole sectors of b, the first being sector number first, spreading 1 MiB
// chunks over runtime.GOMAXPROCS goroutines. Sectors are independent in XTS
// and each is transformed where it lies, so the result does not depend on
// the schedule. An xts.Cipher is safe for concurrent use when its block
// cipher is, and a crypto/aes block only reads its expanded key.
func xtsSectors(b []byte, first uint64, fn func(dst, src []byte, sector uint64)) {
	chunk := func(i int) {
		for off := i * chunkSize; off < min((i+1)*chunkSize, len(b)); off += SectorSize {
			s := b[off : off+SectorSize]
			fn(s, s, first+uint64(off/SectorSize))
		}
	}
	n := (len(b) + chunkSize - 1) / chunkSize
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for i := range n {
			chunk(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				chunk(i)
			}
		})
	}
	wg.Wait()
}

// newCipher returns XTS-AES-256 for a 512-bit key: golang.org/x/crypto/xts
// over crypto/aes (AES-NI where the CPU has it), which is dm-crypt's
// xts(aes) with plain64 IVs: the tweak of sector n is AES(k2, n as a
// 128-bit little-endian integer).
func newCipher(key []byte) (*xts.Cipher, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("dm-crypt: a %s key is %d bytes, not %d", Cipher, KeySize, len(key))
	}
	c, err := xts.NewCipher(aes.NewCipher, key)
	if err != nil {
		return nil, fmt.Errorf("dm-crypt: %w", err)
	}
	return c, nil
}

// Table returns the dm-crypt table of an encrypted payload: the target
// length in 512-byte sectors and its parameters, mapping the plaintext over
// device (the dm-verity device over the ciphertext) from offset 0 for
// dataSize bytes. The parameters hold the key in hex: the table must only
// ever reach the kernel (DM_TABLE_LOAD), never a file or a log.
func Table(e policy.Encryption, key []byte, device string, dataSize uint64) (length uint64, params string, err error) {
	if err := e.Validate(); err != nil {
		return 0, "", fmt.Errorf("dm-crypt: %w", err)
	}
	if len(key) != KeySize {
		return 0, "", fmt.Errorf("dm-crypt: resource %s released %d bytes; a %s key is %d", e.Resource, len(key), Cipher, KeySize)
	}
	if dataSize == 0 || dataSize%SectorSize != 0 {
		return 0, "", fmt.Errorf("dm-crypt: data size %d is not a positive multiple of %d", dataSize, SectorSize)
	}
	if device == "" || strings.ContainsAny(device, " \t\n") {
		return 0, "", fmt.Errorf("dm-crypt: invalid device %q", device)
	}
	// <cipher> <key> <iv_offset> <device> <offset> <#opt> <opts...>;
	// sector_size and iv_large_sectors make the IV the 4096-byte sector
	// number, as Encrypter uses.
	params = fmt.Sprintf("%s %s 0 %s 0 2 sector_size:%d iv_large_sectors", Cipher, hex.EncodeToString(key), device, SectorSize)
	return dataSize / 512, params, nil
}
