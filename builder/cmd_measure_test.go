package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/cli"
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
