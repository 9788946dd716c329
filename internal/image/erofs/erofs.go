// Package erofs writes deterministic, uncompressed EROFS images from an
// fstree.Tree.
//
// Layout (all little-endian, 4096-byte blocks):
//
//	block 0:   1024 zero bytes, the 128-byte superblock at 1024, then inodes
//	           (32-byte compact or 64-byte extended slots) packed from 1152
//	           onwards, continuing into following blocks (meta_blkaddr = 0)
//	next:      directory blocks and symlink targets (one block run each)
//	next:      regular file contents, each starting on a block boundary
//
// Directories, symlinks and files up to ChunkSize use the
// EROFS_INODE_FLAT_PLAIN data layout. Larger files use
// EROFS_INODE_CHUNK_BASED with a block map right after the inode; their data
// is still one contiguous run of blocks, but no extent exceeds ChunkSize
// (erofs-utils 1.5's fsck.erofs crashes extracting flat extents over 4 GiB
// and buffers each extent whole). There are no xattrs. Owners are 0:0, every timestamp is the tree epoch and the volume
// UUID is derived from the tree listing, so the same tree always yields the
// same bytes. Files are streamed from their host source; nothing is loaded
// whole.
package erofs

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"

	"github.com/tdforge/tdforge/internal/image/fstree"
)

// BlockSize is the filesystem block size (blkszbits = 12).
const BlockSize = 4096

// On-disk constants from the EROFS format (Linux erofs_fs.h).
const (
	superOffset   = 1024
	superSize     = 128
	magic         = 0xE0F5E1E2
	featSBChksum  = 0x1 // feature_compat: superblock crc32c
	layoutPlain   = 0   // EROFS_INODE_FLAT_PLAIN
	layoutChunked = 4   // EROFS_INODE_CHUNK_BASED
	featChunked   = 0x4 // feature_incompat: chunk-based files
	mapEntrySize  = 4   // block map entry (__le32 block address)
	compactSize   = 32
	extendedSize  = 64
	direntSize    = 12
	maxNameLen    = 255
	ftRegFile     = 1
	ftDir         = 2
	ftSymlink     = 7
	sIFDIR        = 0o040000
	sIFREG        = 0o100000
	sIFLNK        = 0o120000
	copyBufSize   = 1 << 20
	maxBlocks     = 1<<32 - 1 // block addresses and the block count are 32-bit
	inodeAreaBase = superOffset + superSize
	// Files larger than ChunkSize use the chunk-based layout with a block
	// map of ChunkSize chunks (data still contiguous).
	chunkBits = 12 // chunk = BlockSize << chunkBits
	ChunkSize = BlockSize << chunkBits
)

// Options tune WriteTree.
type Options struct {
	// Digests asks for the SHA-256 of every regular file's content, computed
	// while the content is copied (no second read).
	Digests bool
	// Progress, if set, is called after each chunk of file content with the
	// cumulative number of content bytes written.
	Progress func(done int64)
}

// Result describes a written image.
type Result struct {
	Size int64 // image size in bytes, a multiple of BlockSize
	// Digests maps each regular file's tree path to the SHA-256 of its
	// content (only with Options.Digests).
	Digests map[string][32]byte
}

type node struct {
	e        fstree.Entry // Path "" for the root
	name     string
	children []int // indices into nodes, sorted by name
	parent   int
	nid      uint64
	extended bool
	chunked  bool   // EROFS_INODE_CHUNK_BASED with a block map
	size     uint64 // i_size
	blkaddr  uint32
	nblocks  uint64
	nlink    uint32
}

type image struct {
	nodes     []node
	metaEnd   int64 // end of the inode area in bytes
	blocks    uint64
	epoch     int64
	uuid      [16]byte
	fileBytes int64
	chunked   bool // any chunk-based inode (sets the incompat feature)
}

func (n *node) chunks() uint64 { return (n.size + ChunkSize - 1) / ChunkSize }

// Write writes the image of t to w starting at offset 0 and returns its size.
// t is not modified; it is normalized on a copy.
func Write(w io.WriterAt, t *fstree.Tree) (int64, error) {
	r, err := WriteTree(w, t, Options{})
	return r.Size, err
}

