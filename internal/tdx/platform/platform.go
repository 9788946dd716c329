// Package platform holds the versioned platform profiles that pin everything
// about the host stack (QEMU, OVMF, VM shape) that changes the TD's
// measurements but is not part of the image. Profiles are small JSON files
// embedded from profiles/*.json.
package platform

import (
	"bytes"
	"embed"
	"encoding/hex"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/tdforge/tdforge/internal/canonjson"
)

//go:embed profiles/*.json
var profileFS embed.FS

// Page-add orders (see internal/tdx/tdvf).
const (
	OrderInterleaved = "interleaved"
	OrderTwoPass     = "two-pass"
)

// Initrd placements of the "initrd=initrd" option OVMF adds to LoadOptions.
const (
	InitrdAppend = "append" // cmdline + " initrd=initrd" (OVMF before mid-2025)
	InitrdPrefix = "prefix" // "initrd=initrd " + cmdline (edk2 after May 2025)
)

// RTMR0 event sequence variants.
const (
	// SeqOVMFDirectBoot: TD HOB, CFV, 5 secure-boot variables, separator,
	// 3 ACPI blobs, BootOrder, Boot0000 (upstream OVMF under QEMU, direct
	// kernel boot).
	SeqOVMFDirectBoot = "ovmf-tdx-direct-boot-v1"
)

// DefaultName is the newest upstream profile.
const DefaultName = "qemu-10.2-tdx-edk2-2025-08"

// Profile is one platform.
type Profile struct {
	Name             string `json:"name"`
	Version          int    `json:"version"`
	Description      string `json:"description"`
	QEMUVersion      string `json:"qemu_version"`
	OVMFBuild        string `json:"ovmf_build"`
	PageAddOrder     string `json:"page_add_order"`
	KernelSetupPatch bool   `json:"kernel_setup_patch"`
	InitrdPlacement  string `json:"initrd_placement"`
	RTMR0Sequence    string `json:"rtmr0_sequence"`
	VM               VM     `json:"vm"`
	// ACPI holds the SHA-384 of QEMU's fw_cfg ACPI blobs for VM; nil means
	// unknown and ACPIUnknownReason says why.
	ACPI              *ACPI  `json:"acpi"`
	ACPIUnknownReason string `json:"acpi_unknown_reason,omitempty"`
	SecureBoot        bool   `json:"secure_boot"`
	// BootVariables are the UEFI boot variables OVMF measures (BootOrder
	// then Boot0000); nil means unknown and BootVariablesUnknownReason says why.
	BootVariables              []BootVariable `json:"boot_variables"`
	BootVariablesUnknownReason string         `json:"boot_variables_unknown_reason,omitempty"`
	// Simulated marks the TDX simulator platform (dev images only).
	Simulated bool `json:"simulated"`
}

// VM is the shape the ACPI digests were captured for.
type VM struct {
	CPUs     int `json:"cpus"`
	MemoryMB int `json:"memory_mb"`
}

// ACPI holds SHA-384 hex digests of etc/table-loader, etc/acpi/rsdp and
// etc/acpi/tables as QEMU hands them to the firmware.
type ACPI struct {
	TableLoader string `json:"table_loader"`
	RSDP        string `json:"rsdp"`
	Tables      string `json:"tables"`
}

// BootVariable is one EV_EFI_VARIABLE_BOOT variable: its UEFI name and its
// data (hex).
type BootVariable struct {
	Name string `json:"name"`
	Data string `json:"data"`
}

// Digests returns the three ACPI digests in measurement order.
func (a *ACPI) Digests() ([3][48]byte, error) {
	var out [3][48]byte
	for i, s := range []string{a.TableLoader, a.RSDP, a.Tables} {
		b, err := hex.DecodeString(s)
		if err != nil || len(b) != 48 {
			return out, fmt.Errorf("ACPI digest %d %q is not 96 hex digits", i, s)
		}
		copy(out[i][:], b)
	}
	return out, nil
}

