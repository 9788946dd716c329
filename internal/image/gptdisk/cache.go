package gptdisk

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/tdforge/tdforge/internal/fsutil"
	"github.com/tdforge/tdforge/internal/image/crypt"
	"github.com/tdforge/tdforge/internal/image/erofs"
	"github.com/tdforge/tdforge/internal/image/fstree"
	"github.com/tdforge/tdforge/internal/image/hashtree"
)

// cacheFormat names the partition encoding; bump it whenever the EROFS or
// verity bytes for the same input change, to invalidate old entries.
const cacheFormat = "tdforge-partition-v2 erofs-plain+chunked-4k verity-v1-sha256-4k"

// partMeta is a cached partition's description (parts/<key>.json).
type partMeta struct {
	Format     string `json:"format"`
	Name       string `json:"name"`
	ContentKey string `json:"content_key"`
	DataSize   uint64 `json:"data_size"`
	HashOffset uint64 `json:"hash_offset"`
	Size       uint64 `json:"size"`
	RootHash   string `json:"root_hash"`
	Salt       string `json:"salt"`
	Encrypted  bool   `json:"encrypted,omitempty"`
}

type cachedPart struct {
	path string // partition image, exactly meta.Size bytes
	meta partMeta
}

// fileID identifies a source file's content without reading it, like a
// build system's stat cache.
type fileID struct {
	Size   int64  `json:"size"`
	Mtime  int64  `json:"mtime_ns"`
	Ctime  int64  `json:"ctime_ns"`
	Ino    uint64 `json:"ino"`
	Dev    uint64 `json:"dev"`
	SHA256 string `json:"sha256"`
}

func (a fileID) same(b fileID) bool {
	return a.Size == b.Size && a.Mtime == b.Mtime && a.Ctime == b.Ctime && a.Ino == b.Ino && a.Dev == b.Dev
}

type cache struct {
	dir     string
	digests map[string]fileID // absolute source path -> identity + digest
	dirty   bool
}

const (
	digestsFile = "file-digests.json"
	outputsFile = "outputs.json"
)

// outputRecord remembers a disk this cache wrote: its file identity and
// the SHA-256 of its layout JSON.
type outputRecord struct {
	ID     fileID `json:"id"`
	Layout string `json:"layout_sha256"`
}

func layoutDigest(l *Layout) string {
	b, _ := l.Marshal()
	return hex.EncodeToString(sha256sum(b))
}

func (c *cache) readOutputs() map[string]outputRecord {
	m := map[string]outputRecord{}
	if b, err := os.ReadFile(filepath.Join(c.dir, outputsFile)); err == nil {
		json.Unmarshal(b, &m)
	}
	return m
}

// outputUnchanged reports whether out is exactly the disk this cache last
// wrote there for the same layout (same inode, size, mtime and ctime), so
// a no-change rebuild need not rewrite it.
func (c *cache) outputUnchanged(out string, l *Layout) bool {
	abs, id, err := statID(out)
	if err != nil {
		return false
	}
	r, ok := c.readOutputs()[abs]
	return ok && r.ID.same(id) && r.Layout == layoutDigest(l)
}

func (c *cache) recordOutput(out string, l *Layout) error {
	abs, id, err := statID(out)
	if err != nil {
		return fmt.Errorf("payload disk: %w", err)
	}
	m := c.readOutputs()
	m[abs] = outputRecord{ID: id, Layout: layoutDigest(l)}
	b, _ := json.Marshal(m)
	if err := fsutil.WriteFile(filepath.Join(c.dir, outputsFile), b, 0o644); err != nil {
		return fmt.Errorf("payload cache: %w", err)
	}
	return nil
}

func openCache(dir string) (*cache, error) {
	if dir == "" { // in-memory stat cache only
		return &cache{digests: map[string]fileID{}}, nil
	}
	if err := os.MkdirAll(filepath.Join(dir, "parts"), 0o755); err != nil {
		return nil, fmt.Errorf("payload cache: %w", err)
	}
	c := &cache{dir: dir, digests: map[string]fileID{}}
	b, err := os.ReadFile(filepath.Join(dir, digestsFile))
	if err == nil {
		if json.Unmarshal(b, &c.digests) != nil {
			c.digests = map[string]fileID{} // a corrupt stat cache only costs a rehash
		}
	} else if !os.IsNotExist(err) {
		return nil, fmt.Errorf("payload cache: %w", err)
	}
	return c, nil
}