// Size returns the size in bytes of the image Write would produce for t,
// without reading any file content.
func Size(t *fstree.Tree) (int64, error) {
	im, err := plan(t)
	if err != nil {
		return 0, err
	}
	return int64(im.blocks) * BlockSize, nil
}

// WriteTree is Write with options.
func WriteTree(w io.WriterAt, t *fstree.Tree, o Options) (Result, error) {
	im, err := plan(t)
	if err != nil {
		return Result{}, err
	}
	res := Result{Size: int64(im.blocks) * BlockSize}
	if o.Digests {
		res.Digests = map[string][32]byte{}
	}
	if err := im.writeData(w, o, res.Digests); err != nil {
		return Result{}, err
	}
	if err := im.writeMeta(w); err != nil {
		return Result{}, err
	}
	return res, nil
}

func plan(t *fstree.Tree) (*image, error) {
	if t == nil {
		return nil, errors.New("erofs: nil tree")
	}
	c := fstree.Tree{Epoch: t.Epoch, Entries: append([]fstree.Entry(nil), t.Entries...)}
	if err := c.Normalize(); err != nil {
		return nil, fmt.Errorf("erofs: %w", err)
	}
	if c.Epoch < 0 {
		return nil, fmt.Errorf("erofs: tree epoch %d is negative; use a SOURCE_DATE_EPOCH >= 0", c.Epoch)
	}
	im := &image{epoch: c.Epoch}
	im.nodes = make([]node, 0, len(c.Entries)+1)
	im.nodes = append(im.nodes, node{e: fstree.Entry{Type: fstree.Dir, Mode: 0o755}, parent: 0})
	index := map[string]int{"": 0}
	for _, e := range c.Entries {
		dir, name := path.Split(e.Path)
		dir = trimSlash(dir)
		if len(name) > maxNameLen {
			return nil, fmt.Errorf("erofs: %s: name is %d bytes, EROFS allows at most %d", e.Path, len(name), maxNameLen)
		}
		if e.Type == fstree.File && e.Size < 0 {
			return nil, fmt.Errorf("erofs: %s: negative size %d", e.Path, e.Size)
		}
		p, ok := index[dir]
		if !ok {
			return nil, fmt.Errorf("erofs: %s: parent directory missing after normalize", e.Path)
		}
		i := len(im.nodes)
		index[e.Path] = i
		im.nodes = append(im.nodes, node{e: e, name: name, parent: p})
		im.nodes[p].children = append(im.nodes[p].children, i)
	}
	// Sizes and link counts.
	for i := range im.nodes {
		n := &im.nodes[i]
		switch n.e.Type {
		case fstree.Dir:
			sort.Slice(n.children, func(a, b int) bool { return im.nodes[n.children[a]].name < im.nodes[n.children[b]].name })
			n.nlink = 2
			for _, ch := range n.children {
				if im.nodes[ch].e.Type == fstree.Dir {
					n.nlink++
				}
			}
			n.size = dirSize(im.dirents(i))
		case fstree.File:
			n.nlink, n.size = 1, uint64(n.e.Size)
		case fstree.Symlink:
			if n.e.Target == "" || len(n.e.Target) > BlockSize {
				return nil, fmt.Errorf("erofs: symlink %s: target must be 1..%d bytes", n.e.Path, BlockSize)
			}
			n.nlink, n.size = 1, uint64(len(n.e.Target))
		}
		n.extended = n.size > 0xFFFFFFFF || n.nlink > 0xFFFF
		n.chunked = n.e.Type == fstree.File && n.size > ChunkSize
		n.nblocks = (n.size + BlockSize - 1) / BlockSize
		if n.chunked {
			im.chunked = true
		}
	}
	// Inode slots.
	off := int64(inodeAreaBase)
	for i := range im.nodes {
		n := &im.nodes[i]
		sz := int64(compactSize)
		if n.extended {
			sz = extendedSize
			if off%BlockSize+sz > BlockSize { // never straddle a block
				off += compactSize
			}
		}
		n.nid = uint64(off / 32)
		off += sz
		if n.chunked {
			// The block map follows the inode; the next slot is 32-byte aligned.
			off += int64(n.chunks()) * mapEntrySize
			off = (off + 31) / 32 * 32
		}
	}
	if im.nodes[0].nid > 0xFFFF {
		return nil, errors.New("erofs: root inode number overflows") // cannot happen: root is first
	}
	im.metaEnd = off
	// Data blocks: directories and symlinks first, then files.
	next := uint64((off + BlockSize - 1) / BlockSize)
	assign := func(n *node) error {
		if n.nblocks == 0 {
			return nil
		}
		if next+n.nblocks > maxBlocks {
			return fmt.Errorf("erofs: image exceeds %d blocks (16 TiB)", uint64(maxBlocks))
		}
		n.blkaddr = uint32(next)
		next += n.nblocks
		return nil
	}
	for pass := 0; pass < 2; pass++ {
		for i := range im.nodes {
			n := &im.nodes[i]
			if (n.e.Type == fstree.File) == (pass == 1) {
				if err := assign(n); err != nil {
					return nil, err
				}
				if pass == 1 {
					im.fileBytes += int64(n.size)
				}
			}
		}
	}
	im.blocks = next
	im.uuid = im.volumeUUID()
	return im, nil
}

