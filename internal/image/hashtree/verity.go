// Package hashtree builds dm-verity hash trees in the standard on-disk format
// (veritysetup "format 1": sha256, 4096-byte data and hash blocks, salt
// prepended to every hashed block, a 512-byte superblock at the start of
// the hash area padded to one hash block).
//
// Hash area layout from hashOffset:
//
//	block 0:      superblock (512 bytes, rest zero)
//	blocks 1..:   tree levels, top (single block) first, data-level hashes last
//
// The kernel table's hash_start_block is therefore hashOffset/4096 + 1.
package hashtree

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
)

const (
	// BlockSize is both the data and the hash block size.
	BlockSize = 4096
	// HashAlg names the tree's hash as dm-verity and veritysetup spell it.
	HashAlg = "sha256"
	// SuperblockSize is the size of the verity superblock.
	SuperblockSize = 512
	hashSize       = sha256.Size
	hashesPerBlock = BlockSize / hashSize // 128
	maxSalt        = 256
	chunkBlocks    = 1024 // data blocks hashed per work item (4 MiB)
)

// Result describes a built hash tree.
type Result struct {
	RootHash   []byte
	Salt       []byte
	DataBlocks uint64
	// HashSize is the size of the hash area in bytes, superblock included.
	HashSize int64
	// UUID is the superblock UUID (derived from the root hash).
	UUID [16]byte
}

// HashStartBlock is the kernel table's <hash_start_block> for a hash area
// at hashOffset: the block after the superblock.
func HashStartBlock(hashOffset int64) uint64 { return uint64(hashOffset)/BlockSize + 1 }

// levelBlocks returns the number of hash blocks per level, level 0 (hashes
// of data blocks) first, using the kernel's level count rule.
func levelBlocks(dataBlocks uint64) []uint64 {
	var out []uint64
	for lvl := 0; lvl*7 < 64 && (dataBlocks-1)>>(7*lvl) != 0; lvl++ {
		shift := uint(7 * (lvl + 1))
		n := (dataBlocks + (uint64(1)<<shift - 1)) >> shift
		if shift >= 64 {
			n = 1
		}
		out = append(out, n)
	}
	return out
}

// HashAreaSize returns the size of the hash area (superblock included) for
// dataSize bytes of data.
func HashAreaSize(dataSize int64) int64 {
	var n uint64 = 1
	for _, b := range levelBlocks(uint64(dataSize) / BlockSize) {
		n += b
	}
	return int64(n) * BlockSize
}

// Build hashes dataSize bytes of data (a multiple of BlockSize) and writes
// the superblock and hash tree to out at hashOffset. Data is read once, in
// parallel chunks; memory use is bounded by a few chunks.
func Build(data io.ReaderAt, dataSize int64, salt []byte, out io.WriterAt, hashOffset int64) (Result, error) {
	return BuildProgress(data, dataSize, salt, out, hashOffset, nil)
}

