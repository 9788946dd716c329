package sim

import (
	"fmt"
	"sync"

	"github.com/tdforge/tdforge/internal/tdx/register"
)

// Name is the backend name the simulator reports, as an RTMR backend
// (internal/guest/rtmr) and as a quote provider (internal/tdx/quote).
const Name = "simulator"

// Value returns a register's value (MRTD, RTMR0..3).
func (r *Registers) Value(reg register.Register) ([48]byte, error) {
	var v string
	switch {
	case reg == register.MRTD:
		v = r.MRTD
	case reg == register.RTMR3:
		v = r.RTMR3
	case reg.IsRTMR():
		v = r.RTMR[reg.RTMRIndex()]
	default:
		return [48]byte{}, fmt.Errorf("simulator: no register %s", reg)
	}
	out, err := Decode48(v)
	if err != nil {
		return out, fmt.Errorf("%s: %w", reg.Key(), err)
	}
	return out, nil
}

// RTMRs is the simulated RTMR backend over <dir>/registers.json. RTMR0..2
// are fixed at boot by the simulated firmware; only RTMR3 extends. initd is
// its only user (the state is root-only). It implements rtmr.Backend.
type RTMRs struct {
	dir string
	mu  sync.Mutex
}

// OpenRTMRs opens initialised simulator state in dir.
func OpenRTMRs(dir string) (*RTMRs, error) {
	if _, err := LoadRegisters(dir); err != nil {
		return nil, fmt.Errorf("simulator registers are not initialised in %s (initd fills them from QEMU fw_cfg %s): %w", dir, FWCfgPlatform, err)
	}
	return &RTMRs{dir: dir}, nil
}

// Name implements rtmr.Backend.
func (*RTMRs) Name() string { return Name }

// Extend implements rtmr.Backend; only RTMR3 may be extended.
func (s *RTMRs) Extend(reg register.Register, digest [48]byte) error {
	if reg != register.RTMR3 {
		return fmt.Errorf("rtmr simulator: extend %s refused: RTMR0..2 are fixed by the simulated firmware, only RTMR3 is extendable", reg)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := LoadRegisters(s.dir)
	if err != nil {
		return fmt.Errorf("rtmr simulator: %w", err)
	}
	cur, err := r.Value(reg)
	if err != nil {
		return fmt.Errorf("rtmr simulator: %w", err)
	}
	next := register.Extend(cur, digest)
	r.RTMR3 = fmt.Sprintf("%x", next[:])
	if err := SaveRegisters(s.dir, r); err != nil {
		return fmt.Errorf("rtmr simulator: %w", err)
	}
	return nil
}

// Read implements rtmr.Backend.
func (s *RTMRs) Read(reg register.Register) ([48]byte, error) {
	if !reg.IsRTMR() {
		return [48]byte{}, fmt.Errorf("rtmr simulator: %s is not an RTMR", reg)
	}
	r, err := LoadRegisters(s.dir)
	if err != nil {
		return [48]byte{}, fmt.Errorf("rtmr simulator: %w", err)
	}
	v, err := r.Value(reg)
	if err != nil {
		return v, fmt.Errorf("rtmr simulator: %w", err)
	}
	return v, nil
}
