package gptdisk

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/image/fstree"
)

func writeSrc(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// testPayloads returns three small payloads with host-file sources.
func testPayloads(t testing.TB, dir string) []Payload {
	big := bytes.Repeat([]byte("0123456789abcdef"), 300000) // 4.8 MB
	src1 := writeSrc(t, dir, "model.bin", big)
	src2 := writeSrc(t, dir, "ollama", []byte("#!/bin/sh\necho ollama\n"))
	mk := func(entries ...fstree.Entry) *fstree.Tree {
		return &fstree.Tree{Epoch: 1700000000, Entries: entries}
	}
	return []Payload{
		{Name: "ollama", Tree: mk(
			fstree.Entry{Path: "bin/ollama", Type: fstree.File, Mode: 0o755, Source: src2, Size: 22},
			fstree.Entry{Path: "lib/libollama.so", Type: fstree.Symlink, Target: "libollama.so.1"},
		)},
		{Name: "models", Tree: mk(
			fstree.Entry{Path: "blobs/sha256-abc", Type: fstree.File, Mode: 0o644, Source: src1, Size: int64(len(big))},
			fstree.Entry{Path: "manifests/m", Type: fstree.File, Mode: 0o644, Data: []byte("{}"), Size: 2},
		)},
		{Name: "webui", Tree: mk(
			fstree.Entry{Path: "index.html", Type: fstree.File, Mode: 0o644, Data: []byte("<html></html>"), Size: 13},
			fstree.Entry{Path: "empty", Type: fstree.Dir, Mode: 0o755},
		)},
	}
}

func build(t testing.TB, out string, pl []Payload, cache string) *Layout {
	t.Helper()
	l, err := Build(context.Background(), out, pl, Options{CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// extract copies partition p of disk into its own file and returns it.
func extract(t testing.TB, disk string, p Partition, dir string) string {
	t.Helper()
	in, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	outPath := filepath.Join(dir, p.Name+".part")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, io.NewSectionReader(in, int64(p.StartLBA)*512, int64(p.SizeBytes))); err != nil {
		t.Fatal(err)
	}
	return outPath
}

func veritysetupVerify(part string, p Partition) error {
	out, err := exec.Command("veritysetup", "verify", part, part, p.RootHash, fmt.Sprintf("--hash-offset=%d", p.HashOffset)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

func TestBuildDisk(t *testing.T) {
	dir := t.TempDir()
	pl := testPayloads(t, dir)
	disk := filepath.Join(dir, "disk.raw")
	l := build(t, disk, pl, filepath.Join(dir, "cache"))

	// sgdisk sees a valid GPT with our names, GUIDs and alignment.
	out, err := exec.Command("sgdisk", "-v", disk).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No problems found") {
		t.Fatalf("sgdisk -v: %v\n%s", err, out)
	}
	out, err = exec.Command("sgdisk", "-p", disk).CombinedOutput()
	if err != nil {
		t.Fatalf("sgdisk -p: %v\n%s", err, out)
	}
	if !strings.Contains(strings.ToLower(string(out)), "disk identifier (guid): "+l.DiskGUID) {
		t.Errorf("sgdisk does not show disk GUID %s:\n%s", l.DiskGUID, out)
	}
	for i, p := range l.Partitions {
		if p.Name != pl[i].Name || p.Index != i+1 || p.StartLBA%2048 != 0 {
			t.Fatalf("partition %d: %+v", i, p)
		}
		if !strings.Contains(string(out), fmt.Sprintf("%d", p.StartLBA)) || !strings.Contains(string(out), p.Name) {
			t.Errorf("sgdisk -p does not list %s at %d:\n%s", p.Name, p.StartLBA, out)
		}
		info, _ := exec.Command("sgdisk", "-i", fmt.Sprint(p.Index), disk).CombinedOutput()
		if !strings.Contains(strings.ToLower(string(info)), "unique guid: "+p.GUID) {
			t.Errorf("sgdisk -i %d does not show GUID %s:\n%s", p.Index, p.GUID, info)
		}
		// Each partition: EROFS that fsck.erofs extracts, verity that
		// veritysetup accepts.
		part := extract(t, disk, p, dir)
		x := filepath.Join(dir, "x-"+p.Name)
		if b, err := exec.Command("fsck.erofs", "--extract="+x, part).CombinedOutput(); err != nil {
			t.Fatalf("fsck.erofs %s: %v\n%s", p.Name, err, b)
		}
		if err := veritysetupVerify(part, p); err != nil {
			t.Fatalf("veritysetup verify %s: %v", p.Name, err)
		}
		salt, _ := hex.DecodeString(p.Salt)
		key, _ := hex.DecodeString(p.ContentKey)
		if want := Salt(p.Name, [32]byte(key)); !bytes.Equal(salt, want) {
			t.Errorf("%s: salt %x, want %x", p.Name, salt, want)
		}
	}
	got, err := os.ReadFile(filepath.Join(dir, "x-models", "blobs", "sha256-abc"))
	if err != nil || !bytes.Equal(got, bytes.Repeat([]byte("0123456789abcdef"), 300000)) {
		t.Fatalf("extracted model differs: %v", err)
	}

	// Layout JSON round trip with the documented keys.
	js, err := l.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"name"`, `"partition"`, `"data_size"`, `"hash_offset"`, `"verity_root_hash"`, `"salt"`, `"guid"`, `"start_lba"`, `"size"`, `"disk_guid"`} {
		if !bytes.Contains(js, []byte(k)) {
			t.Errorf("layout JSON lacks %s", k)
		}
	}
	lp := filepath.Join(dir, "payloads.json")
	os.WriteFile(lp, js, 0o644)
	l2, err := ReadLayout(lp)
	if err != nil {
		t.Fatal(err)
	}
	if js2, _ := l2.Marshal(); !bytes.Equal(js, js2) {
		t.Fatal("layout JSON does not round-trip")
	}
	os.WriteFile(lp, bytes.Replace(js, []byte(`"salt"`), []byte(`"salty"`), 1), 0o644)
	if _, err := ReadLayout(lp); err == nil || !strings.Contains(err.Error(), "salty") {
		t.Fatalf("unknown key accepted: %v", err)
	}
}

func TestReproducibleAndCached(t *testing.T) {
	dir := t.TempDir()
	pl := testPayloads(t, dir)
	cache := filepath.Join(dir, "cache")
	a, b, c := filepath.Join(dir, "a.raw"), filepath.Join(dir, "b.raw"), filepath.Join(dir, "c.raw")
	la := build(t, a, pl, cache)
	parts, _ := filepath.Glob(filepath.Join(cache, "parts", "*.part"))
	if len(parts) != 3 {
		t.Fatalf("cache holds %d partitions, want 3", len(parts))
	}
	before := map[string]os.FileInfo{}
	for _, p := range parts {
		before[p], _ = os.Stat(p)
	}
	digestsBefore, _ := os.ReadFile(filepath.Join(cache, digestsFile))
	time.Sleep(10 * time.Millisecond)

	// No-change rebuild: every payload is a cache hit (progress reports
	// done == total in one call) and no cache file is rewritten.
	calls := map[string]int{}
	lb, err := Build(context.Background(), b, pl, Options{CacheDir: cache, Progress: func(name string, done, total int64) {
		calls[name]++
		if done != total {
			t.Errorf("%s: cached payload reported %d/%d", name, done, total)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pl {
		if calls[p.Name] != 1 {
			t.Errorf("%s: %d progress calls on a cache hit, want 1", p.Name, calls[p.Name])
		}
	}
	for _, p := range parts {
		st, err := os.Stat(p)
		if err != nil || !st.ModTime().Equal(before[p].ModTime()) || !os.SameFile(st, before[p]) {
			t.Errorf("cached partition %s was rewritten", p)
		}
	}
	if d, _ := os.ReadFile(filepath.Join(cache, digestsFile)); !bytes.Equal(d, digestsBefore) {
		t.Error("file digest cache rewritten on a no-change build")
	}
	// Rebuilding the same output again leaves the file untouched; a
	// modified output is rewritten.
	stA, _ := os.Stat(a)
	time.Sleep(10 * time.Millisecond)
	build(t, a, pl, cache)
	if st, _ := os.Stat(a); !os.SameFile(st, stA) || !st.ModTime().Equal(stA.ModTime()) {
		t.Error("no-change rebuild rewrote the disk")
	}
	fa, _ := os.OpenFile(a, os.O_RDWR, 0)
	fa.WriteAt([]byte("X"), 3<<20)
	fa.Close()
	build(t, a, pl, cache)
	if st, _ := os.Stat(a); os.SameFile(st, stA) {
		t.Error("a modified disk was not rebuilt")
	}
	// Without a cache: same bytes again.
	lc := build(t, c, pl, "")
	da, _ := os.ReadFile(a)
	for _, other := range []string{b, c} {
		if d, _ := os.ReadFile(other); !bytes.Equal(da, d) {
			t.Fatalf("%s differs from %s", other, a)
		}
	}
	ja, _ := la.Marshal()
	jb, _ := lb.Marshal()
	jc, _ := lc.Marshal()
	if !bytes.Equal(ja, jb) || !bytes.Equal(ja, jc) {
		t.Fatal("layouts differ")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".payload-build-*")); len(left) != 0 {
		t.Fatalf("temporary build dirs left behind: %v", left)
	}

	// Changing one source (same size) rebuilds only that payload and
	// changes its root hash and GUIDs, not the others'.
	src := pl[0].Tree.Entries[0].Source
	os.WriteFile(src, []byte("#!/bin/sh\necho OLLAMA\n"), 0o644)
	ld := build(t, filepath.Join(dir, "d.raw"), pl, cache)
	if ld.Partitions[0].RootHash == la.Partitions[0].RootHash || ld.Partitions[0].GUID == la.Partitions[0].GUID || ld.DiskGUID == la.DiskGUID {
		t.Fatal("changed content kept the old root hash / GUIDs")
	}
	if ld.Partitions[1].RootHash != la.Partitions[1].RootHash || ld.Partitions[2].GUID != la.Partitions[2].GUID {
		t.Fatal("unchanged payloads changed")
	}
	if parts2, _ := filepath.Glob(filepath.Join(cache, "parts", "*.part")); len(parts2) != 4 {
		t.Fatalf("cache holds %d partitions, want 4", len(parts2))
	}
}

func TestCorruptionDetected(t *testing.T) {
	dir := t.TempDir()
	pl := testPayloads(t, dir)
	disk := filepath.Join(dir, "disk.raw")
	l := build(t, disk, pl, "")
	p := l.Partitions[1]
	part := extract(t, disk, p, dir)
	if err := veritysetupVerify(part, p); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(part, os.O_RDWR, 0)
	b := []byte{0}
	off := int64(p.DataSize) - 4096*3 + 5 // inside the model file's data
	f.ReadAt(b, off)
	b[0] ^= 0x80
	f.WriteAt(b, off)
	f.Close()
	if err := veritysetupVerify(part, p); err == nil {
		t.Fatal("veritysetup verify accepted a corrupted data area")
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	good := &fstree.Tree{Entries: []fstree.Entry{{Path: "a", Type: fstree.File, Data: []byte("x"), Size: 1}}}
	src := writeSrc(t, dir, "s", []byte("abc"))
	cases := map[string][]Payload{
		"no payloads":  nil,
		"bad name":     {{Name: "Bad Name", Tree: good}},
		"duplicate":    {{Name: "a", Tree: good}, {Name: "a", Tree: good}},
		"nil tree":     {{Name: "a"}},
		"size differs": {{Name: "a", Tree: &fstree.Tree{Entries: []fstree.Entry{{Path: "f", Type: fstree.File, Source: src, Size: 2}}}}},
		"missing src":  {{Name: "a", Tree: &fstree.Tree{Entries: []fstree.Entry{{Path: "f", Type: fstree.File, Source: src + "x", Size: 2}}}}},
	}
	for name, pl := range cases {
		out := filepath.Join(dir, "disk.raw")
		if _, err := Build(ctx, out, pl, Options{}); err == nil {
			t.Errorf("%s: no error", name)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: output written despite the error", name)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Build(cctx, filepath.Join(dir, "d"), []Payload{{Name: "a", Tree: good}}, Options{}); err == nil {
		t.Error("cancelled context ignored")
	}
}