// BuildProgress is Build calling progress with the number of data bytes
// hashed so far.
func BuildProgress(data io.ReaderAt, dataSize int64, salt []byte, out io.WriterAt, hashOffset int64, progress func(done int64)) (Result, error) {
	if dataSize <= 0 || dataSize%BlockSize != 0 {
		return Result{}, fmt.Errorf("verity: data size %d must be a positive multiple of %d", dataSize, BlockSize)
	}
	if len(salt) > maxSalt {
		return Result{}, fmt.Errorf("verity: salt is %d bytes, at most %d allowed", len(salt), maxSalt)
	}
	if hashOffset < 0 || hashOffset%BlockSize != 0 {
		return Result{}, fmt.Errorf("verity: hash offset %d must be a non-negative multiple of %d", hashOffset, BlockSize)
	}
	dataBlocks := uint64(dataSize / BlockSize)
	levels := levelBlocks(dataBlocks)
	// Level offsets: top level first, right after the superblock block.
	levelOff := make([]int64, len(levels))
	pos := hashOffset + BlockSize
	for i := len(levels) - 1; i >= 0; i-- {
		levelOff[i] = pos
		pos += int64(levels[i]) * BlockSize
	}
	res := Result{Salt: append([]byte(nil), salt...), DataBlocks: dataBlocks, HashSize: pos - hashOffset}

	tw := &treeWriter{out: out, salt: salt, levelOff: levelOff, pending: make([][]byte, len(levels))}
	var root []byte
	if len(levels) == 0 {
		// One data block: its hash is the root.
		b := make([]byte, BlockSize)
		if _, err := data.ReadAt(b, 0); err != nil {
			return Result{}, fmt.Errorf("verity: reading data: %w", err)
		}
		root = saltedHash(sha256.New(), salt, b, nil)
		if progress != nil {
			progress(BlockSize)
		}
	} else {
		err := hashData(data, dataBlocks, salt, func(level0 []byte, done uint64) error {
			if progress != nil {
				progress(int64(done) * BlockSize)
			}
			return tw.add(0, level0)
		})
		if err != nil {
			return Result{}, err
		}
		if root, err = tw.finish(); err != nil {
			return Result{}, err
		}
	}
	res.RootHash = root
	uh := sha256.Sum256(append([]byte("tdforge/v1/verity-uuid\x00"), root...))
	copy(res.UUID[:], uh[:16])
	res.UUID[6] = res.UUID[6]&0x0f | 0x80 // RFC 9562 version 8
	res.UUID[8] = res.UUID[8]&0x3f | 0x80
	sb := make([]byte, BlockSize)
	encodeSuperblock(sb, res, dataBlocks)
	if _, err := out.WriteAt(sb, hashOffset); err != nil {
		return Result{}, fmt.Errorf("verity: writing superblock: %w", err)
	}
	return res, nil
}

func encodeSuperblock(b []byte, r Result, dataBlocks uint64) {
	copy(b[0:8], "verity\x00\x00")
	binary.LittleEndian.PutUint32(b[8:], 1)  // superblock version
	binary.LittleEndian.PutUint32(b[12:], 1) // hash type: normal (salt first)
	copy(b[16:32], r.UUID[:])
	copy(b[32:64], HashAlg)
	binary.LittleEndian.PutUint32(b[64:], BlockSize)
	binary.LittleEndian.PutUint32(b[68:], BlockSize)
	binary.LittleEndian.PutUint64(b[72:], dataBlocks)
	binary.LittleEndian.PutUint16(b[80:], uint16(len(r.Salt)))
	copy(b[88:88+maxSalt], r.Salt)
}

// ParseSuperblock decodes a verity superblock, returning the salt and the
// number of data blocks. It rejects anything but sha256/4096/format 1.
func ParseSuperblock(b []byte) (salt []byte, dataBlocks uint64, err error) {
	if len(b) < SuperblockSize || string(b[0:8]) != "verity\x00\x00" {
		return nil, 0, errors.New("verity: no verity superblock")
	}
	alg := string(b[32:64])
	if binary.LittleEndian.Uint32(b[8:]) != 1 || binary.LittleEndian.Uint32(b[12:]) != 1 ||
		alg[:7] != "sha256\x00" || binary.LittleEndian.Uint32(b[64:]) != BlockSize || binary.LittleEndian.Uint32(b[68:]) != BlockSize {
		return nil, 0, errors.New("verity: superblock is not format 1 / sha256 / 4096-byte blocks")
	}
	n := binary.LittleEndian.Uint16(b[80:])
	if n > maxSalt {
		return nil, 0, fmt.Errorf("verity: superblock salt size %d > %d", n, maxSalt)
	}
	return append([]byte(nil), b[88:88+int(n)]...), binary.LittleEndian.Uint64(b[72:]), nil
}

// saltedHash returns SHA-256(salt || block) appended to dst.
func saltedHash(h interface {
	Reset()
	Write([]byte) (int, error)
	Sum([]byte) []byte
}, salt, block, dst []byte) []byte {
	h.Reset()
	h.Write(salt)
	h.Write(block)
	return h.Sum(dst)
}

