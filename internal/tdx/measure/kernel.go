package measure

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// The Linux EFI stub measures LoadOptions and the initrd through the EFI CC
// measurement protocol (RTMR2 in a TD) only since Linux 6.9 (commit
// "efi/libstub: Measure into CC protocol if TCG2 protocol is absent").
// Older stubs measure through TCG2 only, which TDX firmware (TDVF) does not
// offer, so in a TD they measure nothing although they carry the
// LoadOptions tag.
const (
	ccMeasurementMajor = 6
	ccMeasurementMinor = 9
)

// Setup-header fields of an x86 bzImage (Documentation/arch/x86/boot.rst).
const (
	setupHeaderMagicOff = 0x202 // "HdrS"
	setupVersionOff     = 0x206 // boot protocol version
	kernelVersionOff    = 0x20E // pointer to the version string, minus 0x200
	maxVersionLen       = 256
)

// kernelVersionRE matches the start of the kernel_version string:
// "<major>.<minor>[.patch...] ...".
var kernelVersionRE = regexp.MustCompile(`^([0-9]+)\.([0-9]+)`)

// Stub says whether a kernel's EFI stub measures the command line
// (LoadOptions) and the initrd into RTMR2 in a TD.
type Stub struct {
	// Version is the bzImage's kernel_version string, e.g.
	// "6.1.0-56-cloud-amd64 (debian-kernel@...) #1 SMP ... Debian 6.1.192-2 (...)";
	// "" when the image has none.
	Version string
	// Major and Minor are parsed from Version (0 when it could not be read).
	Major, Minor int
	// Measures: the stub measures through the EFI CC measurement protocol.
	Measures bool
	// Stated: Measures comes from the manifest (kernel.cc_measurement),
	// not from detection.
	Stated bool
	// Tagged: the stub carries the LoadOptions tagged event at all.
	Tagged bool
}

// Release is the first word of Version (the kernel release, e.g.
// "6.1.0-56-cloud-amd64"); "" when the version is unknown.
func (s Stub) Release() string {
	r, _, _ := strings.Cut(s.Version, " ")
	return r
}

// Name describes the kernel for messages: "6.1.0-56-cloud-amd64 (Linux 6.1)".
func (s Stub) Name() string {
	switch {
	case s.Version == "":
		return "a kernel without a version string"
	case s.Major == 0 && s.Minor == 0:
		return s.Release()
	}
	return fmt.Sprintf("%s (Linux %d.%d)", s.Release(), s.Major, s.Minor)
}

// Why explains, in one sentence, what the stub measures and why.
func (s Stub) Why() string {
	switch {
	case s.Stated && s.Measures:
		return fmt.Sprintf("the manifest states that the EFI stub of %s measures the command line and the initrd through the EFI CC measurement protocol (kernel.cc_measurement = true)", s.Name())
	case s.Stated:
		return fmt.Sprintf("the manifest states that the EFI stub of %s does not measure through the EFI CC measurement protocol (kernel.cc_measurement = false), so RTMR2 stays zero in a TD: neither the command line nor the initrd is measured", s.Name())
	case s.Measures:
		return fmt.Sprintf("the EFI stub of %s measures the command line and the initrd through the EFI CC measurement protocol (Linux >= %d.%d)", s.Name(), ccMeasurementMajor, ccMeasurementMinor)
	case !s.Tagged:
		return fmt.Sprintf("the EFI stub of %s has no LoadOptions tagged event, so RTMR2 stays zero in a TD: neither the command line nor the initrd is measured", s.Name())
	}
	return fmt.Sprintf("the EFI stub of %s measures the command line and the initrd through TCG2 only, which TDX firmware does not offer (the EFI CC measurement protocol came in Linux %d.%d), so RTMR2 stays zero in a TD: neither the command line nor the initrd is measured",
		s.Name(), ccMeasurementMajor, ccMeasurementMinor)
}

// kernelVersion returns a bzImage's kernel_version string: the setup
// header's pointer at 0x20E, plus 0x200, locates a NUL-terminated string.
func kernelVersion(bz []byte) (string, error) {
	if len(bz) < kernelVersionOff+2 || string(bz[setupHeaderMagicOff:setupHeaderMagicOff+4]) != "HdrS" {
		return "", errors.New("not a bzImage (no \"HdrS\" setup header at 0x202)")
	}
	if v := binary.LittleEndian.Uint16(bz[setupVersionOff:]); v < 0x0200 {
		return "", fmt.Errorf("boot protocol %d.%02d has no kernel_version field", v>>8, v&0xff)
	}
	ptr := int(binary.LittleEndian.Uint16(bz[kernelVersionOff:]))
	if ptr == 0 {
		return "", errors.New("the setup header's kernel_version pointer is zero")
	}
	start := ptr + 0x200
	if start >= len(bz) {
		return "", fmt.Errorf("the kernel_version pointer 0x%x points past the end of the image", ptr)
	}
	end := min(len(bz), start+maxVersionLen)
	n := bytes.IndexByte(bz[start:end], 0)
	if n <= 0 {
		return "", fmt.Errorf("no NUL-terminated kernel_version string at 0x%x", start)
	}
	s := string(bz[start : start+n])
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7e {
			return "", fmt.Errorf("the kernel_version string at 0x%x is not printable ASCII", start)
		}
	}
	return s, nil
}

// DetectStub says whether kernel's EFI stub measures LoadOptions and the
// initrd in a TD. stated (the manifest's kernel.cc_measurement) overrides
// detection, for a backport or a patched stub. Otherwise a stub without
// the LoadOptions tag measures nothing, and one with it measures through
// the CC measurement protocol when the kernel_version string says Linux
// >= 6.9. A tagged stub whose version cannot be read is an error: it
// cannot be told apart, and guessing either way would mispredict RTMR2.
func DetectStub(kernel []byte, stated *bool) (Stub, error) {
	s := Stub{Tagged: bytes.Contains(kernel, []byte(stubLoadOptionsMarker))}
	v, verr := kernelVersion(kernel)
	if verr == nil {
		s.Version = v
		if m := kernelVersionRE.FindStringSubmatch(v); m != nil {
			s.Major, _ = strconv.Atoi(m[1])
			s.Minor, _ = strconv.Atoi(m[2])
		}
	}
	if stated != nil {
		s.Measures, s.Stated = *stated, true
		return s, nil
	}
	if !s.Tagged {
		return s, nil
	}
	if verr != nil {
		return s, fmt.Errorf("cannot tell whether the kernel's EFI stub measures the command line and the initrd into RTMR2: its version is unreadable (%v); state it with cc_measurement = true (the stub measures through the EFI CC measurement protocol: Linux >= %d.%d or a backport) or false in the manifest's kernel block",
			verr, ccMeasurementMajor, ccMeasurementMinor)
	}
	if s.Major == 0 && s.Minor == 0 {
		return s, fmt.Errorf("cannot tell whether the kernel's EFI stub measures the command line and the initrd into RTMR2: its version string %q does not start with major.minor; state it with cc_measurement = true (the stub measures through the EFI CC measurement protocol: Linux >= %d.%d or a backport) or false in the manifest's kernel block",
			v, ccMeasurementMajor, ccMeasurementMinor)
	}
	s.Measures = s.Major > ccMeasurementMajor || s.Major == ccMeasurementMajor && s.Minor >= ccMeasurementMinor
	return s, nil
}
