package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/testutil/testdeps"
)

func TestMeasureRawCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runMeasureRaw([]string{"--firmware", "/usr/share/ovmf/OVMF.fd", "--memory", "2G", "--platform", "qemu-8.2-tdx-ovmf-2024"}, &out, &errb); code != cli.ExitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	s := out.String()
	for _, w := range []string{"qemu-8.2-tdx-ovmf-2024", "MRTD", "RTMR0", "unknown", "two-pass"} {
		if !strings.Contains(s, w) {
			t.Errorf("output lacks %q:\n%s", w, s)
		}
	}
	out.Reset()
	if code := runMeasureRaw([]string{"--firmware=/usr/share/ovmf/OVMF.fd", "--json"}, &out, &errb); code != cli.ExitOK {
		t.Fatalf("json exit %d: %s", code, errb.String())
	}
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil || m["mrtd"] == nil || m["rtmr1"] != nil {
		t.Errorf("json %v %v", m, err)
	}
	out.Reset()
	if code := runMeasureRaw([]string{"--firmware", "/usr/share/ovmf/OVMF.fd", "--explain"}, &out, &errb); code != cli.ExitOK || !strings.Contains(out.String(), "td-hob") {
		t.Errorf("explain exit %d:\n%s", code, out.String())
	}
	errb.Reset()
	if code := runMeasureRaw([]string{"--firmware", "/usr/share/OVMF/OVMF_CODE.fd"}, &out, &errb); code != cli.ExitFail || !strings.Contains(errb.String(), "OVMF_CODE") {
		t.Errorf("split firmware: exit %d %s", code, errb.String())
	}
	if code := runMeasureRaw([]string{"--firmware", "x", "--platform", "nope"}, &out, &errb); code != cli.ExitUsage {
		t.Errorf("unknown platform: exit %d", code)
	}
	if !hasFlag([]string{"-x", "--firmware=a"}, "firmware") || hasFlag([]string{"m.hcl"}, "firmware") {
		t.Error("hasFlag")
	}
}

func TestPlatformsCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runPlatforms(context.Background(), nil, &out, &errb); code != cli.ExitOK || !strings.Contains(out.String(), "qemu-10.2-tdx-edk2-2025-08 (default)") {
		t.Errorf("exit %d:\n%s", code, out.String())
	}
	out.Reset()
	if code := runPlatforms(context.Background(), []string{"--json"}, &out, &errb); code != cli.ExitOK {
		t.Fatal(code)
	}
	var list []map[string]any
	if err := json.Unmarshal(out.Bytes(), &list); err != nil || len(list) != 4 {
		t.Errorf("%v %v", list, err)
	}
}

// TestMeasureRawKernelStub: a 6.1 kernel's RTMR2 is predicted zero with a
// note naming it; --cc-measurement=true states otherwise.
func TestMeasureRawKernelStub(t *testing.T) {
	dir := t.TempDir()
	k, initrd := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd")
	if err := os.WriteFile(k, testdeps.Vmlinuz61(t), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(initrd, []byte("boot policy"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--firmware", "/usr/share/ovmf/OVMF.fd", "--kernel", k, "--initrd", initrd, "--platform", "qemu-10.2-tdx-edk2-2025-08"}
	var out, errb bytes.Buffer
	if code := runMeasureRaw(args, &out, &errb); code != cli.ExitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	zero := "RTMR2     " + strings.Repeat("0", 96)
	if s := out.String(); !strings.Contains(s, zero) || !strings.Contains(s, "note      RTMR2 is zero (no events): the EFI stub of 6.1.0-56-cloud-amd64 (Linux 6.1)") {
		t.Errorf("6.1 kernel:\n%s", s)
	}
	out.Reset()
	if code := runMeasureRaw(append(args, "--cc-measurement=true"), &out, &errb); code != cli.ExitOK || strings.Contains(out.String(), zero) {
		t.Errorf("--cc-measurement=true: exit %d\n%s", code, out.String())
	}
	if code := runMeasureRaw(append(args, "--cc-measurement=yes"), &out, &errb); code != cli.ExitUsage || !strings.Contains(errb.String(), "want auto, true or false") {
		t.Errorf("--cc-measurement=yes: exit %d %s", code, errb.String())
	}
}