func trimSlash(s string) string {
	if len(s) > 0 && s[len(s)-1] == '/' {
		return s[:len(s)-1]
	}
	return s
}

type dirent struct {
	name string
	nid  uint64
	ft   byte
}

// dirents returns the entries of directory i including "." and "..",
// sorted bytewise by name as EROFS lookup requires.
func (im *image) dirents(i int) []dirent {
	n := &im.nodes[i]
	out := make([]dirent, 0, len(n.children)+2)
	out = append(out, dirent{".", n.nid, ftDir}, dirent{"..", im.nodes[n.parent].nid, ftDir})
	for _, c := range n.children {
		ch := &im.nodes[c]
		out = append(out, dirent{ch.name, ch.nid, fileType(ch.e.Type)})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].name < out[b].name })
	return out
}

func fileType(t fstree.Type) byte {
	switch t {
	case fstree.Dir:
		return ftDir
	case fstree.Symlink:
		return ftSymlink
	}
	return ftRegFile
}

// packDir splits dirents into blocks: each block holds dirent records
// followed by their names.
func packDir(ds []dirent) [][]dirent {
	var blocks [][]dirent
	start, used := 0, 0
	for i, d := range ds {
		need := direntSize + len(d.name)
		if used+need > BlockSize {
			blocks = append(blocks, ds[start:i])
			start, used = i, 0
		}
		used += need
	}
	return append(blocks, ds[start:])
}

func dirSize(ds []dirent) uint64 {
	blocks := packDir(ds)
	last := 0
	for _, d := range blocks[len(blocks)-1] {
		last += direntSize + len(d.name)
	}
	return uint64(len(blocks)-1)*BlockSize + uint64(last)
}

func encodeDirBlock(ds []dirent) []byte {
	b := make([]byte, BlockSize)
	nameOff := len(ds) * direntSize
	for i, d := range ds {
		r := b[i*direntSize:]
		binary.LittleEndian.PutUint64(r[0:], d.nid)
		binary.LittleEndian.PutUint16(r[8:], uint16(nameOff))
		r[10] = d.ft
		copy(b[nameOff:], d.name)
		nameOff += len(d.name)
	}
	return b
}

func (im *image) volumeUUID() [16]byte {
	h := sha256.New()
	io.WriteString(h, "tdforge/v1/erofs-uuid\x00")
	io.WriteString(h, strconv.FormatInt(im.epoch, 10)+"\x00")
	for _, n := range im.nodes[1:] {
		fmt.Fprintf(h, "%d\x00%s\x00%o\x00%d\x00%s\x00", n.e.Type, n.e.Path, n.e.Mode&fs.ModePerm, n.size, n.e.Target)
	}
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x80 // RFC 9562 version 8 (custom, name-based)
	u[8] = u[8]&0x3f | 0x80
	return u
}

