package rtmr

import (
	"fmt"
	"sync"

	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/sim"
)

// Simulator keeps the registers in <dir>/registers.json (internal/simstate).
// RTMR0..2 are fixed at boot by the simulated firmware; only RTMR3 extends.
// initd is the only writer; the agent only reads.
type Simulator struct {
	dir string
	mu  sync.Mutex
}

// OpenSimulator opens initialised simulator state in dir.
func OpenSimulator(dir string) (*Simulator, error) {
	if _, err := sim.LoadRegisters(dir); err != nil {
		return nil, fmt.Errorf("simulator registers are not initialised in %s (initd fills them from QEMU fw_cfg %s): %w", dir, sim.FWCfgPlatform, err)
	}
	return &Simulator{dir: dir}, nil
}

// Name implements Backend.
func (*Simulator) Name() string { return "simulator" }

// Extend implements Backend; only RTMR3 may be extended.
func (s *Simulator) Extend(index int, digest [48]byte) error {
	if index != 3 {
		return fmt.Errorf("rtmr simulator: extend RTMR%d refused: RTMR0..2 are fixed by the simulated firmware, only RTMR3 is extendable", index)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := sim.LoadRegisters(s.dir)
	if err != nil {
		return fmt.Errorf("rtmr simulator: %w", err)
	}
	cur, err := sim.Decode48(r.RTMR3)
	if err != nil {
		return fmt.Errorf("rtmr simulator: rtmr3: %w", err)
	}
	next := event.Extend(cur, digest)
	r.RTMR3 = fmt.Sprintf("%x", next[:])
	if err := sim.SaveRegisters(s.dir, r); err != nil {
		return fmt.Errorf("rtmr simulator: %w", err)
	}
	return nil
}

// Read implements Backend.
func (s *Simulator) Read(index int) ([48]byte, error) {
	if err := checkIndex(index); err != nil {
		return [48]byte{}, err
	}
	r, err := sim.LoadRegisters(s.dir)
	if err != nil {
		return [48]byte{}, fmt.Errorf("rtmr simulator: %w", err)
	}
	v := r.RTMR3
	if index < 3 {
		v = r.RTMR[index]
	}
	out, err := sim.Decode48(v)
	if err != nil {
		return out, fmt.Errorf("rtmr simulator: RTMR%d: %w", index, err)
	}
	return out, nil
}
