// Package initramfs writes and reads the initramfs: a newc cpio archive
// (github.com/u-root/u-root/pkg/cpio), gzip-compressed.
//
// Determinism: entries are written sorted by path (parents first), every
// inode has uid/gid 0, mtime = the tree's Epoch, device 0:0 and an inode
// number equal to its 1-based position; the gzip stream has no name, a zero
// modification time and a fixed level. The compressed bytes are therefore a
// function of the tree and of the Go version's compress/gzip, which is why
// Compression reports runtime.Version(): record it in build info.
package initramfs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"sort"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/tdforge/tdforge/internal/image/fstree"
)

// Level is the gzip level used by Write.
const Level = 6 // gzip default; -9 costs ~1.7x the time for no gain on binaries (BenchmarkWriteGzip)

// Compression describes the compressor that produced Write's bytes, e.g.
// "gzip -9 (compress/gzip go1.26.8)". Identical trees give identical bytes
// under the same description.
func Compression() string {
	return fmt.Sprintf("gzip -%d (compress/gzip %s)", Level, runtime.Version())
}

// DeviceNodes are the nodes the kernel needs before devtmpfs is mounted:
// dev/console (c 5 1, 0600) for init's stdio and dev/null (c 1 3, 0666).
func DeviceNodes() []cpio.Record {
	return []cpio.Record{
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.CharDev("dev/null", 0o666, 1, 3),
	}
}

// Options tune WriteOptions.
type Options struct {
	// Extra records (e.g. device nodes, which fstree cannot express) are
	// merged into the tree by path; their parents are added as 0755
	// directories. Owner, times and inode numbers are normalized.
	Extra []cpio.Record
	// Uncompressed writes a plain cpio archive instead of gzip.
	Uncompressed bool
}

// Write writes t plus DeviceNodes as a gzip-compressed newc archive.
func Write(w io.Writer, t *fstree.Tree) error {
	return WriteOptions(w, t, Options{Extra: DeviceNodes()})
}