func (c *cache) saveDigests() error {
	if !c.dirty || c.dir == "" {
		return nil
	}
	b, err := json.Marshal(c.digests)
	if err != nil {
		return err
	}
	if err := fsutil.WriteFile(filepath.Join(c.dir, digestsFile), b, 0o644); err != nil {
		return fmt.Errorf("payload cache: %w", err)
	}
	c.dirty = false
	return nil
}

func statID(p string) (string, fileID, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fileID{}, err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(abs, &st); err != nil {
		return "", fileID{}, err
	}
	return abs, fileID{
		Size:  st.Size,
		Mtime: st.Mtim.Sec*1e9 + st.Mtim.Nsec,
		Ctime: st.Ctim.Sec*1e9 + st.Ctim.Nsec,
		Ino:   st.Ino,
		Dev:   st.Dev,
	}, nil
}

// contentKey is SHA-256 over the normalized tree listing with each file's
// content digest. digest(i) returns the digest of entry i.
func contentKey(t *fstree.Tree, digest func(i int) [32]byte) [32]byte {
	h := sha256.New()
	fmt.Fprintf(h, "tdforge/v1/payload-content\nepoch %d\n", t.Epoch)
	for i, e := range t.Entries {
		var d [32]byte
		if e.Type == fstree.File {
			d = digest(i)
		}
		fmt.Fprintf(h, "%d %q %o %d %q %x\n", e.Type, e.Path, e.Mode, e.Size, e.Target, d)
	}
	var k [32]byte
	copy(k[:], h.Sum(nil))
	return k
}

// Salt returns the verity salt of a payload: SHA-256 over a fixed label,
// the payload name and its content key.
func Salt(name string, contentKey [32]byte) []byte {
	h := sha256.New()
	h.Write([]byte("tdforge/v1/verity-salt\x00" + name + "\x00"))
	h.Write(contentKey[:])
	return h.Sum(nil)
}

// encryptedContentKey is the content key of an encrypted payload: a digest
// of the plaintext content key and of the key's digest. It addresses the
// cached ciphertext and seeds the public salt and GUIDs without letting
// anyone who lacks the key test a guess at the plaintext.
func encryptedContentKey(plain [32]byte, key []byte) [32]byte {
	kd := sha256.Sum256(append([]byte("tdforge/v1/payload-key\x00"), key...))
	h := sha256.New()
	h.Write([]byte("tdforge/v1/encrypted-content\x00" + crypt.Cipher + "\x00"))
	h.Write(plain[:])
	h.Write(kd[:])
	var k [32]byte
	copy(k[:], h.Sum(nil))
	return k
}

func partKey(name string, key [32]byte) string {
	h := sha256.New()
	h.Write([]byte(cacheFormat + "\x00" + name + "\x00"))
	h.Write(key[:])
	return hex.EncodeToString(h.Sum(nil))
}

func (c *cache) lookup(pk string) (cachedPart, bool) {
	b, err := os.ReadFile(filepath.Join(c.dir, "parts", pk+".json"))
	if err != nil {
		return cachedPart{}, false
	}
	var m partMeta
	if json.Unmarshal(b, &m) != nil || m.Format != cacheFormat {
		return cachedPart{}, false
	}
	p := filepath.Join(c.dir, "parts", pk+".part")
	if st, err := os.Stat(p); err != nil || uint64(st.Size()) != m.Size {
		return cachedPart{}, false
	}
	return cachedPart{path: p, meta: m}, true
}

// prepared is a normalized payload tree with its source identities.
type prepared struct {
	name      string
	tree      *fstree.Tree
	ids       []fileID // per entry; SHA256 filled when known
	abs       []string // per entry: absolute source path
	known     bool     // every file digest is known without reading
	fileBytes int64
	dataSize  int64 // EROFS image size
	size      uint64
	key       []byte // dm-crypt key, or nil
}

