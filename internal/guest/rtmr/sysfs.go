package rtmr

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// SysfsMeasurements is the mainline (Linux >= 6.16) measurement directory,
// relative to the sysfs root.
const SysfsMeasurements = "devices/virtual/misc/tdx_guest/measurements"

// Sysfs uses the mainline tdx_guest measurement attributes: reading
// rtmrN:sha384 gives the value, writing exactly 48 bytes at offset 0 extends.
type Sysfs struct{ dir string }

// NewSysfs returns a backend over dir (normally /sys/ + SysfsMeasurements).
func NewSysfs(dir string) *Sysfs { return &Sysfs{dir: dir} }

// Name implements Backend.
func (*Sysfs) Name() string { return "sysfs" }

func (s *Sysfs) path(index int) string {
	return filepath.Join(s.dir, fmt.Sprintf("rtmr%d:sha384", index))
}

// Extend implements Backend.
func (s *Sysfs) Extend(index int, digest [48]byte) error {
	if err := checkIndex(index); err != nil {
		return err
	}
	f, err := os.OpenFile(s.path(index), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("rtmr sysfs: extend RTMR%d: %w", index, err)
	}
	n, err := f.WriteAt(digest[:], 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != len(digest) {
		err = fmt.Errorf("short write (%d of 48 bytes)", n)
	}
	if err != nil {
		return fmt.Errorf("rtmr sysfs: extend RTMR%d: %w", index, err)
	}
	return nil
}

// Read implements Backend. The attribute is binary (48 bytes); a hex text
// rendering is accepted too.
func (s *Sysfs) Read(index int) ([48]byte, error) {
	var r [48]byte
	if err := checkIndex(index); err != nil {
		return r, err
	}
	b, err := os.ReadFile(s.path(index))
	if err != nil {
		return r, fmt.Errorf("rtmr sysfs: read RTMR%d: %w", index, err)
	}
	switch {
	case len(b) == 48:
		copy(r[:], b)
	default:
		h, herr := hex.DecodeString(strings.TrimSpace(string(b)))
		if herr != nil || len(h) != 48 {
			return r, fmt.Errorf("rtmr sysfs: read RTMR%d: got %d bytes, want 48", index, len(b))
		}
		copy(r[:], h)
	}
	return r, nil
}
