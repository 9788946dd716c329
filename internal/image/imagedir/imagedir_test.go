package imagedir

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadInfo(t *testing.T) {
	dir := t.TempDir()
	_, err := ReadInfo(dir)
	var nb *NotBuildError
	if !errors.As(err, &nb) || nb.Dir != dir || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("empty dir: %v", err)
	}
	if strings.Contains(err.Error(), "builder") {
		t.Errorf("the library error names a command: %v", err)
	}
	write := func(s string) {
		if err := os.WriteFile(filepath.Join(dir, BuildInfo), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"schema": "tdforge.build/v0"}`)
	if _, err := ReadInfo(dir); err == nil || !strings.Contains(err.Error(), "not supported") {
		t.Errorf("old schema: %v", err)
	}
	write(`{"schema": "tdforge.build/v1", "image": {"name": "dev", "version": "1"}, "vm": {"cpus": 2}}`)
	i, err := ReadInfo(dir)
	if err != nil || i.Image.Name != "dev" || i.VM.CPUs != 2 {
		t.Errorf("ReadInfo: %+v, %v", i, err)
	}
}
