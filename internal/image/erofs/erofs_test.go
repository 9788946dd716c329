package erofs

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/image/fstree"
)

// variedTree builds a tree with nested dirs, empty and odd-sized files,
// symlinks, long names, names sorting before "." and a directory whose
// entries span several dirent blocks. Host sources live in dir.
func variedTree(t *testing.T, dir string) *fstree.Tree {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	tr := &fstree.Tree{Epoch: 1700000000}
	addSrc := func(p string, size int, mode fs.FileMode) {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		src := filepath.Join(dir, fmt.Sprintf("src%d", len(tr.Entries)))
		if err := os.WriteFile(src, b, 0o600); err != nil {
			t.Fatal(err)
		}
		tr.Entries = append(tr.Entries, fstree.Entry{Path: p, Type: fstree.File, Mode: mode, Source: src, Size: int64(size)})
	}
	addSrc("bin/tool", 1<<20+123, 0o755)
	addSrc("bin/exact-block", BlockSize, 0o755)
	addSrc("bin/exact-mib", 1<<20, 0o644)
	addSrc("bin/two-mib-plus-one", 2<<20+1, 0o644)
	addSrc("empty", 0, 0o600)
	addSrc("models/chunked.bin", 2*ChunkSize+4097, 0o644) // chunk-based, 3 chunks
	addSrc("models/flat-max.bin", ChunkSize, 0o644)       // largest flat file
	addSrc("a/b/c/d/e/deep.txt", 5, 0o640)
	addSrc(strings.Repeat("L", 255), 77, 0o644)
	addSrc("-dash", 1, 0o644) // sorts before "." and ".."
	addSrc("!bang", 2, 0o644)
	tr.Entries = append(tr.Entries,
		fstree.Entry{Path: "inline.txt", Type: fstree.File, Mode: 0o444, Data: []byte("hello\n"), Size: 6},
		fstree.Entry{Path: "emptydir", Type: fstree.Dir, Mode: 0o700},
		fstree.Entry{Path: "lib/libx.so", Type: fstree.Symlink, Target: "libx.so.1"},
		fstree.Entry{Path: "lib/abs", Type: fstree.Symlink, Target: "/usr/share/" + strings.Repeat("t", 300)},
		fstree.Entry{Path: "lib/dangling", Type: fstree.Symlink, Target: "../nowhere"},
	)
	for i := 0; i < 700; i++ { // ~700*(12+~20) bytes: several dirent blocks
		p := fmt.Sprintf("many/file-with-a-longish-name-%04d", i)
		tr.Entries = append(tr.Entries, fstree.Entry{Path: p, Type: fstree.File, Mode: 0o644, Data: []byte(p), Size: int64(len(p))})
	}
	for i := 0; i < 40; i++ {
		tr.Entries = append(tr.Entries, fstree.Entry{Path: fmt.Sprintf("many/sub%02d", i), Type: fstree.Dir, Mode: 0o755})
	}
	if err := tr.Normalize(); err != nil {
		t.Fatal(err)
	}
	return tr
}

func writeImage(t *testing.T, tr *fstree.Tree, p string) int64 {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := Write(f, tr)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	if st.Size() != n || n%BlockSize != 0 {
		t.Fatalf("image file is %d bytes, Write returned %d", st.Size(), n)
	}
	return n
}

