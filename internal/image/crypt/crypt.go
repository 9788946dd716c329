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
	"encoding/hex"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"

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

// chunk is the unit of work of one goroutine: 256 sectors (1 MiB).
const chunk = 256 * SectorSize

// ReaderWriterAt is a file region read and rewritten in place.
type ReaderWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// EncryptInPlace encrypts the first size bytes of f (a multiple of
// SectorSize) with key, sector by sector, in parallel chunks. progress, if
// set, is called with the bytes done so far (from one goroutine at a time).
func EncryptInPlace(f ReaderWriterAt, size int64, key []byte, progress func(done int64)) error {
	c, err := newCipher(key)
	if err != nil {
		return err
	}
	if size <= 0 || size%SectorSize != 0 {
		return fmt.Errorf("dm-crypt: image size %d is not a positive multiple of %d", size, SectorSize)
	}
	workers := min(runtime.GOMAXPROCS(0), int((size+chunk-1)/chunk))
	jobs := make(chan int64)
	var (
		mu    sync.Mutex
		done  int64
		first error
		wg    sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
		}
		mu.Unlock()
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunk)
			for off := range jobs {
				n := min(int64(chunk), size-off)
				b := buf[:n]
				if _, err := f.ReadAt(b, off); err != nil {
					fail(fmt.Errorf("dm-crypt: reading the image at %d: %w", off, err))
					continue
				}
				encrypt(c, b, uint64(off/SectorSize))
				if _, err := f.WriteAt(b, off); err != nil {
					fail(fmt.Errorf("dm-crypt: writing the image at %d: %w", off, err))
					continue
				}
				mu.Lock()
				done += n
				if progress != nil {
					progress(done)
				}
				mu.Unlock()
			}
		}()
	}
	for off := int64(0); off < size; off += chunk {
		mu.Lock()
		stop := first != nil
		mu.Unlock()
		if stop {
			break
		}
		jobs <- off
	}
	close(jobs)
	wg.Wait()
	return first
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
		c.Decrypt(s, s, first+uint64(i/SectorSize))
	}
	return nil
}

func encrypt(c *xts.Cipher, b []byte, first uint64) {
	for i := 0; i < len(b); i += SectorSize {
		s := b[i : i+SectorSize]
		c.Encrypt(s, s, first+uint64(i/SectorSize))
	}
}

func newCipher(key []byte) (*xts.Cipher, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("dm-crypt: a %s key is %d bytes, not %d", Cipher, KeySize, len(key))
	}
	return xts.NewCipher(aes.NewCipher, key)
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
