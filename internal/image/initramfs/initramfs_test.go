package initramfs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/tdforge/tdforge/internal/image/fstree"
)

func testTree(t *testing.T) *fstree.Tree {
	dir := t.TempDir()
	big := bytes.Repeat([]byte("initd binary "), 100000)
	src := filepath.Join(dir, "initd")
	if err := os.WriteFile(src, big, 0o600); err != nil {
		t.Fatal(err)
	}
	return &fstree.Tree{Epoch: 1700000000, Entries: []fstree.Entry{
		{Path: "init", Type: fstree.File, Mode: 0o755, Source: src, Size: int64(len(big))},
		{Path: "etc/tdforge/policy.json", Type: fstree.File, Mode: 0o644, Data: []byte(`{"v":1}`), Size: 7},
		{Path: "bin/sh", Type: fstree.Symlink, Target: "/init"},
		{Path: "etc/empty", Type: fstree.File, Mode: 0o600, Data: nil, Size: 0},
		{Path: "tmp", Type: fstree.Dir, Mode: 0o1777 & 0o777},
	}}
}

func write(t *testing.T, tr *fstree.Tree) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, tr); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestDeterministic(t *testing.T) {
	tr := testTree(t)
	a := write(t, tr)
	// Same tree with entries in another order and a different host copy of
	// the file gives the same bytes.
	tr2 := testTree(t)
	for i, j := 0, len(tr2.Entries)-1; i < j; i, j = i+1, j-1 {
		tr2.Entries[i], tr2.Entries[j] = tr2.Entries[j], tr2.Entries[i]
	}
	os.Chtimes(tr2.Entries[len(tr2.Entries)-1].Source, time0, time0)
	b := write(t, tr2)
	if !bytes.Equal(a, b) {
		t.Fatal("initramfs bytes differ between identical trees")
	}
	// gzip header: no name flag, mtime zero.
	if a[0] != 0x1f || a[1] != 0x8b || a[3]&0x08 != 0 || !bytes.Equal(a[4:8], []byte{0, 0, 0, 0}) {
		t.Fatalf("gzip header % x", a[:10])
	}
	// Input tree was not modified.
	if tr.Entries[0].Path != "init" {
		t.Fatal("Write mutated the caller's tree")
	}
	// A changed epoch changes the bytes.
	tr.Epoch++
	if bytes.Equal(a, write(t, tr)) {
		t.Fatal("epoch not applied")
	}
	if !strings.Contains(Compression(), "go1.") {
		t.Fatal(Compression())
	}
}

func TestSystemCpioReadback(t *testing.T) {
	tr := testTree(t)
	img := filepath.Join(t.TempDir(), "initrd.cpio.gz")
	if err := os.WriteFile(img, write(t, tr), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sh", "-c", `gzip -dc "$0" | cpio -t --quiet`, img).CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	want := "bin\nbin/sh\ndev\ndev/console\ndev/null\netc\netc/empty\netc/tdforge\netc/tdforge/policy.json\ninit\ntmp\n"
	if string(out) != want {
		t.Fatalf("cpio -t:\n%s\nwant:\n%s", out, want)
	}
	out, err = exec.Command("sh", "-c", `gzip -dc "$0" | cpio -tv --quiet`, img).CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(out), "\n")
	checks := map[int]string{1: "lrwxrwxrwx", 3: "crw-------", 4: "crw-rw-rw-", 9: "-rwxr-xr-x"}
	for i, prefix := range checks {
		if !strings.HasPrefix(lines[i], prefix) || !strings.Contains(lines[i], " root ") {
			t.Errorf("line %d %q: want %s owned by root", i, lines[i], prefix)
		}
	}
	if !strings.Contains(lines[3], "5,") || !strings.Contains(lines[4], "1,") {
		t.Errorf("device numbers: %q %q", lines[3], lines[4])
	}
	if !strings.Contains(lines[1], "bin/sh -> /init") {
		t.Errorf("symlink: %q", lines[1])
	}
	// Content via cpio -i --to-stdout.
	got, err := exec.Command("sh", "-c", `gzip -dc "$0" | cpio -i --quiet --to-stdout init`, img).Output()
	if err != nil {
		t.Fatal(err)
	}
	want2, _ := os.ReadFile(tr.Entries[0].Source)
	if !bytes.Equal(got, want2) {
		t.Fatal("init content differs in system cpio extraction")
	}
}

var time0 = time.Unix(12345, 0)

func TestReadRoundTrip(t *testing.T) {
	tr := testTree(t)
	ents, err := Read(bytes.NewReader(write(t, tr)))
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]Entry{}
	for i, e := range ents {
		by[e.Name] = e
		if e.UID != 0 || e.GID != 0 || e.MTime != 1700000000 || e.Ino != uint64(i+1) {
			t.Errorf("%s: uid %d gid %d mtime %d ino %d", e.Name, e.UID, e.GID, e.MTime, e.Ino)
		}
	}
	content, _ := os.ReadFile(tr.Entries[0].Source)
	s := sha256.Sum256(content)
	if e := by["init"]; e.SHA256 != hex.EncodeToString(s[:]) || e.Mode != cpio.S_IFREG|0o755 || e.Size != uint64(len(content)) {
		t.Errorf("init %+v", e)
	}
	if e := by["bin/sh"]; e.Target != "/init" || e.Mode&cpio.S_IFMT != cpio.S_IFLNK {
		t.Errorf("bin/sh %+v", e)
	}
	if e := by["dev/console"]; e.Rmajor != 5 || e.Rminor != 1 || e.Mode != cpio.S_IFCHR|0o600 {
		t.Errorf("console %+v", e)
	}
	if e := by["etc/empty"]; e.Size != 0 || e.SHA256 == "" {
		t.Errorf("empty %+v", e)
	}
	// Plain cpio from the system tool is readable too.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a"), []byte("hello"), 0o644)
	raw, err := exec.Command("sh", "-c", `cd "$0" && echo a | cpio -o -H newc --quiet`, dir).Output()
	if err != nil {
		t.Fatal(err)
	}
	ents, err = Read(bytes.NewReader(raw))
	if err != nil || len(ents) != 1 || ents[0].Name != "a" || ents[0].Size != 5 {
		t.Fatalf("%+v %v", ents, err)
	}
}

func TestErrors(t *testing.T) {
	tr := testTree(t)
	os.WriteFile(tr.Entries[0].Source, []byte("shrunk"), 0o600)
	var b bytes.Buffer
	if err := Write(&b, tr); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Fatalf("want changed-source error, got %v", err)
	}
	tr = testTree(t)
	tr.Entries = append(tr.Entries, fstree.Entry{Path: "dev/null", Type: fstree.File, Data: []byte{}, Size: 0})
	if err := Write(&b, tr); err == nil || !strings.Contains(err.Error(), "collides") {
		t.Fatalf("want collision error, got %v", err)
	}
}