// compareExtracted checks that root holds exactly tr, byte for byte.
func compareExtracted(t *testing.T, tr *fstree.Tree, root string) {
	t.Helper()
	want := map[string]fstree.Entry{}
	for _, e := range tr.Entries {
		want[e.Path] = e
	}
	seen := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		e, ok := want[rel]
		if !ok {
			return fmt.Errorf("extracted %s is not in the tree", rel)
		}
		seen++
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch e.Type {
		case fstree.Dir:
			if !info.IsDir() || info.Mode().Perm() != e.Mode {
				return fmt.Errorf("%s: got %v, want dir %v", rel, info.Mode(), e.Mode)
			}
		case fstree.Symlink:
			got, err := os.Readlink(p)
			if err != nil || got != e.Target {
				return fmt.Errorf("%s: link %q (%v), want %q", rel, got, err, e.Target)
			}
		case fstree.File:
			if !info.Mode().IsRegular() || info.Mode().Perm() != e.Mode {
				return fmt.Errorf("%s: got %v, want file %v", rel, info.Mode(), e.Mode)
			}
			got, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			wantData := e.Data
			if e.Source != "" {
				wantData, _ = os.ReadFile(e.Source)
			}
			if !bytes.Equal(got, wantData) {
				return fmt.Errorf("%s: content differs (%d vs %d bytes)", rel, len(got), len(wantData))
			}
		}
		if e.Type != fstree.Symlink && info.ModTime().Unix() != tr.Epoch {
			return fmt.Errorf("%s: mtime %v, want epoch %d", rel, info.ModTime(), tr.Epoch)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != len(tr.Entries) {
		t.Fatalf("extracted %d entries, tree has %d", seen, len(tr.Entries))
	}
}

func TestFsckExtractMatchesTree(t *testing.T) {
	dir := t.TempDir()
	tr := variedTree(t, dir)
	img := filepath.Join(dir, "img")
	writeImage(t, tr, img)
	out := filepath.Join(dir, "x")
	if b, err := exec.Command("fsck.erofs", "--extract="+out, img).CombinedOutput(); err != nil {
		t.Fatalf("fsck.erofs: %v\n%s", err, b)
	}
	compareExtracted(t, tr, out)
	b, err := exec.Command("dump.erofs", "-s", "-S", img).CombinedOutput()
	if err != nil {
		t.Fatalf("dump.erofs: %v\n%s", err, b)
	}
	if !strings.Contains(string(b), fmt.Sprint(len(tr.Entries)+1)) {
		t.Errorf("dump.erofs does not report %d inodes:\n%s", len(tr.Entries)+1, b)
	}
	b, err = exec.Command("dump.erofs", "--path=/many", "--ls", img).CombinedOutput()
	if err != nil || !strings.Contains(string(b), "file-with-a-longish-name-0699") {
		t.Fatalf("dump.erofs --ls /many: %v\n%s", err, b)
	}
}

func TestDeterministicAndSize(t *testing.T) {
	dir := t.TempDir()
	tr := variedTree(t, dir)
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	n := writeImage(t, tr, a)
	// A shuffled, un-normalized copy of the same tree gives the same bytes.
	sh := &fstree.Tree{Epoch: tr.Epoch, Entries: append([]fstree.Entry(nil), tr.Entries...)}
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(sh.Entries), func(i, j int) { sh.Entries[i], sh.Entries[j] = sh.Entries[j], sh.Entries[i] })
	writeImage(t, sh, b)
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if !bytes.Equal(da, db) {
		t.Fatal("same tree produced different images")
	}
	if sz, err := Size(tr); err != nil || sz != n {
		t.Fatalf("Size = %d, %v; Write wrote %d", sz, err, n)
	}
	// A different epoch changes the image (timestamps and UUID).
	tr2 := *tr
	tr2.Epoch++
	writeImage(t, &tr2, b)
	db, _ = os.ReadFile(b)
	if bytes.Equal(da, db) {
		t.Fatal("different epoch produced identical images")
	}
}

func TestDigests(t *testing.T) {
	dir := t.TempDir()
	tr := variedTree(t, dir)
	f, err := os.Create(filepath.Join(dir, "img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var last int64
	r, err := WriteTree(f, tr, Options{Digests: true, Progress: func(d int64) { last = d }})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	files := 0
	for _, e := range tr.Entries {
		if e.Type != fstree.File {
			continue
		}
		files++
		total += e.Size
		data := e.Data
		if e.Source != "" {
			data, _ = os.ReadFile(e.Source)
		}
		if r.Digests[e.Path] != sha256.Sum256(data) {
			t.Errorf("%s: wrong digest", e.Path)
		}
	}
	if len(r.Digests) != files || last != total {
		t.Fatalf("digests %d (want %d), progress %d (want %d)", len(r.Digests), files, last, total)
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "s")
	os.WriteFile(src, []byte("12345"), 0o644)
	cases := map[string]*fstree.Tree{
		"long name":     {Entries: []fstree.Entry{{Path: strings.Repeat("n", 256), Type: fstree.File, Data: nil}}},
		"size mismatch": {Entries: []fstree.Entry{{Path: "f", Type: fstree.File, Source: src, Size: 4}}},
		"size short":    {Entries: []fstree.Entry{{Path: "f", Type: fstree.File, Source: src, Size: 9}}},
		"missing":       {Entries: []fstree.Entry{{Path: "f", Type: fstree.File, Source: filepath.Join(dir, "nope"), Size: 1}}},
		"empty link":    {Entries: []fstree.Entry{{Path: "l", Type: fstree.Symlink}}},
		"bad path":      {Entries: []fstree.Entry{{Path: "../x", Type: fstree.Dir}}},
	}
	for name, tr := range cases {
		f, _ := os.Create(filepath.Join(dir, "img"))
		_, err := Write(f, tr)
		f.Close()
		if err == nil {
			t.Errorf("%s: no error", name)
		} else if !strings.HasPrefix(err.Error(), "erofs: ") {
			t.Errorf("%s: error %q lacks context", name, err)
		}
	}
}

func TestEmptyTree(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	writeImage(t, &fstree.Tree{Epoch: 1}, img)
	if b, err := exec.Command("fsck.erofs", "--extract="+filepath.Join(dir, "x"), img).CombinedOutput(); err != nil {
		t.Fatalf("fsck.erofs: %v\n%s", err, b)
	}
}