// hashData hashes data blocks in parallel chunks and hands level-0 hash
// blocks (zero padded) to emit in order.
func hashData(data io.ReaderAt, dataBlocks uint64, salt []byte, emit func(level0 []byte, done uint64) error) error {
	workers := runtime.GOMAXPROCS(0)
	if workers > 8 {
		workers = 8
	}
	nchunks := (dataBlocks + chunkBlocks - 1) / chunkBlocks
	type result struct {
		hashes []byte
		err    error
	}
	pool := sync.Pool{New: func() any { return make([]byte, chunkBlocks*BlockSize) }}
	results := make(chan chan result, workers)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		defer close(results)
		sem := make(chan struct{}, workers)
		for c := uint64(0); c < nchunks; c++ {
			ch := make(chan result, 1)
			select {
			case results <- ch:
			case <-stop:
				return
			}
			sem <- struct{}{}
			go func(c uint64) {
				defer func() { <-sem }()
				first := c * chunkBlocks
				n := min(uint64(chunkBlocks), dataBlocks-first)
				buf := pool.Get().([]byte)
				defer pool.Put(buf)
				b := buf[:n*BlockSize]
				if _, err := data.ReadAt(b, int64(first)*BlockSize); err != nil {
					ch <- result{err: fmt.Errorf("verity: reading data block %d: %w", first, err)}
					return
				}
				hashes := make([]byte, 0, n*hashSize)
				h := sha256.New()
				for i := uint64(0); i < n; i++ {
					hashes = saltedHash(h, salt, b[i*BlockSize:(i+1)*BlockSize], hashes)
				}
				ch <- result{hashes: hashes}
			}(c)
		}
	}()
	// chunkBlocks is a multiple of hashesPerBlock, so chunk boundaries are
	// level-0 block boundaries.
	var done uint64
	for ch := range results {
		r := <-ch
		if r.err != nil {
			return r.err
		}
		done += uint64(len(r.hashes) / hashSize)
		for off := 0; off < len(r.hashes); off += BlockSize {
			blk := make([]byte, BlockSize)
			copy(blk, r.hashes[off:min(off+BlockSize, len(r.hashes))])
			if err := emit(blk, done); err != nil {
				return err
			}
		}
	}
	return nil
}

// treeWriter writes hash blocks level by level, in order, feeding each
// block's hash into the next level's pending block.
type treeWriter struct {
	out      io.WriterAt
	salt     []byte
	levelOff []int64
	written  []int64
	pending  [][]byte // partially filled block per level above 0
	h        interface {
		Reset()
		Write([]byte) (int, error)
		Sum([]byte) []byte
	}
	top []byte
}

func (t *treeWriter) add(level int, blk []byte) error {
	if t.written == nil {
		t.written = make([]int64, len(t.levelOff))
		t.h = sha256.New()
	}
	if _, err := t.out.WriteAt(blk, t.levelOff[level]+t.written[level]*BlockSize); err != nil {
		return fmt.Errorf("verity: writing hash block: %w", err)
	}
	t.written[level]++
	if level == len(t.levelOff)-1 {
		t.top = blk
		return nil
	}
	t.pending[level+1] = saltedHash(t.h, t.salt, blk, t.pending[level+1])
	if len(t.pending[level+1]) == BlockSize {
		full := t.pending[level+1]
		t.pending[level+1] = nil
		return t.add(level+1, full)
	}
	return nil
}

// finish flushes partial blocks from the bottom up and returns the root hash.
func (t *treeWriter) finish() ([]byte, error) {
	for lvl := 1; lvl < len(t.levelOff); lvl++ {
		if p := t.pending[lvl]; len(p) > 0 {
			blk := make([]byte, BlockSize)
			copy(blk, p)
			t.pending[lvl] = nil
			if err := t.add(lvl, blk); err != nil {
				return nil, err
			}
		}
	}
	if t.top == nil {
		return nil, errors.New("verity: internal error: no top-level block")
	}
	return saltedHash(sha256.New(), t.salt, t.top, nil), nil
}