func (n *node) mode() uint16 {
	perm := uint16(n.e.Mode & fs.ModePerm)
	switch n.e.Type {
	case fstree.Dir:
		return sIFDIR | perm
	case fstree.Symlink:
		return sIFLNK | 0o777
	}
	return sIFREG | perm
}

func (im *image) encodeInode(n *node, ino uint32) []byte {
	b := im.encodeInodeCore(n, ino)
	if !n.chunked {
		return b
	}
	// i_u holds the chunk format (chunk size bits, block map); the block
	// map lists each chunk's start block.
	binary.LittleEndian.PutUint16(b[16:], chunkBits)
	binary.LittleEndian.PutUint16(b[18:], 0)
	layout := uint16(layoutChunked << 1)
	binary.LittleEndian.PutUint16(b[0:], binary.LittleEndian.Uint16(b[0:])|layout)
	m := make([]byte, n.chunks()*mapEntrySize)
	for k := uint64(0); k < n.chunks(); k++ {
		binary.LittleEndian.PutUint32(m[k*mapEntrySize:], n.blkaddr+uint32(k<<chunkBits))
	}
	return append(b, m...)
}

func (im *image) encodeInodeCore(n *node, ino uint32) []byte {
	if !n.extended {
		b := make([]byte, compactSize)
		binary.LittleEndian.PutUint16(b[0:], 0|layoutPlain<<1)
		binary.LittleEndian.PutUint16(b[4:], n.mode())
		binary.LittleEndian.PutUint16(b[6:], uint16(n.nlink))
		binary.LittleEndian.PutUint32(b[8:], uint32(n.size))
		binary.LittleEndian.PutUint32(b[16:], n.blkaddr)
		binary.LittleEndian.PutUint32(b[20:], ino)
		// uid, gid 0; mtime is the superblock build time.
		return b
	}
	b := make([]byte, extendedSize)
	binary.LittleEndian.PutUint16(b[0:], 1|layoutPlain<<1)
	binary.LittleEndian.PutUint16(b[4:], n.mode())
	binary.LittleEndian.PutUint64(b[8:], n.size)
	binary.LittleEndian.PutUint32(b[16:], n.blkaddr)
	binary.LittleEndian.PutUint32(b[20:], ino)
	binary.LittleEndian.PutUint64(b[32:], uint64(im.epoch))
	binary.LittleEndian.PutUint32(b[44:], n.nlink)
	return b
}

// writeMeta writes the superblock, the inode area and the zero fill up to
// the first data block.
func (im *image) writeMeta(w io.WriterAt) error {
	metaLen := (im.metaEnd + BlockSize - 1) / BlockSize * BlockSize
	m := make([]byte, metaLen)
	for i := range im.nodes {
		n := &im.nodes[i]
		copy(m[n.nid*32:], im.encodeInode(n, uint32(i+1)))
	}
	sb := m[superOffset : superOffset+superSize]
	binary.LittleEndian.PutUint32(sb[0:], magic)
	binary.LittleEndian.PutUint32(sb[8:], featSBChksum)
	if im.chunked {
		binary.LittleEndian.PutUint32(sb[80:], featChunked)
	}
	sb[12] = 12 // blkszbits
	binary.LittleEndian.PutUint16(sb[14:], uint16(im.nodes[0].nid))
	binary.LittleEndian.PutUint64(sb[16:], uint64(len(im.nodes)))
	binary.LittleEndian.PutUint64(sb[24:], uint64(im.epoch))
	binary.LittleEndian.PutUint32(sb[36:], uint32(im.blocks))
	// meta_blkaddr = xattr_blkaddr = 0
	copy(sb[48:64], im.uuid[:])
	// The checksum is crc32c (seed ~0, no final inversion) over the rest
	// of block 0 from the superblock on, with the checksum field zero.
	crc := ^crc32.Checksum(m[superOffset:BlockSize], crc32.MakeTable(crc32.Castagnoli))
	binary.LittleEndian.PutUint32(sb[4:], crc)
	_, err := w.WriteAt(m, 0)
	return err
}

