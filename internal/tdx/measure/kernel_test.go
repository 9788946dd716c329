package measure

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"

	"github.com/tdforge/tdforge/internal/testutil/testdeps"
)

// withVersion returns a copy of the real 6.1 bzImage whose kernel_version
// string reads v (written over the original, which is longer).
func withVersion(t *testing.T, v string) []byte {
	t.Helper()
	k := testdeps.Vmlinuz61(t)
	old, err := kernelVersion(k)
	if err != nil {
		t.Fatal(err)
	}
	if len(v) > len(old) {
		t.Fatalf("version %q is longer than the original %q", v, old)
	}
	at := int(binary.LittleEndian.Uint16(k[kernelVersionOff:])) + 0x200
	copy(k[at:], append([]byte(v), 0))
	return k
}

func TestDetectStubDebianKernels(t *testing.T) {
	for _, tc := range []struct {
		name     string
		kernel   []byte
		release  string
		measures bool
	}{
		{"6.1", testdeps.Vmlinuz61(t), "6.1.0-56-cloud-amd64", false},
		{"6.12", testdeps.Vmlinuz(t), "6.12.117+deb12-cloud-amd64", true},
	} {
		s, err := DetectStub(tc.kernel, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if s.Release() != tc.release || s.Measures != tc.measures || s.Stated || !s.Tagged {
			t.Errorf("%s: %+v (release %q), want release %q, measures %v, detected, tagged", tc.name, s, s.Release(), tc.release, tc.measures)
		}
	}
}

func TestDetectStubVersions(t *testing.T) {
	for v, want := range map[string]bool{
		"6.1.0-56-cloud-amd64 (x)": false,
		"6.8.12 (x)":               false,
		"6.9.0 (x)":                true,
		"6.10.0-rc1":               true,
		"7.0.0":                    true,
		"10.1":                     true,
		"5.19.17":                  false,
		"4.9":                      false,
	} {
		s, err := DetectStub(withVersion(t, v), nil)
		if err != nil {
			t.Errorf("%q: %v", v, err)
			continue
		}
		if s.Measures != want {
			t.Errorf("%q: measures %v, want %v", v, s.Measures, want)
		}
	}
	// An unreadable version is an error naming the manifest's override.
	zero := testdeps.Vmlinuz61(t)
	binary.LittleEndian.PutUint16(zero[kernelVersionOff:], 0)
	for name, k := range map[string][]byte{
		"no major.minor": withVersion(t, "Linux version unknown"),
		"zero pointer":   zero,
		"empty string":   withVersion(t, ""),
	} {
		if _, err := DetectStub(k, nil); err == nil || !strings.Contains(err.Error(), "cc_measurement = true") {
			t.Errorf("%s: error %v, want one naming cc_measurement", name, err)
		}
		// The manifest's statement settles it.
		if s, err := DetectStub(k, ptr(true)); err != nil || !s.Measures || !s.Stated {
			t.Errorf("%s with cc_measurement = true: %+v %v", name, s, err)
		}
	}
	// A stub without the LoadOptions tag measures nothing, whatever its version.
	k := withVersion(t, "6.12.0")
	untagged := bytes.ReplaceAll(k, []byte(stubLoadOptionsMarker), []byte(strings.Repeat("x", len(stubLoadOptionsMarker))))
	if s, err := DetectStub(untagged, nil); err != nil || s.Measures || s.Tagged || !strings.Contains(s.Why(), "no LoadOptions tagged event") {
		t.Errorf("untagged stub: %+v %v (%s)", s, err, s.Why())
	}
	if _, err := kernelVersion([]byte("MZ not a bzImage")); err == nil {
		t.Error("kernelVersion accepted a non-bzImage")
	}
}

func TestDetectStubStated(t *testing.T) {
	s, err := DetectStub(testdeps.Vmlinuz61(t), ptr(true))
	if err != nil || !s.Measures || !s.Stated || s.Release() != "6.1.0-56-cloud-amd64" || !strings.Contains(s.Why(), "cc_measurement = true") {
		t.Errorf("6.1 stated true: %+v %v", s, err)
	}
	s, err = DetectStub(testdeps.Vmlinuz(t), ptr(false))
	if err != nil || s.Measures || !s.Stated || !strings.Contains(s.Why(), "cc_measurement = false") {
		t.Errorf("6.12 stated false: %+v %v", s, err)
	}
}

// TestRTMR2FollowsTheKernel: a kernel whose EFI stub cannot measure into
// RTMRs gives an all-zero RTMR2 without events on real and simulated
// profiles alike, with a note naming the kernel; stating cc_measurement
// brings the events back.
func TestRTMR2FollowsTheKernel(t *testing.T) {
	fw, k61, k612 := ovmf(t), testdeps.Vmlinuz61(t), testdeps.Vmlinuz(t)
	for _, name := range []string{"qemu-10.2-tdx-edk2-2025-08", "qemu-8.2-tdx-ovmf-2024", "qemu-7.2-tcg-sim"} {
		in := Inputs{Firmware: fw, Kernel: k61, Initrd: []byte("initrd holding the boot policy"), Cmdline: "quiet", MemoryMB: 2048, CPUs: 2, Profile: mustProfile(t, name)}
		r, err := Compute(in)
		if err != nil {
			t.Fatal(err)
		}
		if r.RTMR[2] == nil || *r.RTMR[2] != [48]byte{} || len(r.Events["rtmr2"]) != 0 {
			t.Errorf("%s, 6.1: RTMR2 %x with %d events, want zero without events (%v)", name, r.RTMR[2], len(r.Events["rtmr2"]), r.Reasons)
		}
		note := strings.Join(r.Notes, "\n")
		if !strings.Contains(note, "RTMR2 is zero") || !strings.Contains(note, "6.1.0-56-cloud-amd64 (Linux 6.1)") || !strings.Contains(note, "TCG2") {
			t.Errorf("%s, 6.1: notes %q must name the kernel and why RTMR2 is zero", name, r.Notes)
		}
		if r.Stub == nil || r.Stub.Measures {
			t.Errorf("%s, 6.1: stub %+v", name, r.Stub)
		}
		for _, e := range r.FirmwareEvents {
			if e.Register.RTMRIndex() == 2 {
				t.Errorf("%s, 6.1: CCEL holds an RTMR2 event %q", name, e.Description)
			}
		}

		in.CCMeasurement = ptr(true)
		if r, err = Compute(in); err != nil || r.RTMR[2] == nil || *r.RTMR[2] == [48]byte{} || len(r.Events["rtmr2"]) != 2 {
			t.Errorf("%s, 6.1 stated cc_measurement = true: RTMR2 must hold LoadOptions and initrd: %v %v", name, r.Events["rtmr2"], err)
		}
		in.Kernel, in.CCMeasurement = k612, nil
		if r, err = Compute(in); err != nil || len(r.Events["rtmr2"]) != 2 || r.Stub == nil || !r.Stub.Measures {
			t.Errorf("%s, 6.12: RTMR2 must hold LoadOptions and initrd: %v %v", name, r.Events["rtmr2"], err)
		}
		in.CCMeasurement = ptr(false)
		if r, err = Compute(in); err != nil || *r.RTMR[2] != [48]byte{} || len(r.Events["rtmr2"]) != 0 {
			t.Errorf("%s, 6.12 stated cc_measurement = false: RTMR2 must be zero: %v %v", name, r.Events["rtmr2"], err)
		}
	}
	// Undecidable: RTMR2 unknown, with the reason naming the fix.
	r, err := Compute(Inputs{Firmware: fw, Kernel: withVersion(t, "unknown"), Cmdline: "quiet", MemoryMB: 2048, CPUs: 2})
	if err != nil {
		t.Fatal(err)
	}
	if r.RTMR[2] != nil || !strings.Contains(r.Reasons["rtmr2"], "cc_measurement") {
		t.Errorf("unreadable version: RTMR2 %x, reason %q", r.RTMR[2], r.Reasons["rtmr2"])
	}
}

// TestSimulatorLaunchFollowsTheKernel: what `builder launch --simulate`
// hands the guest (Result.Launch) is no kinder than hardware: a 6.1 kernel
// starts with RTMR2 zero and a CCEL without RTMR2 events, and a kernel
// whose capability cannot be told gives no launch at all.
func TestSimulatorLaunchFollowsTheKernel(t *testing.T) {
	in := Inputs{Firmware: ovmf(t), Kernel: testdeps.Vmlinuz61(t), Initrd: []byte("boot policy"), Cmdline: "quiet", MemoryMB: 2048, CPUs: 2, Profile: mustProfile(t, "qemu-7.2-tcg-sim")}
	r, err := Compute(in)
	if err != nil {
		t.Fatal(err)
	}
	l, err := r.Launch()
	if err != nil {
		t.Fatal(err)
	}
	if l.RTMR[2] != [48]byte{} {
		t.Errorf("simulated RTMR2 %x, want zero for a 6.1 kernel", l.RTMR[2])
	}
	el, err := tcg.ParseEventLog(l.CCEL, tcg.ParseOpts{AllowPadding: true})
	if err != nil {
		t.Fatal(err)
	}
	if evs := byMR(el.Events(register.HashSHA384), 3); len(evs) != 0 {
		t.Errorf("simulated CCEL holds %d RTMR2 events for a 6.1 kernel", len(evs))
	}
	in.Kernel = withVersion(t, "unknown")
	if r, err = Compute(in); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Launch(); err == nil || !strings.Contains(err.Error(), "cc_measurement") {
		t.Errorf("launch with an undecidable kernel: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }
