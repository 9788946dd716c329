package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/image/imagedir"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/internal/testutil/testdeps"
)

// TestSimulatedPlatformCCMeasurement: `launch --simulate` measures with the
// manifest's kernel.cc_measurement (recorded in build.json), as the build's
// reference values did. A 6.1 kernel whose stub the manifest states
// measures gets RTMR2 events, not the zero its version predicts.
func TestSimulatedPlatformCCMeasurement(t *testing.T) {
	fw, err := os.ReadFile("/usr/share/ovmf/OVMF.fd")
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	for n, b := range map[string][]byte{imagedir.Firmware: fw, imagedir.Kernel: testdeps.Vmlinuz61(t), imagedir.Initrd: []byte("boot policy")} {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rtmr2 := func(cc *bool) string {
		t.Helper()
		info := &imagedir.Info{VM: imagedir.VMInfo{CPUs: 2, MemoryMB: 2048, Platform: "qemu-7.2-tcg-sim"}, Kernel: imagedir.KernelInfo{CCMeasurement: cc}}
		files, tmp, _, err := simulatedPlatform(dir, info, "console=ttyS0")
		if tmp != "" {
			defer os.RemoveAll(tmp)
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if f[0] != sim.FWCfgPlatform {
				continue
			}
			b, err := os.ReadFile(f[1])
			if err != nil {
				t.Fatal(err)
			}
			var p sim.Platform
			if err := json.Unmarshal(b, &p); err != nil {
				t.Fatal(err)
			}
			return p.RTMR[2]
		}
		t.Fatal("no platform entry")
		return ""
	}
	zero := strings.Repeat("0", 96)
	if got := rtmr2(nil); got != zero {
		t.Errorf("6.1 kernel, detected: RTMR2 %s, want zero", got)
	}
	yes := true
	if got := rtmr2(&yes); got == zero {
		t.Error("6.1 kernel, cc_measurement = true: RTMR2 is zero; the simulator ignored build.json's kernel.cc_measurement")
	}
}
