package build

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/inputs/cache"
	"github.com/tdforge/tdforge/internal/manifest"
	"github.com/tdforge/tdforge/internal/testutil/testdeps"
)

// kernelManifest is a manifest booting Debian 12's 6.1 kernel on platform.
func kernelManifest(t *testing.T, platform, kernelExtra string) *manifest.Manifest {
	t.Helper()
	src := fmt.Sprintf(`image {
  name              = "k"
  version           = "1"
  source_date_epoch = 1
  dev               = %v
}
%skernel {
%s  cmdline = "console=ttyS0"
%s}
vm {
  platform = %q
}
tdx {
  simulate = %v
}
`, platform == "qemu-7.2-tcg-sim", testdeps.FirmwareHCL(t), testdeps.DebHCL(t, testdeps.Kernel61Deb(t), "boot/vmlinuz-6.1.0-56-cloud-amd64"), kernelExtra, platform, platform == "qemu-7.2-tcg-sim")
	path := filepath.Join(t.TempDir(), "k.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	m, diags := manifest.Load(path, manifest.LoadOptions{})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	return m
}

// TestBuildRefusesUnmeasuredInitrd: a kernel whose EFI stub cannot measure
// into RTMR2 in a TD is refused, on a real and on the simulated platform,
// naming the kernel, its version and both fixes; stating cc_measurement =
// false refuses the 6.12 kernel too, and cc_measurement = true accepts 6.1.
func TestBuildRefusesUnmeasuredInitrd(t *testing.T) {
	c, err := cache.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, platform := range []string{"qemu-10.2-tdx-edk2-2025-08", "qemu-7.2-tcg-sim"} {
		m := kernelManifest(t, platform, "")
		plan, err := NewPlan(m)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "img")
		_, err = Build(context.Background(), plan, Options{OutDir: out, Cache: c})
		if err == nil {
			t.Fatalf("%s: a 6.1 kernel was built", platform)
		}
		for _, want := range []string{
			m.Path + ":15: kernel linux-image-6.1.0-56-cloud-amd64-unsigned_6.1.192-2_amd64.deb (boot/vmlinuz-6.1.0-56-cloud-amd64) would leave the initrd unmeasured",
			"6.1.0-56-cloud-amd64 (Linux 6.1)", "TCG2 only", "boot policy",
			"Use a kernel >= 6.9", "deb package linux-image-6.12.117+deb12-cloud-amd64-unsigned, version 6.12.117-1~deb12u1",
			"set cc_measurement = true in the kernel block",
		} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: refusal %q lacks %q", platform, err, want)
			}
		}
		if _, serr := os.Stat(out); !os.IsNotExist(serr) {
			t.Errorf("%s: a refused build left %s", platform, out)
		}
	}
	// builder measure predicts it (RTMR2 zero) and says the build refuses it.
	plan, err := NewPlan(kernelManifest(t, "qemu-10.2-tdx-edk2-2025-08", ""))
	if err != nil {
		t.Fatal(err)
	}
	root, _ := filepath.Abs("../..")
	res, err := Measure(context.Background(), plan, Options{Cache: c, RepoRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Result; r.RTMR[2] == nil || *r.RTMR[2] != [48]byte{} || !strings.Contains(strings.Join(r.Notes, "\n"), "builder build refuses this kernel") {
		t.Errorf("measure: RTMR2 %x, notes %q", r.RTMR[2], r.Notes)
	}
	// The check itself, both ways of the manifest's statement.
	k61, k612 := testdeps.Vmlinuz61(t), testdeps.Vmlinuz(t)
	yes, no := true, false
	if err := checkKernelStub(manifest.Kernel{CCMeasurement: &yes}, k61); err != nil {
		t.Errorf("6.1 with cc_measurement = true: %v", err)
	}
	if err := checkKernelStub(manifest.Kernel{}, k612); err != nil {
		t.Errorf("6.12: %v", err)
	}
	if err := checkKernelStub(manifest.Kernel{CCMeasurement: &no}, k612); err == nil || !strings.Contains(err.Error(), "cc_measurement = false") {
		t.Errorf("6.12 with cc_measurement = false: %v", err)
	}
}