// contentKey is the payload's content key (encryptedContentKey when it is
// encrypted); every file digest must be known.
func (p *prepared) contentKey() [32]byte {
	k := contentKey(p.tree, p.digest)
	if p.key != nil {
		k = encryptedContentKey(k, p.key)
	}
	return k
}

func (p *prepared) digest(i int) [32]byte {
	var d [32]byte
	hex.Decode(d[:], []byte(p.ids[i].SHA256))
	return d
}

// prepare normalizes a payload tree and identifies its sources; digests
// come from the stat cache where the identity is unchanged.
func (c *cache) prepare(name string, tree *fstree.Tree, key []byte) (*prepared, error) {
	if key != nil && len(key) != crypt.KeySize {
		return nil, fmt.Errorf("payload %q: a %s key is %d bytes, not %d", name, crypt.Cipher, crypt.KeySize, len(key))
	}
	t := &fstree.Tree{Epoch: tree.Epoch, Entries: append([]fstree.Entry(nil), tree.Entries...)}
	if err := t.Normalize(); err != nil {
		return nil, fmt.Errorf("payload %q: %w", name, err)
	}
	p := &prepared{name: name, tree: t, ids: make([]fileID, len(t.Entries)), abs: make([]string, len(t.Entries)), known: true, key: key}
	for i, e := range t.Entries {
		if e.Type != fstree.File {
			continue
		}
		p.fileBytes += e.Size
		if e.Source == "" {
			p.ids[i].SHA256 = hex.EncodeToString(sha256sum(e.Data))
			continue
		}
		a, id, err := statID(e.Source)
		if err != nil {
			return nil, fmt.Errorf("payload %q: %s: %w", name, e.Path, err)
		}
		if id.Size != e.Size {
			return nil, fmt.Errorf("payload %q: %s: source %s is %d bytes but the tree says %d; re-evaluate the manifest", name, e.Path, e.Source, id.Size, e.Size)
		}
		p.abs[i] = a
		if old, ok := c.digests[a]; ok && old.same(id) {
			id.SHA256 = old.SHA256
		} else {
			p.known = false
		}
		p.ids[i] = id
	}
	var err error
	if p.dataSize, err = erofs.Size(t); err != nil {
		return nil, fmt.Errorf("payload %q: %w", name, err)
	}
	if key != nil && p.dataSize%crypt.SectorSize != 0 {
		return nil, fmt.Errorf("payload %q: internal error: EROFS size %d is not a multiple of the %d-byte dm-crypt sector", name, p.dataSize, crypt.SectorSize)
	}
	p.size = partSize(p.dataSize)
	return p, nil
}

// partSize is the partition size for an EROFS image of dataSize bytes:
// image, hash area, rounded up to the 1 MiB alignment.
func partSize(dataSize int64) uint64 {
	return (uint64(dataSize+hashtree.HashAreaSize(dataSize)) + align - 1) / align * align
}

// section addresses a file region starting at base.
type section struct {
	f    *os.File
	base int64
}

func (s section) ReadAt(b []byte, off int64) (int, error)  { return s.f.ReadAt(b, s.base+off) }
func (s section) WriteAt(b []byte, off int64) (int, error) { return s.f.WriteAt(b, s.base+off) }

