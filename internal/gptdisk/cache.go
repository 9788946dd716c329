package gptdisk

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/tdforge/tdforge/internal/atomicfile"
	"github.com/tdforge/tdforge/internal/erofs"
	"github.com/tdforge/tdforge/internal/fstree"
	"github.com/tdforge/tdforge/internal/verity"
)

// cacheFormat names the partition encoding; bump it whenever the EROFS or
// verity bytes for the same input change, to invalidate old entries.
const cacheFormat = "tdforge-partition-v1 erofs-plain-4k verity-v1-sha256-4k"

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

const digestsFile = "file-digests.json"

func openCache(dir string) (*cache, error) {
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
	if !c.dirty {
		return nil
	}
	b, err := json.Marshal(c.digests)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(c.dir, digestsFile), b, 0o644); err != nil {
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

// partition returns the cached partition for (name, tree), building it on
// a miss.
func (c *cache) partition(ctx context.Context, name string, tree *fstree.Tree, progress func(done, total int64)) (cachedPart, error) {
	t := &fstree.Tree{Epoch: tree.Epoch, Entries: append([]fstree.Entry(nil), tree.Entries...)}
	if err := t.Normalize(); err != nil {
		return cachedPart{}, fmt.Errorf("payload %q: %w", name, err)
	}
	// Identify every source file; known digests come from the stat cache.
	ids := make([]fileID, len(t.Entries))
	abs := make([]string, len(t.Entries))
	known := true
	var fileBytes int64
	for i, e := range t.Entries {
		if e.Type != fstree.File {
			continue
		}
		fileBytes += e.Size
		if e.Source == "" {
			ids[i].SHA256 = hex.EncodeToString(sha256sum(e.Data))
			continue
		}
		a, id, err := statID(e.Source)
		if err != nil {
			return cachedPart{}, fmt.Errorf("payload %q: %s: %w", name, e.Path, err)
		}
		if id.Size != e.Size {
			return cachedPart{}, fmt.Errorf("payload %q: %s: source %s is %d bytes but the tree says %d; re-evaluate the manifest", name, e.Path, e.Source, id.Size, e.Size)
		}
		abs[i] = a
		if old, ok := c.digests[a]; ok && old.same(id) {
			id.SHA256 = old.SHA256
		} else {
			known = false
		}
		ids[i] = id
	}
	digestOf := func(i int) [32]byte {
		var d [32]byte
		hex.Decode(d[:], []byte(ids[i].SHA256))
		return d
	}
	dataSize, err := erofs.Size(t)
	if err != nil {
		return cachedPart{}, fmt.Errorf("payload %q: %w", name, err)
	}
	total := fileBytes + dataSize
	if known {
		if cp, ok := c.lookup(partKey(name, contentKey(t, digestOf))); ok && cp.meta.Name == name {
			if progress != nil {
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
	var eprog func(int64)
	if progress != nil {
		eprog = func(d int64) { progress(d, total) }
	}
	res, err := erofs.WriteTree(tmp, t, erofs.Options{Digests: true, Progress: eprog})
	if err != nil {
		return cachedPart{}, fmt.Errorf("payload %q: %w", name, err)
	}
	if res.Size != dataSize {
		return cachedPart{}, fmt.Errorf("payload %q: internal error: EROFS size %d, planned %d", name, res.Size, dataSize)
	}
	// Record digests; a source that changed while it was read is an error
	// (its digest would be attached to the wrong identity).
	for i, e := range t.Entries {
		if e.Type != fstree.File || e.Source == "" {
			if e.Type == fstree.File {
				ids[i].SHA256 = hex.EncodeToString(sha256sum(e.Data))
			}
			continue
		}
		_, now, err := statID(e.Source)
		if err != nil || !now.same(ids[i]) {
			return cachedPart{}, fmt.Errorf("payload %q: %s: source %s changed during the build; rebuild", name, e.Path, e.Source)
		}
		d := res.Digests[e.Path]
		ids[i].SHA256 = hex.EncodeToString(d[:])
		c.digests[abs[i]] = ids[i]
		c.dirty = true
	}
	if err := ctx.Err(); err != nil {
		return cachedPart{}, err
	}
	key := contentKey(t, digestOf)
	salt := Salt(name, key)
	var vprog func(int64)
	if progress != nil {
		vprog = func(d int64) { progress(fileBytes+d, total) }
	}
	vr, err := verity.BuildProgress(tmp, dataSize, salt, tmp, dataSize, vprog)
	if err != nil {
		return cachedPart{}, fmt.Errorf("payload %q: %w", name, err)
	}
	size := (uint64(dataSize+vr.HashSize) + align - 1) / align * align
	if err := tmp.Truncate(int64(size)); err != nil {
		return cachedPart{}, fmt.Errorf("payload cache: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return cachedPart{}, fmt.Errorf("payload cache: %w", err)
	}
	m := partMeta{
		Format: cacheFormat, Name: name, ContentKey: hex.EncodeToString(key[:]),
		DataSize: uint64(dataSize), HashOffset: uint64(dataSize), Size: size,
		RootHash: hex.EncodeToString(vr.RootHash), Salt: hex.EncodeToString(salt),
	}
	pk := partKey(name, key)
	final := filepath.Join(c.dir, "parts", pk+".part")
	if err := os.Rename(tmp.Name(), final); err != nil {
		return cachedPart{}, fmt.Errorf("payload cache: %w", err)
	}
	mb, _ := json.MarshalIndent(m, "", "  ")
	if err := atomicfile.WriteFile(filepath.Join(c.dir, "parts", pk+".json"), mb, 0o644); err != nil {
		return cachedPart{}, fmt.Errorf("payload cache: %w", err)
	}
	return cachedPart{path: final, meta: m}, nil
}

func sha256sum(b []byte) []byte {
	d := sha256.Sum256(b)
	return d[:]
}
