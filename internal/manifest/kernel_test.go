package manifest

import (
	"strings"
	"testing"
)

// TestKernelCCMeasurement: cc_measurement states the kernel's EFI stub
// capability both ways; absent, it is nil (the builder detects it).
func TestKernelCCMeasurement(t *testing.T) {
	for src, want := range map[string]string{
		"":                           "detect",
		"  cc_measurement = true\n":  "true",
		"  cc_measurement = false\n": "false",
	} {
		m := mustLoad(t, writeManifest(t, strings.Replace(base, "  file { path = \"vmlinuz\" }\n", "  file { path = \"vmlinuz\" }\n"+src, 1)), LoadOptions{})
		got := "detect"
		if c := m.Kernel.CCMeasurement; c != nil {
			got = map[bool]string{true: "true", false: "false"}[*c]
		}
		if got != want {
			t.Errorf("%q: cc_measurement %s, want %s", src, got, want)
		}
	}
}