// buildInto encodes the payload into f at base (EROFS image, then the
// verity hash area at data_size), recording file digests in the cache.
func (c *cache) buildInto(ctx context.Context, f *os.File, base int64, p *prepared, progress func(done, total int64)) (partMeta, error) {
	total := p.fileBytes + p.dataSize
	sec := section{f, base}
	var eprog func(int64)
	if progress != nil {
		eprog = func(d int64) { progress(d, total) }
	}
	res, err := erofs.WriteTree(sec, p.tree, erofs.Options{Digests: true, Progress: eprog})
	if err != nil {
		return partMeta{}, fmt.Errorf("payload %q: %w", p.name, err)
	}
	if res.Size != p.dataSize {
		return partMeta{}, fmt.Errorf("payload %q: internal error: EROFS size %d, planned %d", p.name, res.Size, p.dataSize)
	}
	// Record digests; a source that changed while it was read is an error
	// (its digest would be attached to the wrong identity).
	for i, e := range p.tree.Entries {
		if e.Type != fstree.File || e.Source == "" {
			continue
		}
		_, now, err := statID(e.Source)
		if err != nil || !now.same(p.ids[i]) {
			return partMeta{}, fmt.Errorf("payload %q: %s: source %s changed during the build; rebuild", p.name, e.Path, e.Source)
		}
		d := res.Digests[e.Path]
		p.ids[i].SHA256 = hex.EncodeToString(d[:])
		c.digests[p.abs[i]] = p.ids[i]
		c.dirty = true
	}
	if err := ctx.Err(); err != nil {
		return partMeta{}, err
	}
	key := p.contentKey()
	salt := Salt(p.name, key)
	var vprog func(int64)
	if progress != nil {
		vprog = func(d int64) { progress(p.fileBytes+d, total) }
	}
	// The hash tree covers the ciphertext: an encrypted payload's image is
	// encrypted in place as the tree builder reads it.
	var data io.ReaderAt = sec
	var enc *crypt.Encrypter
	if p.key != nil {
		if enc, err = crypt.NewEncrypter(sec, p.dataSize, p.key); err != nil {
			return partMeta{}, fmt.Errorf("payload %q: %w", p.name, err)
		}
		data = enc
	}
	vr, err := hashtree.BuildProgress(data, p.dataSize, salt, sec, p.dataSize, vprog)
	if err == nil && enc != nil {
		err = enc.Finish()
	}
	if err != nil {
		return partMeta{}, fmt.Errorf("payload %q: %w", p.name, err)
	}
	return partMeta{
		Format: cacheFormat, Name: p.name, ContentKey: hex.EncodeToString(key[:]),
		DataSize: uint64(p.dataSize), HashOffset: uint64(p.dataSize), Size: p.size,
		RootHash: hex.EncodeToString(vr.RootHash), Salt: hex.EncodeToString(salt),
		Encrypted: p.key != nil,
	}, nil
}

// partition returns the cached partition for p, building it on a miss.
func (c *cache) partition(ctx context.Context, p *prepared, progress func(done, total int64)) (cachedPart, error) {
	if p.known {
		if cp, ok := c.lookup(partKey(p.name, p.contentKey())); ok && cp.meta.Name == p.name && cp.meta.Encrypted == (p.key != nil) {
			if progress != nil {
				total := p.fileBytes + p.dataSize
				progress(total, total)
			}
			return cp, nil
		}
	}
	tmp, err := os.CreateTemp(filepath.Join(c.dir, "parts"), ".build-*")
	if err != nil {
		return cachedPart{}, fmt.Errorf("payload cache: %w", err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	m, err := c.buildInto(ctx, tmp, 0, p, progress)
	if err != nil {
		return cachedPart{}, err
	}
	// Zero tail up to the partition size (a hole), then make the image
	// durable before it is published under its content address.
	if err := tmp.Truncate(int64(m.Size)); err != nil {
		return cachedPart{}, fmt.Errorf("payload cache: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return cachedPart{}, fmt.Errorf("payload cache: %w", err)
	}
	key, _ := hex.DecodeString(m.ContentKey)
	pk := partKey(p.name, [32]byte(key))
	final := filepath.Join(c.dir, "parts", pk+".part")
	if err := os.Rename(tmp.Name(), final); err != nil {
		return cachedPart{}, fmt.Errorf("payload cache: %w", err)
	}
	mb, _ := json.MarshalIndent(m, "", "  ")
	if err := fsutil.WriteFile(filepath.Join(c.dir, "parts", pk+".json"), mb, 0o644); err != nil {
		return cachedPart{}, fmt.Errorf("payload cache: %w", err)
	}
	return cachedPart{path: final, meta: m}, nil
}

func sha256sum(b []byte) []byte {
	d := sha256.Sum256(b)
	return d[:]
}