// Validate checks a profile's fields.
func (p *Profile) Validate() error {
	if p.Name == "" || strings.ContainsAny(p.Name, " /\t\n") {
		return fmt.Errorf("platform profile: name %q must be a non-empty token", p.Name)
	}
	e := func(f string, a ...any) error {
		return fmt.Errorf("platform profile %s: "+f, append([]any{p.Name}, a...)...)
	}
	if p.Version < 1 {
		return e("version must be >= 1")
	}
	if p.QEMUVersion == "" || p.OVMFBuild == "" {
		return e("qemu_version and ovmf_build are required")
	}
	if p.PageAddOrder != OrderInterleaved && p.PageAddOrder != OrderTwoPass {
		return e("page_add_order %q must be %q or %q", p.PageAddOrder, OrderInterleaved, OrderTwoPass)
	}
	if p.InitrdPlacement != InitrdAppend && p.InitrdPlacement != InitrdPrefix {
		return e("initrd_placement %q must be %q or %q", p.InitrdPlacement, InitrdAppend, InitrdPrefix)
	}
	if p.RTMR0Sequence != SeqOVMFDirectBoot {
		return e("rtmr0_sequence %q is unknown (want %q)", p.RTMR0Sequence, SeqOVMFDirectBoot)
	}
	if p.VM.CPUs < 1 || p.VM.MemoryMB < 256 {
		return e("vm shape needs cpus >= 1 and memory_mb >= 256")
	}
	if p.ACPI == nil && p.ACPIUnknownReason == "" {
		return e("acpi is absent: acpi_unknown_reason must say why")
	}
	if p.ACPI != nil {
		if _, err := p.ACPI.Digests(); err != nil {
			return e("%v", err)
		}
	}
	if p.SecureBoot {
		return e("secure_boot=true is not supported (the RTMR0 model measures empty secure-boot variables)")
	}
	if p.BootVariables == nil && p.BootVariablesUnknownReason == "" {
		return e("boot_variables is absent: boot_variables_unknown_reason must say why")
	}
	if p.BootVariables != nil {
		if len(p.BootVariables) != 2 || p.BootVariables[0].Name != "BootOrder" || p.BootVariables[1].Name != "Boot0000" {
			return e("boot_variables must be [BootOrder, Boot0000]")
		}
		for _, v := range p.BootVariables {
			if _, err := hex.DecodeString(v.Data); err != nil {
				return e("boot variable %s data is not hex", v.Name)
			}
		}
	}
	return nil
}

// ShapeMismatch returns why a VM of cpus/memoryMB cannot use the profile's
// ACPI digests, or "" when the shape matches.
func (p *Profile) ShapeMismatch(cpus, memoryMB int) string {
	if cpus == p.VM.CPUs && memoryMB == p.VM.MemoryMB {
		return ""
	}
	return fmt.Sprintf("the VM shape (%d CPUs, %d MiB) differs from platform %s's (%d CPUs, %d MiB); QEMU's ACPI tables depend on it, so RTMR0 cannot be predicted: use the profile's shape or add a profile for this shape",
		cpus, memoryMB, p.Name, p.VM.CPUs, p.VM.MemoryMB)
}

// Rules renders the variant rules in one line, for listings.
func (p *Profile) Rules() string {
	patch := "unpatched kernel"
	if p.KernelSetupPatch {
		patch = "QEMU setup-header patch"
	}
	ip := `LoadOptions = cmdline + " initrd=initrd"`
	if p.InitrdPlacement == InitrdPrefix {
		ip = `LoadOptions = "initrd=initrd " + cmdline`
	}
	return fmt.Sprintf("MRTD %s; %s; %s; RTMR0 %s", p.PageAddOrder, patch, ip, p.RTMR0Sequence)
}

var profiles = mustLoad()

func mustLoad() map[string]*Profile {
	ents, err := profileFS.ReadDir("profiles")
	if err != nil {
		panic(err)
	}
	m := map[string]*Profile{}
	for _, e := range ents {
		b, err := profileFS.ReadFile(path.Join("profiles", e.Name()))
		if err != nil {
			panic(err)
		}
		p, err := Decode(b)
		if err != nil {
			panic(fmt.Sprintf("embedded %s: %v", e.Name(), err))
		}
		if p.Name+".json" != e.Name() {
			panic(fmt.Sprintf("embedded %s holds profile %q", e.Name(), p.Name))
		}
		m[p.Name] = p
	}
	if m[DefaultName] == nil {
		panic("default platform profile missing")
	}
	return m
}

// Decode strictly parses and validates one profile.
func Decode(b []byte) (*Profile, error) {
	var p Profile
	if err := canonjson.Decode(bytes.NewReader(b), &p); err != nil {
		return nil, fmt.Errorf("platform profile: %w", err)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Lookup returns a copy of the named profile.
func Lookup(name string) (*Profile, error) {
	p, ok := profiles[name]
	if !ok {
		var names []string
		for _, q := range List() {
			names = append(names, q.Name)
		}
		return nil, fmt.Errorf("platform %q is unknown; known platforms: %s", name, strings.Join(names, ", "))
	}
	c := *p
	return &c, nil
}

// List returns copies of all profiles sorted by name.
func List() []*Profile {
	out := make([]*Profile, 0, len(profiles))
	for _, p := range profiles {
		c := *p
		out = append(out, &c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Default returns the newest upstream profile.
func Default() *Profile {
	p, _ := Lookup(DefaultName)
	return p
}
