// Package fwcfg reads QEMU fw_cfg entries through the Linux qemu_fw_cfg
// sysfs interface (/sys/firmware/qemu_fw_cfg/by_name/<name>/raw). The
// qemu_fw_cfg kernel module must be loaded.
//
// fw_cfg content comes from the host and is untrusted: callers must treat it
// as input, never as evidence.
package fwcfg

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DefaultRoot is where the kernel exposes fw_cfg entries by name.
const DefaultRoot = "/sys/firmware/qemu_fw_cfg/by_name"

// MaxSize bounds how much of one entry is read.
const MaxSize = 64 << 20

// ErrNotFound reports an entry the host did not provide.
var ErrNotFound = errors.New("fw_cfg entry not present")

// Reader reads entries below Root.
type Reader struct {
	// Root is the by_name directory; empty means DefaultRoot.
	Root string
}

func (r Reader) root() string {
	if r.Root == "" {
		return DefaultRoot
	}
	return r.Root
}

// Available reports whether the fw_cfg sysfs directory exists (the
// qemu_fw_cfg module is loaded and the machine has fw_cfg).
func (r Reader) Available() bool {
	st, err := os.Stat(r.root())
	return err == nil && st.IsDir()
}

// Read returns the raw bytes of the named entry, e.g. "opt/tdforge/platform.json".
func (r Reader) Read(name string) ([]byte, error) {
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "..") {
		return nil, fmt.Errorf("fw_cfg: invalid entry name %q (want a relative name like opt/vendor/file)", name)
	}
	p := filepath.Join(r.root(), filepath.FromSlash(name), "raw")
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if !r.Available() {
				return nil, fmt.Errorf("fw_cfg %s: %w (%s missing: is the qemu_fw_cfg module loaded?)", name, ErrNotFound, r.root())
			}
			return nil, fmt.Errorf("fw_cfg %s: %w (pass it to QEMU with -fw_cfg name=%s,file=...)", name, ErrNotFound, name)
		}
		return nil, fmt.Errorf("fw_cfg %s: %w", name, err)
	}
	defer f.Close()
	// sysfs reports a fixed size for these files; read to EOF with a cap.
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("fw_cfg %s: %w", name, err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("fw_cfg %s: larger than %d bytes", name, MaxSize)
	}
	return b, nil
}