// writeData writes directory blocks, symlink targets and file contents.
func (im *image) writeData(w io.WriterAt, o Options, digests map[string][32]byte) error {
	for i := range im.nodes {
		n := &im.nodes[i]
		off := int64(n.blkaddr) * BlockSize
		switch n.e.Type {
		case fstree.Dir:
			var buf bytes.Buffer
			for _, blk := range packDir(im.dirents(i)) {
				buf.Write(encodeDirBlock(blk))
			}
			if _, err := w.WriteAt(buf.Bytes(), off); err != nil {
				return err
			}
		case fstree.Symlink:
			b := make([]byte, BlockSize)
			copy(b, n.e.Target)
			if _, err := w.WriteAt(b, off); err != nil {
				return err
			}
		}
	}
	c := copier{w: w, progress: o.Progress}
	defer c.close()
	for i := range im.nodes {
		n := &im.nodes[i]
		if n.e.Type != fstree.File {
			continue
		}
		sum, err := c.copyFile(n, digests != nil)
		if err != nil {
			return err
		}
		if digests != nil {
			digests[n.e.Path] = sum
		}
	}
	return nil
}

// copier streams file contents into the image with a pair of buffers so
// that hashing one chunk overlaps reading and writing the next.
type copier struct {
	w        io.WriterAt
	bufs     [2][]byte
	progress func(int64)
	done     int64
}

func (c *copier) close() { c.bufs = [2][]byte{} }

func (c *copier) copyFile(n *node, digest bool) ([32]byte, error) {
	var sum [32]byte
	e := &n.e
	var src io.Reader
	if e.Source == "" {
		src = bytes.NewReader(e.Data)
	} else {
		f, err := os.Open(e.Source)
		if err != nil {
			return sum, fmt.Errorf("erofs: %s: %w", e.Path, err)
		}
		defer f.Close()
		src = f
	}
	if c.bufs[0] == nil {
		c.bufs = [2][]byte{make([]byte, copyBufSize), make([]byte, copyBufSize)}
	}
	var h hash.Hash
	if digest {
		h = sha256.New()
	}
	hashDone := make(chan struct{}, 1)
	hashDone <- struct{}{}
	off := int64(n.blkaddr) * BlockSize
	var total int64
	for k := 0; ; k++ {
		buf := c.bufs[k&1]
		nr, rerr := io.ReadFull(src, buf)
		if nr > 0 {
			if total+int64(nr) > e.Size {
				<-hashDone
				return sum, fmt.Errorf("erofs: %s: source %s is larger than the recorded size %d; it changed during the build", e.Path, e.Source, e.Size)
			}
			chunk := buf[:nr]
			// Pad the final partial block with zeros so the image
			// bytes never depend on what the writer held before.
			if total+int64(nr) == e.Size && nr%BlockSize != 0 {
				pad := BlockSize - nr%BlockSize
				if nr+pad <= len(buf) {
					clear(buf[nr : nr+pad])
					chunk = buf[:nr+pad]
				}
			}
			<-hashDone // the other buffer's hash is finished; safe to reuse next round
			if h != nil {
				go func(p []byte) { h.Write(p); hashDone <- struct{}{} }(buf[:nr])
			} else {
				hashDone <- struct{}{}
			}
			if _, err := c.w.WriteAt(chunk, off+total); err != nil {
				<-hashDone
				return sum, fmt.Errorf("erofs: writing %s: %w", e.Path, err)
			}
			total += int64(nr)
			c.done += int64(nr)
			if c.progress != nil {
				c.progress(c.done)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			<-hashDone
			return sum, fmt.Errorf("erofs: reading %s: %w", e.Source, rerr)
		}
	}
	<-hashDone
	if total != e.Size {
		return sum, fmt.Errorf("erofs: %s: source %s has %d bytes, the tree says %d; it changed during the build", e.Path, e.Source, total, e.Size)
	}
	if h != nil {
		copy(sum[:], h.Sum(nil))
	}
	return sum, nil
}
