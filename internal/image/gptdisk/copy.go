package gptdisk

import (
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// copyRange copies the first n bytes of src into dst at dstOff. Holes in src
// are skipped (dst is a fresh sparse file, so they read as zeros). Each data
// extent is cloned (reflink) where the filesystem supports it, else copied
// in the kernel with copy_file_range, else through a buffer.
func copyRange(dst *os.File, dstOff int64, src *os.File, n int64) error {
	off := int64(0)
	for off < n {
		data, err := unix.Seek(int(src.Fd()), off, unix.SEEK_DATA)
		if err != nil {
			if errors.Is(err, unix.ENXIO) { // only a hole remains
				return nil
			}
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
				return copyExtent(dst, dstOff+off, src, off, n-off)
			}
			return err
		}
		if data >= n {
			return nil
		}
		hole, err := unix.Seek(int(src.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		hole = min(hole, n)
		if err := copyExtent(dst, dstOff+data, src, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

func copyExtent(dst *os.File, dstOff int64, src *os.File, srcOff, n int64) error {
	const blk = 4096
	if srcOff%blk == 0 && dstOff%blk == 0 && n%blk == 0 {
		err := unix.IoctlFileCloneRange(int(dst.Fd()), &unix.FileCloneRange{
			Src_fd: int64(src.Fd()), Src_offset: uint64(srcOff), Src_length: uint64(n), Dest_offset: uint64(dstOff),
		})
		if err == nil {
			return nil
		}
	}
	for n > 0 {
		so, do := srcOff, dstOff
		c, err := unix.CopyFileRange(int(src.Fd()), &so, int(dst.Fd()), &do, int(min(n, 1<<30)), 0)
		if err != nil {
			if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
				return bufferedCopy(dst, dstOff, src, srcOff, n)
			}
			return err
		}
		if c == 0 {
			return io.ErrUnexpectedEOF
		}
		srcOff += int64(c)
		dstOff += int64(c)
		n -= int64(c)
	}
	return nil
}

func bufferedCopy(dst *os.File, dstOff int64, src *os.File, srcOff, n int64) error {
	buf := make([]byte, 1<<20)
	_, err := io.CopyBuffer(io.NewOffsetWriter(dst, dstOff), io.NewSectionReader(src, srcOff, n), buf)
	return err
}
