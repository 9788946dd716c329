package volume

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
	"github.com/google/uuid"

	"github.com/tdforge/tdforge/internal/image/crypt"
)

// BlockSize is the volume's block size: dm-integrity's, dm-crypt's sector
// (the encrypted payloads' crypt.SectorSize) and ext4's, so that no layer
// ever does a read-modify-write of a block.
const BlockSize = crypt.SectorSize

// Mkfs creates an ext4 filesystem with an internal journal on the fresh
// device f of size bytes, with filesystem UUID id and label label (the
// header initd checks on later boots). It uses go-diskfs (pure Go; no
// mke2fs in the initramfs).
//
// A fresh dm-integrity device fails every read of a block that was never
// written (its tag is zero), so mkfs runs on a fresh view of f: a block
// not yet written reads as zeros, as a fresh volume logically holds,
// without touching the device, and every write is widened to whole
// BlockSize blocks. The kernel then only reads blocks mkfs wrote.
func Mkfs(f *os.File, size int64, id, label string) error {
	u, err := uuid.Parse(id)
	if err != nil {
		return fmt.Errorf("mkfs: filesystem uuid: %w", err)
	}
	if size <= 0 || size%BlockSize != 0 {
		return fmt.Errorf("mkfs: device size %d is not a positive multiple of %d", size, BlockSize)
	}
	fv := &fresh{f: f, size: size, written: make([]bool, size/BlockSize)}
	_, err = ext4.Create(fv, size, 0, 0, &ext4.Params{
		UUID:            &u,
		SectorsPerBlock: BlockSize / 512,
		VolumeName:      label,
		// No resize inode: a volume's size is fixed by the policy (and
		// go-diskfs cannot place one on volumes under 4 block groups).
		Features: []ext4.FeatureOpt{ext4.WithFeatureReservedGDTBlocksForExpansion(false)},
	})
	if err != nil {
		return fmt.Errorf("mkfs: ext4: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("mkfs: sync: %w", err)
	}
	return nil
}

// fresh is f seen as a fresh (all-zero) device; see Mkfs.
type fresh struct {
	f       *os.File
	size    int64
	off     int64
	written []bool
}

func (d *fresh) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > d.size {
		return 0, fmt.Errorf("read of %d bytes at %d beyond the device's %d bytes", len(p), off, d.size)
	}
	n := 0
	for n < len(p) {
		at := off + int64(n)
		blk := at / BlockSize
		end := min(int64(len(p)-n), (blk+1)*BlockSize-at)
		if d.written[blk] {
			if _, err := d.f.ReadAt(p[n:n+int(end)], at); err != nil {
				return n, err
			}
		} else {
			clear(p[n : n+int(end)])
		}
		n += int(end)
	}
	return n, nil
}

func (d *fresh) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > d.size {
		return 0, fmt.Errorf("write of %d bytes at %d beyond the device's %d bytes", len(p), off, d.size)
	}
	first, last := off/BlockSize, (off+int64(len(p))-1)/BlockSize
	if len(p) == 0 {
		return 0, nil
	}
	buf := make([]byte, (last-first+1)*BlockSize)
	// Edge blocks keep their other bytes (zeros if never written).
	if _, err := d.ReadAt(buf[:BlockSize], first*BlockSize); err != nil {
		return 0, err
	}
	if last != first {
		if _, err := d.ReadAt(buf[len(buf)-BlockSize:], last*BlockSize); err != nil {
			return 0, err
		}
	}
	copy(buf[off-first*BlockSize:], p)
	if _, err := d.f.WriteAt(buf, first*BlockSize); err != nil {
		return 0, err
	}
	for b := first; b <= last; b++ {
		d.written[b] = true
	}
	return len(p), nil
}

func (d *fresh) Read(p []byte) (int, error) {
	n, err := d.ReadAt(p, d.off)
	d.off += int64(n)
	return n, err
}

func (d *fresh) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case 0:
	case 1:
		off += d.off
	case 2:
		off += d.size
	default:
		return 0, errors.New("seek: bad whence")
	}
	if off < 0 {
		return 0, errors.New("seek: negative offset")
	}
	d.off = off
	return off, nil
}

func (d *fresh) Stat() (fs.FileInfo, error)              { return d.f.Stat() }
func (d *fresh) Close() error                            { return nil }
func (d *fresh) Sys() (*os.File, error)                  { return d.f, nil }
func (d *fresh) Writable() (backend.WritableFile, error) { return d, nil }
func (d *fresh) Path() string                            { return d.f.Name() }
