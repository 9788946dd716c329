// Package firmware is the simulated TDX firmware of dev images: it
// initialises the TDX simulator state from the QEMU fw_cfg entries `builder
// launch --simulate` passes (sim.FWCfg): the simulated platform registers,
// PKI and firmware event log, whose ACPI events it re-measures from the
// blobs QEMU provided (MeasureACPI). initd is its only caller.
package firmware

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/tdforge/tdforge/internal/canonjson"

	"github.com/tdforge/tdforge/internal/fsutil"
	"github.com/tdforge/tdforge/internal/guest/fwcfg"
	"github.com/tdforge/tdforge/internal/tdx/sim"
)

// Logf reports simulated-firmware findings (initd sets it to its console).
var Logf = func(format string, a ...any) {}

// Init fills dir (0700 root:root, files 0600: the PKI holds the
// simulator's private keys, which no service may read) from fw_cfg. RTMR3
// starts at zero. If dir already holds registers, Init leaves them alone:
// registers are initialised once per boot.
func Init(fw fwcfg.Reader, dir string) (*sim.Registers, error) {
	if r, err := sim.LoadRegisters(dir); err == nil {
		return r, nil
	}
	raw, err := fw.Read(sim.FWCfgPlatform)
	if err != nil {
		return nil, err
	}
	var plat sim.Platform
	if err := canonjson.Decode(bytes.NewReader(raw), &plat); err != nil {
		return nil, fmt.Errorf("fw_cfg %s: %w", sim.FWCfgPlatform, err)
	}
	if err := checkPlatform(plat); err != nil {
		return nil, fmt.Errorf("fw_cfg %s: %w", sim.FWCfgPlatform, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// A directory left by anyone else is made root-only, whatever it was.
	if err := os.Chown(dir, 0, 0); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	// Optional blobs: the PKI (quotes) and the simulated CCEL.
	for name, file := range map[string]string{sim.FWCfgPKI: sim.PKIFile, sim.FWCfgCCEL: sim.CCELFile, sim.FWCfgCCELACPI: sim.CCELTableFile} {
		b, err := fw.Read(name)
		if errors.Is(err, fwcfg.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if name == sim.FWCfgCCEL {
			// The simulated firmware measures the ACPI blobs QEMU really
			// handed over (see MeasureACPI).
			patched, rtmr0, changed, err := MeasureACPI(fw, b)
			if err != nil {
				return nil, fmt.Errorf("simulated firmware: %w", err)
			}
			got := hex.EncodeToString(rtmr0[:])
			if len(changed) == 0 && got != plat.RTMR[0] {
				return nil, fmt.Errorf("simulated firmware: the launcher's CCEL replays to RTMR0 %s, not its RTMR0 %s", got, plat.RTMR[0])
			}
			for _, c := range changed {
				Logf("simulated firmware: ACPI blob %s differs from the platform profile: RTMR0 measures what QEMU provided", c)
			}
			plat.RTMR[0], b = got, patched
		}
		if name == sim.FWCfgPKI {
			var pki sim.PKI
			if err := json.Unmarshal(b, &pki); err != nil {
				return nil, fmt.Errorf("fw_cfg %s: %w", name, err)
			}
		}
		if err := fsutil.WriteFile(filepath.Join(dir, file), b, 0o600); err != nil {
			return nil, err
		}
	}
	regs := &sim.Registers{Platform: plat, RTMR3: strings.Repeat("00", 48)}
	b, err := canonjson.Marshal(regs)
	if err != nil {
		return nil, err
	}
	if err := fsutil.WriteFile(filepath.Join(dir, sim.RegistersFile), b, 0o600); err != nil {
		return nil, err
	}
	return regs, nil
}

func checkPlatform(p sim.Platform) error {
	for i, v := range []string{p.MRTD, p.RTMR[0], p.RTMR[1], p.RTMR[2]} {
		if _, err := sim.Decode48(v); err != nil {
			return fmt.Errorf("%s: %w", []string{"mrtd", "rtmr[0]", "rtmr[1]", "rtmr[2]"}[i], err)
		}
	}
	return nil
}
