// Package gptread reads a GUID partition table: the primary header at LBA 1
// and its partition entry array, each checked against its CRC32 before
// anything in it is used. It is tdforge's one GPT reader, shared by the
// guest (which finds the payload disk by its GUID) and `builder diff`, and
// it depends on the standard library only, so the guest does not link the
// disk writer's go-diskfs.
//
// u-root's pkg/mount/gpt is not used: it allocates the entry array from the
// header's unchecked entry size before verifying the header CRC (a stray
// disk could make the guest allocate gigabytes), assumes 512-byte sectors
// for the array, and prints whole header structs in its errors.
package gptread

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf16"
)

// Limits on the partition entry array; the usual one is 128 entries of 128
// bytes.
const (
	maxEntries   = 1024
	minEntrySize = 128
	maxEntrySize = 4096
	headerBytes  = 512 // read for the header; its size may not exceed this
	minHeader    = 92
)

// ErrNoGPT is wrapped by Read's error when the disk has no GPT signature
// (a disk that is simply not GPT-partitioned, as opposed to a damaged one).
var ErrNoGPT = errors.New("no GPT signature at LBA 1")

// Table is a checked GPT.
type Table struct {
	DiskGUID string // lowercase, dashed
	// Partitions holds the used entries (type GUID not zero) in entry order.
	Partitions []Partition
}

// Partition is one used partition entry.
type Partition struct {
	Index      int    // 1-based entry index
	TypeGUID   string // lowercase, dashed
	GUID       string // unique partition GUID, lowercase, dashed
	FirstLBA   uint64
	LastLBA    uint64 // inclusive
	Attributes uint64
	Name       string // UTF-16LE name, trailing NULs removed
}

// Read reads the primary GPT of disk, whose logical sector size is
// sectorSize bytes (512 for the images tdforge writes). name identifies the
// disk in errors. A missing signature, a header or entry-array CRC mismatch
// or an implausible entry array is an error.
func Read(disk io.ReaderAt, name string, sectorSize int64) (*Table, error) {
	errf := func(format string, a ...any) error {
		return fmt.Errorf("GPT of %s: "+format, append([]any{name}, a...)...)
	}
	h := make([]byte, headerBytes)
	if _, err := disk.ReadAt(h, sectorSize); err != nil {
		return nil, errf("reading the header at LBA 1: %w", err)
	}
	if string(h[0:8]) != "EFI PART" {
		return nil, errf("%w", ErrNoGPT)
	}
	size := binary.LittleEndian.Uint32(h[12:])
	if size < minHeader || size > headerBytes || int64(size) > sectorSize {
		return nil, errf("header size %d is out of range", size)
	}
	stored := binary.LittleEndian.Uint32(h[16:])
	binary.LittleEndian.PutUint32(h[16:], 0)
	if sum := crc32.ChecksumIEEE(h[:size]); sum != stored {
		return nil, errf("header CRC32 mismatch (stored %08x, computed %08x)", stored, sum)
	}
	arrayLBA := binary.LittleEndian.Uint64(h[72:])
	n := binary.LittleEndian.Uint32(h[80:])
	esize := binary.LittleEndian.Uint32(h[84:])
	if n > maxEntries || esize < minEntrySize || esize > maxEntrySize || esize&(esize-1) != 0 {
		return nil, errf("implausible partition entry array (%d entries of %d bytes)", n, esize)
	}
	array := make([]byte, int(n)*int(esize))
	if _, err := disk.ReadAt(array, int64(arrayLBA)*sectorSize); err != nil {
		return nil, errf("reading the partition entries at LBA %d: %w", arrayLBA, err)
	}
	if sum, want := crc32.ChecksumIEEE(array), binary.LittleEndian.Uint32(h[88:]); sum != want {
		return nil, errf("partition entry array CRC32 mismatch (stored %08x, computed %08x)", want, sum)
	}
	t := &Table{DiskGUID: guidString(h[56:72])}
	var zero [16]byte
	for i := range int(n) {
		e := array[i*int(esize) : (i+1)*int(esize)]
		if bytes.Equal(e[0:16], zero[:]) {
			continue
		}
		u := make([]uint16, 36)
		for k := range u {
			u[k] = binary.LittleEndian.Uint16(e[56+2*k:])
		}
		t.Partitions = append(t.Partitions, Partition{
			Index:      i + 1,
			TypeGUID:   guidString(e[0:16]),
			GUID:       guidString(e[16:32]),
			FirstLBA:   binary.LittleEndian.Uint64(e[32:]),
			LastLBA:    binary.LittleEndian.Uint64(e[40:]),
			Attributes: binary.LittleEndian.Uint64(e[48:]),
			Name:       strings.TrimRight(string(utf16.Decode(u)), "\x00"),
		})
	}
	return t, nil
}

// guidString formats a 16-byte on-disk GPT GUID (first three fields
// little-endian) in its lowercase dashed form.
func guidString(g []byte) string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		binary.LittleEndian.Uint32(g[0:4]), binary.LittleEndian.Uint16(g[4:6]), binary.LittleEndian.Uint16(g[6:8]), g[8:10], g[10:16])
}
