package build

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tdforge/tdforge/internal/manifest"
	"github.com/tdforge/tdforge/internal/tdx/platform"
)

// Plan is a manifest resolved into what the pipeline needs before any step
// runs: the platform profile the registers are computed for, and the inputs
// that cannot be had here. Build and Measure both run a Plan through the
// same steps; Build refuses one with missing inputs, Measure stops where
// they are needed and reports which registers that leaves unknown.
type Plan struct {
	Manifest *manifest.Manifest
	Profile  *platform.Profile
	// Missing lists the payloads whose inputs depend on variables without
	// a value, in manifest order. Payloads whose download fails are added
	// to a Measurement's list while it runs.
	Missing []Missing
	// Unset lists the attributes outside payloads (kernel command line,
	// services, agent, network, image identity) that depend on variables
	// without a value. They all reach the boot policy, so RTMR2, RTMR3 and
	// (where the platform patches the kernel with the initrd size) RTMR1
	// cannot be computed.
	Unset []string
}

// Missing is a payload whose bytes are not available to this run.
type Missing struct {
	Payload string
	Reason  string // e.g. "depends on unset variables (payload.model.…)"
	// Pinned is set when the manifest pins the payload's verity root
	// hash, which is all RTMR3 needs of it.
	Pinned bool
}

// NewPlan resolves m's platform profile and lists its missing inputs.
func NewPlan(m *manifest.Manifest) (*Plan, error) {
	prof, err := profileFor(m.VM.Platform)
	if err != nil {
		return nil, fmt.Errorf("vm.platform: %w", err)
	}
	p := &Plan{Manifest: m, Profile: prof}
	var base []string
	for _, u := range m.Unknown {
		switch {
		case strings.HasPrefix(u, "payload."):
		case neededByEveryRegister(u):
			base = append(base, u)
		default:
			p.Unset = append(p.Unset, u)
		}
	}
	if len(base) > 0 {
		return nil, &UnsetError{Attributes: base}
	}
	for _, pl := range m.Payloads {
		if why := unknownInputs(m, pl.Name); why != "" {
			p.Missing = append(p.Missing, Missing{Payload: pl.Name, Reason: why, Pinned: pinned(m, pl)})
		}
	}
	return p, nil
}

// neededByEveryRegister reports whether the attribute at path selects an
// input every register depends on: the firmware, the VM shape (and so the
// platform profile) or the kernel itself.
func neededByEveryRegister(path string) bool {
	if strings.HasPrefix(path, "firmware.") || strings.HasPrefix(path, "vm.") {
		return true
	}
	return strings.HasPrefix(path, "kernel.") && path != "kernel.cmdline" && !strings.HasPrefix(path, "kernel.modules")
}

// UnsetError says that inputs every register depends on depend on
// variables without a value: nothing can be measured.
type UnsetError struct{ Attributes []string }

func (e *UnsetError) Error() string {
	verb := "has no value (it depends on a variable without one)"
	if len(e.Attributes) > 1 {
		verb = "have no value (they depend on variables without one)"
	}
	return fmt.Sprintf("cannot measure: %s %s; the firmware, the VM shape and the kernel are inputs of every register",
		strings.Join(e.Attributes, ", "), verb)
}

// missingError is returned by Build for a plan with missing inputs.
type missingError struct {
	missing []Missing
	unset   []string
}

func (e *missingError) Error() string {
	return "cannot build: " + describeMissing(e.missing, e.unset)
}

// describeMissing is the missing payloads, sorted by name, then the unset
// attributes: `payload "a": why; payload "b": why; kernel.cmdline: why`.
func describeMissing(ms []Missing, unset []string) string {
	ms = slices.Clone(ms)
	slices.SortFunc(ms, func(a, b Missing) int { return strings.Compare(a.Payload, b.Payload) })
	var why []string
	for _, m := range ms {
		why = append(why, fmt.Sprintf("payload %q: %s", m.Payload, m.Reason))
	}
	for _, u := range unset {
		why = append(why, u+" depends on a variable without a value")
	}
	return strings.Join(why, "; ")
}

// pinned reports whether the manifest pins pl's verity root hash with a
// known value.
func pinned(m *manifest.Manifest, pl manifest.Payload) bool {
	prefix := "payload." + pl.Name + ".verity_root_hash"
	return pl.VerityRootHash != "" && !slices.ContainsFunc(m.Unknown, func(u string) bool { return strings.HasPrefix(u, prefix) })
}

// unknownInputs says why a payload's inputs are unknown (an unset variable
// in anything but its verity_root_hash pin), or "".
func unknownInputs(m *manifest.Manifest, name string) string {
	var attrs []string
	for _, u := range m.Unknown {
		if strings.HasPrefix(u, "payload."+name+".") && u != "payload."+name+".verity_root_hash" {
			attrs = append(attrs, u)
		}
	}
	if len(attrs) == 0 {
		return ""
	}
	return "depends on unset variables (" + strings.Join(attrs, ", ") + ")"
}
