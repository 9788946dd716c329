package platform

import (
	"strings"
	"testing"
)

func TestShippedProfiles(t *testing.T) {
	want := map[string]struct {
		order, initrd string
		patch, sim    bool
	}{
		"qemu-7.2-tcg-sim":           {OrderInterleaved, InitrdAppend, true, true},
		"qemu-8.2-tdx-ovmf-2024":     {OrderTwoPass, InitrdAppend, true, false},
		"qemu-10.1-tdx-edk2-2025-02": {OrderInterleaved, InitrdAppend, true, false},
		"qemu-10.2-tdx-edk2-2025-08": {OrderInterleaved, InitrdPrefix, false, false},
	}
	list := List()
	if len(list) != len(want) {
		t.Fatalf("%d profiles, want %d", len(list), len(want))
	}
	for _, p := range list {
		w, ok := want[p.Name]
		if !ok {
			t.Errorf("unexpected profile %s", p.Name)
			continue
		}
		if p.PageAddOrder != w.order || p.InitrdPlacement != w.initrd || p.KernelSetupPatch != w.patch || p.Simulated != w.sim {
			t.Errorf("%s: %+v", p.Name, p)
		}
		// Hardware platforms cannot be captured without TDX hardware: their
		// ACPI digests must be absent with a reason, never invented. The
		// simulator's are captured from its own VM.
		if !p.Simulated && (p.ACPI != nil || p.ACPIUnknownReason == "") {
			t.Errorf("%s: ACPI %v reason %q", p.Name, p.ACPI, p.ACPIUnknownReason)
		}
		if (p.ACPI == nil) == (p.ACPIUnknownReason == "") {
			t.Errorf("%s: exactly one of acpi and acpi_unknown_reason must be set", p.Name)
		}
		if p.VM.CPUs != 2 || p.VM.MemoryMB != 2048 {
			t.Errorf("%s: vm %+v", p.Name, p.VM)
		}
	}
	if Default().Name != "qemu-10.2-tdx-edk2-2025-08" {
		t.Error("default must be the newest upstream profile")
	}
	if _, err := Lookup("nope"); err == nil || !strings.Contains(err.Error(), "qemu-7.2-tcg-sim") {
		t.Errorf("unknown lookup: %v", err)
	}
	// Lookup returns a copy.
	p, _ := Lookup("qemu-7.2-tcg-sim")
	p.Name = "changed"
	if q, _ := Lookup("qemu-7.2-tcg-sim"); q.Name != "qemu-7.2-tcg-sim" {
		t.Error("Lookup must return a copy")
	}
}

func TestShapeAndValidation(t *testing.T) {
	p := Default()
	if p.ShapeMismatch(2, 2048) != "" {
		t.Error("matching shape reported as mismatch")
	}
	if w := p.ShapeMismatch(4, 2048); !strings.Contains(w, "4 CPUs") {
		t.Errorf("mismatch reason %q", w)
	}
	for name, js := range map[string]string{
		"unknown field":  `{"name":"x","bogus":1}`,
		"bad order":      `{"name":"x","version":1,"qemu_version":"1","ovmf_build":"b","page_add_order":"random","initrd_placement":"append","rtmr0_sequence":"ovmf-tdx-direct-boot-v1","vm":{"cpus":1,"memory_mb":512},"acpi_unknown_reason":"r","boot_variables_unknown_reason":"r"}`,
		"acpi no reason": `{"name":"x","version":1,"qemu_version":"1","ovmf_build":"b","page_add_order":"interleaved","initrd_placement":"append","rtmr0_sequence":"ovmf-tdx-direct-boot-v1","vm":{"cpus":1,"memory_mb":512},"boot_variables_unknown_reason":"r"}`,
		"bad acpi hex":   `{"name":"x","version":1,"qemu_version":"1","ovmf_build":"b","page_add_order":"interleaved","initrd_placement":"append","rtmr0_sequence":"ovmf-tdx-direct-boot-v1","vm":{"cpus":1,"memory_mb":512},"acpi":{"table_loader":"00","rsdp":"00","tables":"00"},"boot_variables_unknown_reason":"r"}`,
	} {
		if _, err := Decode([]byte(js)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	ok := `{"name":"x","version":1,"qemu_version":"1","ovmf_build":"b","page_add_order":"interleaved","initrd_placement":"prefix","rtmr0_sequence":"ovmf-tdx-direct-boot-v1","vm":{"cpus":1,"memory_mb":512},"acpi":{"table_loader":"` + strings.Repeat("ab", 48) + `","rsdp":"` + strings.Repeat("cd", 48) + `","tables":"` + strings.Repeat("ef", 48) + `"},"boot_variables":[{"name":"BootOrder","data":"0000"},{"name":"Boot0000","data":"01"}]}`
	p, err := Decode([]byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode([]byte(ok + `{"name":"y"}`)); err == nil || !strings.Contains(err.Error(), "trailing data") {
		t.Errorf("a second profile after the first: %v", err)
	}
	d, err := p.ACPI.Digests()
	if err != nil || d[2][0] != 0xef {
		t.Errorf("digests %x %v", d, err)
	}
	if !strings.Contains(p.Rules(), `"initrd=initrd " + cmdline`) {
		t.Errorf("rules %q", p.Rules())
	}
}
