// Package authenticode computes the PE/COFF Authenticode image digest
// (SHA-384) that UEFI firmware measures when it loads an image, here a Linux
// bzImage carrying the EFI stub. It also reproduces the setup-header patch
// QEMU's x86 direct-kernel loader applies before the firmware sees the kernel.
package authenticode

import (
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"sort"
)

// ErrNotPE is returned for images without a PE/COFF header.
var ErrNotPE = errors.New("authenticode: not a PE/COFF image (a bzImage needs CONFIG_EFI_STUB to be measured by UEFI firmware)")

// Image is the parsed layout Authenticode needs.
type Image struct {
	checksumOff   int // offset of OptionalHeader.CheckSum
	certDirOff    int // offset of the certificate table data directory, or -1
	sizeOfHeaders int
	certSize      uint32
	sections      []section
}

type section struct {
	name         string
	rawOffset    uint32
	rawSize      uint32
	virtualAddr  uint32
	virtualSize  uint32
	sizeOfRawEnd uint64
}

const (
	pe32Magic     = 0x10b
	pe32PlusMagic = 0x20b
	dirSecurity   = 4
	maxSections   = 96 // the PE/COFF limit
)

// Parse checks b is a PE/COFF image and records the regions Authenticode
// hashes.
func Parse(b []byte) (*Image, error) {
	if len(b) < 0x40 || b[0] != 'M' || b[1] != 'Z' {
		return nil, ErrNotPE
	}
	peOff := int(binary.LittleEndian.Uint32(b[0x3c:]))
	if peOff < 0x40 || peOff > len(b)-24 || string(b[peOff:peOff+4]) != "PE\x00\x00" {
		return nil, ErrNotPE
	}
	coff := peOff + 4
	nsec := int(binary.LittleEndian.Uint16(b[coff+2:]))
	optSize := int(binary.LittleEndian.Uint16(b[coff+16:]))
	opt := coff + 20
	if nsec > maxSections {
		return nil, fmt.Errorf("authenticode: %d sections exceed the PE/COFF limit of %d", nsec, maxSections)
	}
	if opt+optSize > len(b) || optSize < 2 {
		return nil, errors.New("authenticode: optional header is truncated")
	}
	img := &Image{certDirOff: -1}
	var ndirOff, dirOff int
	switch magic := binary.LittleEndian.Uint16(b[opt:]); magic {
	case pe32Magic:
		ndirOff, dirOff = opt+92, opt+96
	case pe32PlusMagic:
		ndirOff, dirOff = opt+108, opt+112
	default:
		return nil, fmt.Errorf("authenticode: optional header magic %#x is neither PE32 nor PE32+", magic)
	}
	if ndirOff+4 > opt+optSize {
		return nil, errors.New("authenticode: optional header too small")
	}
	img.checksumOff = opt + 64
	img.sizeOfHeaders = int(binary.LittleEndian.Uint32(b[opt+60:]))
	ndir := int(binary.LittleEndian.Uint32(b[ndirOff:]))
	if ndir > 16 || dirOff+8*ndir > opt+optSize {
		return nil, fmt.Errorf("authenticode: %d data directories do not fit the optional header", ndir)
	}
	if ndir > dirSecurity {
		img.certDirOff = dirOff + 8*dirSecurity
		img.certSize = binary.LittleEndian.Uint32(b[img.certDirOff+4:])
	}
	secTab := opt + optSize
	if secTab+40*nsec > len(b) {
		return nil, errors.New("authenticode: section table is truncated")
	}
	if img.sizeOfHeaders > len(b) || img.sizeOfHeaders < secTab+40*nsec {
		return nil, fmt.Errorf("authenticode: SizeOfHeaders %#x is inconsistent with the %d-byte image", img.sizeOfHeaders, len(b))
	}
	if img.certDirOff >= 0 && img.certDirOff+8 > img.sizeOfHeaders {
		return nil, errors.New("authenticode: certificate directory lies outside the headers")
	}
	for i := 0; i < nsec; i++ {
		s := b[secTab+40*i:]
		sec := section{
			name:        string(trimNUL(s[0:8])),
			virtualSize: binary.LittleEndian.Uint32(s[8:]),
			virtualAddr: binary.LittleEndian.Uint32(s[12:]),
			rawSize:     binary.LittleEndian.Uint32(s[16:]),
			rawOffset:   binary.LittleEndian.Uint32(s[20:]),
		}
		if sec.rawSize == 0 {
			continue
		}
		if uint64(sec.rawOffset)+uint64(sec.rawSize) > uint64(len(b)) {
			return nil, fmt.Errorf("authenticode: section %q raw data [%#x+%#x] lies outside the %d-byte image (truncated?)", sec.name, sec.rawOffset, sec.rawSize, len(b))
		}
		img.sections = append(img.sections, sec)
	}
	sort.SliceStable(img.sections, func(i, j int) bool { return img.sections[i].rawOffset < img.sections[j].rawOffset })
	return img, nil
}

func trimNUL(b []byte) []byte {
	for i, c := range b {
		if c == 0 {
			return b[:i]
		}
	}
	return b
}

// Hash writes the Authenticode-covered bytes of b to h, following the
// algorithm of the UEFI firmware's PE measurement (edk2): headers without
// CheckSum and the certificate directory, sections by file offset, then any
// trailing data except the certificate table's size.
func (img *Image) Hash(b []byte, h hash.Hash) {
	h.Write(b[:img.checksumOff])
	if img.certDirOff < 0 {
		h.Write(b[img.checksumOff+4 : img.sizeOfHeaders])
	} else {
		h.Write(b[img.checksumOff+4 : img.certDirOff])
		h.Write(b[img.certDirOff+8 : img.sizeOfHeaders])
	}
	sum := uint64(img.sizeOfHeaders)
	for _, s := range img.sections {
		h.Write(b[s.rawOffset : s.rawOffset+s.rawSize])
		sum += uint64(s.rawSize)
	}
	size := uint64(len(b))
	if size > sum+uint64(img.certSize) {
		h.Write(b[sum : size-uint64(img.certSize)])
	}
}

// Digest returns the SHA-384 Authenticode digest of a PE/COFF image.
func Digest(b []byte) ([48]byte, error) {
	var out [48]byte
	img, err := Parse(b)
	if err != nil {
		return out, err
	}
	h := sha512.New384()
	img.Hash(b, h)
	copy(out[:], h.Sum(nil))
	return out, nil
}
