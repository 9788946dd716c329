package main

import (
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tdforge/tdforge/internal/image/imagedir"
	"github.com/tdforge/tdforge/internal/tdx/measure"
	"github.com/tdforge/tdforge/internal/tdx/platform"
	"github.com/tdforge/tdforge/internal/tdx/sim"
)

// Simulated TDX module identity: fixed, recognisable values (a real MRSEAM
// is the TDX module's hash; a real TEE_TCB_SVN its security version).
var (
	simMRSEAM    = sha512.Sum384([]byte("tdforge simulated TDX module"))
	simTEETCBSVN = "03000600000000000000000000000000"
)

// simulatedPlatform plays the TDX module and the firmware honestly: it
// measures the exact firmware, kernel, initrd and command line handed to
// QEMU with the same code as `builder measure`, and returns the fw_cfg
// entries ([name, file]) the guest's simulator starts from. Tampering with
// any booted file therefore shows up as a register mismatch.
func simulatedPlatform(dir string, info *imagedir.Info, cmdline string) ([][2]string, string, error) {
	read := func(n string) ([]byte, error) { return os.ReadFile(filepath.Join(dir, n)) }
	fw, err := read(imagedir.Firmware)
	if err != nil {
		return nil, "", err
	}
	kernel, err := read(imagedir.Kernel)
	if err != nil {
		return nil, "", err
	}
	initrd, err := read(imagedir.Initrd)
	if err != nil {
		return nil, "", err
	}
	prof, err := platform.Lookup(info.VM.Platform)
	if err != nil {
		return nil, "", fmt.Errorf("vm.platform: %w", err)
	}
	if !prof.Simulated {
		return nil, "", fmt.Errorf("platform profile %s describes real TDX hardware; --simulate needs a simulator profile such as qemu-7.2-tcg-sim", prof.Name)
	}
	res, err := measure.Compute(measure.Inputs{
		Firmware: fw, Kernel: kernel, Initrd: initrd, Cmdline: cmdline,
		MemoryMB: info.VM.MemoryMB, CPUs: info.VM.CPUs, Profile: prof, RTMR3Events: nil,
	})
	if err != nil {
		return nil, "", fmt.Errorf("simulating the firmware's measurements: %w", err)
	}
	if res.MRTD == nil {
		return nil, "", fmt.Errorf("simulator cannot compute MRTD: %s", res.Reasons["mrtd"])
	}
	plat := sim.Platform{
		MRTD:         hex.EncodeToString(res.MRTD[:]),
		TDAttributes: platform.TDAttributes(info.TDX.Debug),
		XFAM:         platform.XFAM,
		MRSEAM:       hex.EncodeToString(simMRSEAM[:]),
		TEETCBSVN:    simTEETCBSVN,
	}
	for i := 0; i < 3; i++ {
		if res.RTMR[i] == nil {
			return nil, "", fmt.Errorf("simulator cannot compute RTMR%d: %s", i, res.Reasons[fmt.Sprintf("rtmr%d", i)])
		}
		plat.RTMR[i] = hex.EncodeToString(res.RTMR[i][:])
	}
	table, log, err := res.CCEL()
	if err != nil {
		return nil, "", fmt.Errorf("simulated CCEL: %w", err)
	}
	pki, err := os.ReadFile(filepath.Join(dir, imagedir.SimPKI))
	if err != nil {
		return nil, "", fmt.Errorf("simulator PKI: %w (rebuild the image)", err)
	}
	tmp, err := os.MkdirTemp("", "tdforge-sim")
	if err != nil {
		return nil, "", err
	}
	pj, _ := json.MarshalIndent(plat, "", "  ")
	files := map[string][]byte{
		sim.FWCfgPlatform: pj,
		sim.FWCfgCCEL:     log,
		sim.FWCfgCCELACPI: table,
		sim.FWCfgPKI:      pki,
	}
	var out [][2]string
	for _, name := range []string{sim.FWCfgPlatform, sim.FWCfgCCEL, sim.FWCfgCCELACPI, sim.FWCfgPKI} {
		p := filepath.Join(tmp, filepath.Base(name))
		if err := os.WriteFile(p, files[name], 0o600); err != nil {
			return nil, tmp, err
		}
		out = append(out, [2]string{name, p})
	}
	return out, tmp, nil
}