// WriteOptions writes t as a newc archive as configured by o.
func WriteOptions(w io.Writer, t *fstree.Tree, o Options) error {
	if t.Epoch < 0 {
		return fmt.Errorf("initramfs: negative epoch %d", t.Epoch)
	}
	tt := fstree.Tree{Epoch: t.Epoch, Entries: append([]fstree.Entry(nil), t.Entries...)}
	if err := tt.Normalize(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	type item struct {
		name  string
		entry *fstree.Entry
		rec   *cpio.Record
	}
	var items []item
	have := map[string]bool{}
	for i := range tt.Entries {
		e := &tt.Entries[i]
		items = append(items, item{name: e.Path, entry: e})
		have[e.Path] = e.Type == fstree.Dir
	}
	for i := range o.Extra {
		r := o.Extra[i]
		name := cpio.Normalize(r.Name)
		if name == "." || name == ".." || len(name) > 2 && name[:3] == "../" {
			return fmt.Errorf("initramfs: invalid extra record name %q", r.Name)
		}
		if _, dup := have[name]; dup {
			return fmt.Errorf("initramfs: extra record %q collides with a tree entry; remove one of them", name)
		}
		r.Name = name
		items = append(items, item{name: name, rec: &r})
		have[name] = r.Mode&cpio.S_IFMT == cpio.S_IFDIR
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			isDir, ok := have[d]
			if ok && !isDir {
				return fmt.Errorf("initramfs: extra record %q is inside non-directory %q", name, d)
			}
			if !ok {
				have[d] = true
				items = append(items, item{name: d, rec: &cpio.Record{Info: cpio.Info{Name: d, Mode: cpio.S_IFDIR | 0o755}}})
			}
		}
	}
	sort.Slice(items, func(i, j int) bool { return items[i].name < items[j].name })

	var zw *gzip.Writer
	out := w
	bw := bufio.NewWriterSize(w, 1<<20)
	out = bw
	if !o.Uncompressed {
		var err error
		// A fresh Writer has an empty header: no name, zero ModTime.
		if zw, err = gzip.NewWriterLevel(bw, Level); err != nil {
			return err
		}
		out = zw
	}
	cw := cpio.Newc.Writer(out)
	for i, it := range items {
		var rec cpio.Record
		if it.rec != nil {
			rec = *it.rec
			if rec.Mode&cpio.S_IFMT != cpio.S_IFREG && rec.Mode&cpio.S_IFMT != cpio.S_IFLNK {
				rec.ReaderAt = nil
				rec.FileSize = 0
			}
		} else {
			var err error
			if rec, err = record(it.entry); err != nil {
				return err
			}
		}
		rec.Name = it.name
		rec.Ino = uint64(i + 1)
		rec.UID, rec.GID = 0, 0
		rec.MTime = uint64(tt.Epoch)
		rec.Dev, rec.Major, rec.Minor = 0, 0, 0
		rec.NLink = 1
		if rec.Mode&cpio.S_IFMT == cpio.S_IFDIR {
			rec.NLink = 2
		}
		if err := cw.WriteRecord(rec); err != nil {
			return fmt.Errorf("initramfs: %s: %w", it.name, err)
		}
	}
	if err := cpio.WriteTrailer(cw); err != nil {
		return err
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// record converts a normalized fstree entry.
func record(e *fstree.Entry) (cpio.Record, error) {
	perm := uint64(e.Mode.Perm())
	switch e.Type {
	case fstree.Dir:
		return cpio.Record{Info: cpio.Info{Mode: cpio.S_IFDIR | perm}}, nil
	case fstree.Symlink:
		return cpio.Record{ReaderAt: bytes.NewReader([]byte(e.Target)), Info: cpio.Info{Mode: cpio.S_IFLNK | 0o777, FileSize: uint64(len(e.Target))}}, nil
	case fstree.File:
		if e.Source == "" {
			return cpio.Record{ReaderAt: bytes.NewReader(e.Data), Info: cpio.Info{Mode: cpio.S_IFREG | perm, FileSize: uint64(len(e.Data))}}, nil
		}
		f, err := os.Open(e.Source)
		if err != nil {
			return cpio.Record{}, fmt.Errorf("initramfs: %s: %w", e.Path, err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return cpio.Record{}, err
		}
		if !fi.Mode().IsRegular() || fi.Size() != e.Size {
			f.Close()
			return cpio.Record{}, fmt.Errorf("initramfs: %s: source %s is %d bytes (%v), tree says %d: it changed after the tree was built", e.Path, e.Source, fi.Size(), fi.Mode().Type(), e.Size)
		}
		// The cpio writer closes the file after copying it.
		return cpio.Record{ReaderAt: f, Info: cpio.Info{Mode: cpio.S_IFREG | perm, FileSize: uint64(e.Size)}}, nil
	}
	return cpio.Record{}, fmt.Errorf("initramfs: %s: unsupported entry type %d", e.Path, e.Type)
}

// Entry is one parsed archive member.
type Entry struct {
	Name   string `json:"name"`
	Mode   uint64 `json:"mode"` // type and permission bits (S_IFMT | perm)
	UID    uint64 `json:"uid"`
	GID    uint64 `json:"gid"`
	MTime  uint64 `json:"mtime"`
	Size   uint64 `json:"size"`
	Ino    uint64 `json:"ino"`
	NLink  uint64 `json:"nlink"`
	Rmajor uint64 `json:"rmajor,omitempty"`
	Rminor uint64 `json:"rminor,omitempty"`
	SHA256 string `json:"sha256,omitempty"` // content digest (regular files and symlinks)
	Target string `json:"target,omitempty"` // symlink target
}

// Read parses an initramfs, gzip-compressed or plain, streaming it once.
// Contents are hashed, not kept.
func Read(r io.Reader) ([]Entry, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	var src io.Reader = br
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("initramfs: %w", err)
		}
		zr.Multistream(true)
		src = zr
	}
	rr := cpio.Newc.Reader(&forwardReaderAt{r: src})
	var out []Entry
	for {
		rec, err := rr.ReadRecord()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("initramfs: entry %d: %w", len(out)+1, err)
		}
		e := Entry{Name: rec.Name, Mode: rec.Mode, UID: rec.UID, GID: rec.GID, MTime: rec.MTime,
			Size: rec.FileSize, Ino: rec.Ino, NLink: rec.NLink, Rmajor: rec.Rmajor, Rminor: rec.Rminor}
		if rec.ReaderAt != nil && rec.FileSize > 0 {
			h := sha256.New()
			var buf bytes.Buffer
			w := io.Writer(h)
			if rec.Mode&cpio.S_IFMT == cpio.S_IFLNK {
				w = io.MultiWriter(h, &buf)
			}
			if _, err := io.Copy(w, io.NewSectionReader(rec.ReaderAt, 0, int64(rec.FileSize))); err != nil {
				return nil, fmt.Errorf("initramfs: %s: %w", rec.Name, err)
			}
			e.SHA256 = hex.EncodeToString(h.Sum(nil))
			e.Target = buf.String()
		} else if rec.Mode&cpio.S_IFMT == cpio.S_IFREG {
			e.SHA256 = hex.EncodeToString(sha256.New().Sum(nil))
		}
		out = append(out, e)
	}
	return out, nil
}

// forwardReaderAt adapts a stream to io.ReaderAt for strictly increasing
// offsets, which is how the newc reader consumes it.
type forwardReaderAt struct {
	r   io.Reader
	pos int64
}

func (f *forwardReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < f.pos {
		return 0, errors.New("initramfs: backward seek in stream")
	}
	if off > f.pos {
		n, err := io.CopyN(io.Discard, f.r, off-f.pos)
		f.pos += n
		if err != nil {
			return 0, err
		}
	}
	n, err := io.ReadFull(f.r, p)
	f.pos += int64(n)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return n, err
}
