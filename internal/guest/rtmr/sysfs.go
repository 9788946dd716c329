package rtmr

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/tdforge/tdforge/internal/tdx/register"
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

func (s *Sysfs) path(reg register.Register) string {
	return filepath.Join(s.dir, reg.Key()+":sha384")
}

// Extend implements Backend.
func (s *Sysfs) Extend(reg register.Register, digest [48]byte) error {
	if err := checkRTMR(reg); err != nil {
		return err
	}
	f, err := os.OpenFile(s.path(reg), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("rtmr sysfs: extend %s: %w", reg, err)
	}
	n, err := f.WriteAt(digest[:], 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != len(digest) {
		err = fmt.Errorf("short write (%d of 48 bytes)", n)
	}
	if err != nil {
		return fmt.Errorf("rtmr sysfs: extend %s: %w", reg, err)
	}
	return nil
}

// Read implements Backend. The attribute is binary (48 bytes); a hex text
// rendering is accepted too.
func (s *Sysfs) Read(reg register.Register) ([48]byte, error) {
	var r [48]byte
	if err := checkRTMR(reg); err != nil {
		return r, err
	}
	b, err := os.ReadFile(s.path(reg))
	if err != nil {
		return r, fmt.Errorf("rtmr sysfs: read %s: %w", reg, err)
	}
	switch {
	case len(b) == 48:
		copy(r[:], b)
	default:
		h, herr := hex.DecodeString(strings.TrimSpace(string(b)))
		if herr != nil || len(h) != 48 {
			return r, fmt.Errorf("rtmr sysfs: read %s: got %d bytes, want 48", reg, len(b))
		}
		copy(r[:], h)
	}
	return r, nil
}
