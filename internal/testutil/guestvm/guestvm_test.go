package guestvm

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/tdforge/tdforge/internal/testutil/guestvm/guestinit"
)

// files reads a newc archive into name -> (mode, content).
func files(t *testing.T, b []byte) map[string]cpio.Record {
	t.Helper()
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(b)))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]cpio.Record{}
	for _, r := range recs {
		m[r.Name] = r
	}
	return m
}

func content(t *testing.T, r cpio.Record) []byte {
	t.Helper()
	if r.ReaderAt == nil {
		t.Fatalf("%s has no content", r.Name)
	}
	b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBuild checks the initramfs layout guestinit.Run relies on: an
// executable /init, the config at guestinit.ConfigPath and the modules,
// in the given order, listed at guestinit.ModulesPath.
func TestBuild(t *testing.T) {
	modDir := t.TempDir()
	for _, m := range []string{"fs/b.ko", "drivers/a.ko"} {
		os.MkdirAll(filepath.Dir(filepath.Join(modDir, m)), 0o755)
		os.WriteFile(filepath.Join(modDir, m), []byte("module "+m), 0o644)
	}
	cfg := map[string]any{"disk_guid": "X", "n": 3}
	b, err := os.ReadFile(Build(t, "./testdata/noop", cfg, modDir, []string{"fs/b.ko", "drivers/a.ko"}))
	if err != nil {
		t.Fatal(err)
	}
	got := files(t, b)
	init, ok := got["init"]
	if !ok || init.Mode&0o111 == 0 || !bytes.HasPrefix(content(t, init), []byte("\x7fELF")) {
		t.Fatalf("no executable ELF /init: %+v", init.Info)
	}
	var back map[string]any
	if err := json.Unmarshal(content(t, got[guestinit.ConfigPath[1:]]), &back); err != nil || back["disk_guid"] != "X" || back["n"] != 3.0 {
		t.Errorf("config: %v %v", back, err)
	}
	if order := string(content(t, got[guestinit.ModulesPath[1:]])); order != "/lib/modules/b.ko\n/lib/modules/a.ko" {
		t.Errorf("module order %q", order)
	}
	if m := string(content(t, got["lib/modules/a.ko"])); m != "module drivers/a.ko" {
		t.Errorf("a.ko holds %q", m)
	}
}

// TestOverlay checks that the base initramfs is kept byte for byte and
// followed by a gzip-compressed archive with the new /init.
func TestOverlay(t *testing.T) {
	base := filepath.Join(t.TempDir(), "base")
	baseData := Archive(t, []cpio.Record{cpio.StaticFile("init", "old", 0o755)})
	os.WriteFile(base, baseData, 0o644)
	b, err := os.ReadFile(Overlay(t, base, "./testdata/noop"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, baseData) {
		t.Fatal("the base initramfs is not kept as is")
	}
	zr, err := gzip.NewReader(bytes.NewReader(b[len(baseData):]))
	if err != nil {
		t.Fatal(err)
	}
	extra, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if init := content(t, files(t, extra)["init"]); !bytes.HasPrefix(init, []byte("\x7fELF")) {
		t.Errorf("overlay /init is %q..., not the built program", init[:min(len(init), 8)])
	}
}
