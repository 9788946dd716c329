// Package rtmr extends and reads TDX runtime measurement registers through
// whichever interface the guest kernel offers, or through the TDX simulator
// when the boot policy allows it (dev images only).
//
// Open tries, in order:
//  1. Linux >= 6.16 sysfs: <sys>/devices/virtual/misc/tdx_guest/measurements/rtmrN:sha384
//  2. configfs-tsm RTMR entries: <configfs>/tsm/rtmrs (vendor kernels)
//  3. the TDX_CMD_EXTEND_RTMR ioctl on <dev>/tdx_guest (Intel downstream kernels)
//  4. the simulator (internal/tdx/sim, state in Options.SimDir), only if Options.Simulate
//
// It never falls back to the simulator silently: without TDX and without
// Simulate, Open returns ErrNoTDX.
package rtmr

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/internal/tdx/sim"
)

// Backend is one way to reach the registers.
type Backend interface {
	// Name identifies the backend: "sysfs", "configfs-tsm", "ioctl" or "simulator".
	Name() string
	// Extend sets r = SHA384(r || digest); r is one of RTMR0..3.
	Extend(r register.Register, digest [48]byte) error
	// Read returns the current value of r, one of RTMR0..3.
	Read(r register.Register) ([48]byte, error)
}

// Options selects roots (configurable for tests) and permits the simulator.
type Options struct {
	// SysRoot is the sysfs mount point; empty means "/sys".
	SysRoot string
	// ConfigfsRoot is the configfs mount point; empty means "/sys/kernel/config".
	ConfigfsRoot string
	// DevRoot holds device nodes; empty means "/dev".
	DevRoot string
	// Simulate permits the simulator (policy tdx.simulate; dev images only).
	Simulate bool
	// SimDir holds the simulator state; empty means sim.Dir.
	SimDir string
}

func (o Options) sysRoot() string      { return def(o.SysRoot, "/sys") }
func (o Options) configfsRoot() string { return def(o.ConfigfsRoot, "/sys/kernel/config") }
func (o Options) devRoot() string      { return def(o.DevRoot, "/dev") }
func (o Options) simDir() string       { return def(o.SimDir, sim.Dir) }

func def(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// ErrNoTDX means no TDX register interface exists and the simulator is not
// permitted.
var ErrNoTDX = errors.New("no TDX RTMR interface found")

// Open returns the first available backend.
func Open(opts Options) (Backend, error) {
	var tried []string
	sysDir := filepath.Join(opts.sysRoot(), SysfsMeasurements)
	if st, err := os.Stat(filepath.Join(sysDir, "rtmr3:sha384")); err == nil && !st.IsDir() {
		return NewSysfs(sysDir), nil
	}
	tried = append(tried, "sysfs "+sysDir)

	tsmDir := filepath.Join(opts.configfsRoot(), "tsm", "rtmrs")
	if st, err := os.Stat(tsmDir); err == nil && st.IsDir() {
		return NewConfigfs(RootedClient{Root: opts.configfsRoot()}), nil
	}
	tried = append(tried, "configfs-tsm "+tsmDir)

	dev := filepath.Join(opts.devRoot(), "tdx_guest")
	if st, err := os.Stat(dev); err == nil && st.Mode()&os.ModeCharDevice != 0 {
		return NewIoctl(dev), nil
	}
	tried = append(tried, "ioctl "+dev)

	if !opts.Simulate {
		return nil, fmt.Errorf("%w (tried %s); this is not a TDX guest with RTMR support and the boot policy does not permit the simulator (tdx.simulate is false)", ErrNoTDX, strings.Join(tried, ", "))
	}
	s, err := sim.OpenRTMRs(opts.simDir())
	if err != nil {
		return nil, fmt.Errorf("%w (tried %s); simulator: %v", ErrNoTDX, strings.Join(tried, ", "), err)
	}
	return s, nil
}

func checkRTMR(r register.Register) error {
	if !r.IsRTMR() {
		return fmt.Errorf("rtmr: %s is not an RTMR (RTMR0..RTMR3)", r)
	}
	return nil
}
