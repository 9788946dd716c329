package build

import (
	"fmt"
	"path/filepath"

	"github.com/tdforge/tdforge/internal/manifest"
	"github.com/tdforge/tdforge/internal/tdx/measure"
)

// A kernel that measures into RTMR2 in a TD, named in the refusal's fix:
// the one manifests/confidential-ai.hcl (and manifests/dev.hcl) use.
const (
	measuringKernelPackage = "linux-image-6.12.117+deb12-cloud-amd64-unsigned"
	measuringKernelVersion = "6.12.117-1~deb12u1"
)

// checkKernelStub refuses, for a build, a kernel whose EFI stub would leave
// the initrd unmeasured in a TD (measure.DetectStub, or the manifest's
// kernel.cc_measurement). RTMR2 would then stay zero, and the initrd holds
// the boot policy: a host could swap it and no register would change. The
// rule holds for simulated platforms too: the simulator measures what the
// hardware would (RTMR2 zero), so such a dev image's boot policy would be
// just as unverifiable, and dev tests must not pass only because the
// simulator is kinder than a TD. `builder measure` still predicts such a
// kernel (RTMR2 zero, with a note).
func checkKernelStub(k manifest.Kernel, bz []byte) error {
	stub, err := measure.DetectStub(bz, k.CCMeasurement)
	if err != nil {
		return fmt.Errorf("%skernel %s: %w", where(k), kernelName(k.Source), err)
	}
	if stub.Measures {
		return nil
	}
	return fmt.Errorf("%skernel %s would leave the initrd unmeasured: %s; the initrd holds the boot policy, which a verifier could then not check, so the image is refused. %s",
		where(k), kernelName(k.Source), stub.Why(), kernelFix)
}

// kernelFix is what to do about a kernel whose stub cannot measure.
var kernelFix = fmt.Sprintf("Use a kernel >= 6.9, such as Debian 12's backported 6.12 cloud kernel that manifests/confidential-ai.hcl uses (deb package %s, version %s), "+
	"or, if this kernel's EFI stub was patched to measure through the EFI CC measurement protocol, set cc_measurement = true in the kernel block",
	measuringKernelPackage, measuringKernelVersion)

// where is the kernel block's position, "file:line: ", when known.
func where(k manifest.Kernel) string {
	if k.Range.Filename == "" {
		return ""
	}
	return fmt.Sprintf("%s:%d: ", k.Range.Filename, k.Range.Start.Line)
}

// kernelName names the kernel's source for messages.
func kernelName(src manifest.Source) string {
	switch {
	case src.Package != "":
		return fmt.Sprintf("%s %s (%s)", src.Package, src.DebVersion, src.PathInDeb)
	case src.DebFile != "":
		return fmt.Sprintf("%s (%s)", filepath.Base(src.DebFile), src.PathInDeb)
	case src.URL != "":
		return src.URL
	}
	return src.Path
}
