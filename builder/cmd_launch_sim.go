package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tdforge/tdforge/internal/image/imagedir"
	"github.com/tdforge/tdforge/internal/tdx/measure"
	"github.com/tdforge/tdforge/internal/tdx/platform"
	"github.com/tdforge/tdforge/internal/tdx/sim"
)

// simulatedPlatform plays the TDX module and the firmware honestly: the
// measurement package measures the exact firmware, kernel, initrd and
// command line handed to QEMU, as `builder measure` does, and the simulator
// turns its registers and CCEL into the fw_cfg entries ([name, file]) the
// guest's simulator starts from. Tampering with any booted file therefore
// shows up as a register mismatch.
//
// Each call makes a fresh simulator PKI (sim.NewPKI, crypto/rand). Its
// private keys exist only in the returned private state directory (0700,
// files 0600), which QEMU reads at machine init and the caller removes, in
// QEMU's memory and in the guest's root-only simulator state. The root
// certificate, returned as PEM, is all a verifier gets.
func simulatedPlatform(dir string, info *imagedir.Info, cmdline string) (files [][2]string, stateDir string, rootPEM []byte, err error) {
	read := func(n string) ([]byte, error) { return os.ReadFile(filepath.Join(dir, n)) }
	fw, err := read(imagedir.Firmware)
	if err != nil {
		return nil, "", nil, err
	}
	kernel, err := read(imagedir.Kernel)
	if err != nil {
		return nil, "", nil, err
	}
	initrd, err := read(imagedir.Initrd)
	if err != nil {
		return nil, "", nil, err
	}
	prof, err := platform.Lookup(info.VM.Platform)
	if err != nil {
		return nil, "", nil, fmt.Errorf("vm.platform: %w", err)
	}
	if !prof.Simulated {
		return nil, "", nil, fmt.Errorf("platform profile %s describes real TDX hardware; --simulate needs a simulator profile such as qemu-7.2-tcg-sim", prof.Name)
	}
	res, err := measure.Compute(measure.Inputs{
		Firmware: fw, Kernel: kernel, Initrd: initrd, Cmdline: cmdline,
		MemoryMB: info.VM.MemoryMB, CPUs: info.VM.CPUs, Profile: prof, RTMR3Events: nil,
		CCMeasurement: info.Kernel.CCMeasurement,
	})
	if err != nil {
		return nil, "", nil, fmt.Errorf("simulating the firmware's measurements: %w", err)
	}
	l, err := res.Launch()
	if err != nil {
		return nil, "", nil, fmt.Errorf("simulator: %w", err)
	}
	pki, err := sim.NewPKI()
	if err != nil {
		return nil, "", nil, fmt.Errorf("simulator PKI: %w", err)
	}
	pkiJSON, err := json.Marshal(pki)
	if err != nil {
		return nil, "", nil, err
	}
	entries, err := sim.FWCfg(sim.NewPlatform(l.MRTD, l.RTMR, platform.TDAttributes(info.TDX.Debug), platform.XFAM), l.CCELTable, l.CCEL, pkiJSON)
	if err != nil {
		return nil, "", nil, err
	}
	tmp, err := os.MkdirTemp("", "tdforge-sim")
	if err != nil {
		return nil, "", nil, err
	}
	for _, e := range entries {
		p := filepath.Join(tmp, filepath.Base(e.Name))
		if err := os.WriteFile(p, e.Data, 0o600); err != nil {
			return nil, tmp, nil, err
		}
		files = append(files, [2]string{e.Name, p})
	}
	return files, tmp, []byte(pki.RootCert), nil
}
