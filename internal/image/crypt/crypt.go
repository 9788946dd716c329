// Package crypt encrypts a payload image in dm-crypt's format, with no
// header: aes-xts-plain64, a 512-bit key (two AES-256 halves), 4096-byte
// sectors and the iv_large_sectors option, so sector n of the image (bytes
// n*4096 to n*4096+4095) is encrypted with the XTS tweak n as a 64-bit
// little-endian integer. The key is never written: the guest puts it in the
// dm-crypt table (Table) after the key broker releases it.
//
// AES-XTS with plain64 IVs is deterministic: the same image and key always
// give the same ciphertext, so encrypted builds stay reproducible.
package crypt

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/crypto/xts"

	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// The format's fixed parameters (policy.Encryption holds them per payload).
const (
	Cipher     = "aes-xts-plain64"
	KeySize    = 64 // bytes
	SectorSize = 4096
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
	c    *xtsCipher
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
	encrypt(e.c, b, uint64(first))
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

// Encrypt encrypts b (whole sectors) in place; b's first sector is sector
// number first of the image.
func Encrypt(key, b []byte, first uint64) error {
	c, err := newCipher(key)
	if err != nil {
		return err
	}
	if len(b)%SectorSize != 0 {
		return fmt.Errorf("dm-crypt: %d bytes is not a whole number of %d-byte sectors", len(b), SectorSize)
	}
	encrypt(c, b, first)
	return nil
}

// Decrypt reverses Encrypt.
func Decrypt(key, b []byte, first uint64) error {
	c, err := newCipher(key)
	if err != nil {
		return err
	}
	if len(b)%SectorSize != 0 {
		return fmt.Errorf("dm-crypt: %d bytes is not a whole number of %d-byte sectors", len(b), SectorSize)
	}
	for i := 0; i < len(b); i += SectorSize {
		s := b[i : i+SectorSize]
		c.ref.Decrypt(s, s, first+uint64(i/SectorSize))
	}
	return nil
}

func encrypt(c *xtsCipher, b []byte, first uint64) {
	for i := 0; i < len(b); i += SectorSize {
		c.encryptSector(b[i:i+SectorSize], first+uint64(i/SectorSize))
	}
}

// xtsCipher is XTS-AES-256 (IEEE 1619) over whole sectors, as dm-crypt's
// xts(aes) with plain64 IVs: the tweak of sector n is AES(k2, n as a
// 128-bit little-endian integer), doubled in GF(2^128) for each 16-byte
// block. It is golang.org/x/crypto/xts's algorithm (its Decrypt serves
// Decrypt, and the tests compare the two) with the tweaks computed first
// and word-wide XORs and, on amd64, eight AES blocks at a time
// (aes_amd64.s), which make it several times faster.
type xtsCipher struct {
	k1, k2 cipher.Block
	rk1    [15][16]byte // k1's round keys, for encryptBlocks8
	ref    *xts.Cipher
}

// encryptSector encrypts the SectorSize bytes of b, sector number n.
func (c *xtsCipher) encryptSector(b []byte, n uint64) {
	var t [16]byte
	binary.LittleEndian.PutUint64(t[:8], n)
	c.k2.Encrypt(t[:], t[:])
	lo, hi := binary.LittleEndian.Uint64(t[:8]), binary.LittleEndian.Uint64(t[8:])
	// The tweaks of the sector's blocks: T, T*x, T*x^2, ... (tweak *= x
	// shifts the little-endian 128-bit value left by one, folding the carry
	// back with x^7 + x^2 + x + 1, 0x87).
	var tw [SectorSize / 8]uint64
	for i := 0; i < len(tw); i += 2 {
		tw[i], tw[i+1] = lo, hi
		carry := hi >> 63
		hi = hi<<1 | lo>>63
		lo = lo<<1 ^ carry*0x87
	}
	if !littleEndian {
		le := binary.LittleEndian
		for i := 0; i < SectorSize; i += 16 {
			blk := b[i : i+16 : i+16]
			le.PutUint64(blk[:8], le.Uint64(blk[:8])^tw[i/8])
			le.PutUint64(blk[8:], le.Uint64(blk[8:])^tw[i/8+1])
			c.k1.Encrypt(blk, blk)
			le.PutUint64(blk[:8], le.Uint64(blk[:8])^tw[i/8])
			le.PutUint64(blk[8:], le.Uint64(blk[8:])^tw[i/8+1])
		}
		return
	}
	// On a little-endian machine the sector's words are the tweak words:
	// XOR in place, encrypt the blocks in a tight loop, XOR again.
	w := (*[SectorSize / 8]uint64)(unsafe.Pointer(&b[0]))
	for i := range tw {
		w[i] ^= tw[i]
	}
	if haveBlocks8 {
		encryptBlocks8(&c.rk1, &b[0], SectorSize/16)
	} else {
		for i := 0; i < SectorSize; i += 16 {
			blk := b[i : i+16 : i+16]
			c.k1.Encrypt(blk, blk)
		}
	}
	for i := range tw {
		w[i] ^= tw[i]
	}
}

var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

func newCipher(key []byte) (*xtsCipher, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("dm-crypt: a %s key is %d bytes, not %d", Cipher, KeySize, len(key))
	}
	k1, err := aes.NewCipher(key[:KeySize/2])
	if err != nil {
		return nil, err
	}
	k2, err := aes.NewCipher(key[KeySize/2:])
	if err != nil {
		return nil, err
	}
	ref, err := xts.NewCipher(aes.NewCipher, key)
	if err != nil {
		return nil, err
	}
	return &xtsCipher{k1: k1, k2: k2, rk1: expandKey256(key[:KeySize/2]), ref: ref}, nil
}

// Table returns the dm-crypt table of an encrypted payload: the target
// length in 512-byte sectors and its parameters, mapping the plaintext over
// device (the dm-verity device over the ciphertext) from offset 0 for
// dataSize bytes. The parameters hold the key in hex: the table must only
// ever reach the kernel (DM_TABLE_LOAD), never a file or a log.
func Table(e policy.Encryption, key []byte, device string, dataSize uint64) (length uint64, params string, err error) {
	if e.Cipher != Cipher || e.KeyBits != KeySize*8 || e.SectorSize != SectorSize || !e.IVLargeSectors {
		return 0, "", fmt.Errorf("dm-crypt: unsupported encryption %s/%d bits/%d-byte sectors/iv_large_sectors=%v", e.Cipher, e.KeyBits, e.SectorSize, e.IVLargeSectors)
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
	// number, as Encrypt uses.
	params = fmt.Sprintf("%s %s 0 %s 0 2 sector_size:%d iv_large_sectors", Cipher, hex.EncodeToString(key), device, SectorSize)
	return dataSize / 512, params, nil
}
