package fwcfg

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "opt", "tdforge", "platform.json")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	want := []byte(`{"mrtd":"00"}`)
	if err := os.WriteFile(filepath.Join(dir, "raw"), want, 0o444); err != nil {
		t.Fatal(err)
	}
	r := Reader{Root: root}
	if !r.Available() {
		t.Fatal("Available() = false for an existing root")
	}
	got, err := r.Read("opt/tdforge/platform.json")
	if err != nil || string(got) != string(want) {
		t.Fatalf("Read = %q, %v; want %q", got, err, want)
	}
	_, err = r.Read("opt/tdforge/missing.json")
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "-fw_cfg name=opt/tdforge/missing.json") {
		t.Fatalf("missing entry error = %v", err)
	}
	_, err = Reader{Root: filepath.Join(root, "nope")}.Read("opt/x")
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "qemu_fw_cfg module") {
		t.Fatalf("missing root error = %v", err)
	}
	for _, bad := range []string{"", "/etc/passwd", "opt/../../etc"} {
		if _, err := r.Read(bad); err == nil || !strings.Contains(err.Error(), "invalid entry name") {
			t.Errorf("Read(%q) error = %v, want invalid entry name", bad, err)
		}
	}
}
