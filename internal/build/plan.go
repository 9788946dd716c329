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
	for _, pl := range m.Payloads {
		if why := unknownInputs(m, pl.Name); why != "" {
			p.Missing = append(p.Missing, Missing{Payload: pl.Name, Reason: why, Pinned: pinned(m, pl)})
		}
	}
	return p, nil
}

// missingError is returned by Build for a plan with missing inputs.
type missingError struct{ missing []Missing }

func (e *missingError) Error() string {
	return "cannot build: " + describeMissing(e.missing)
}

// describeMissing is the missing payloads, sorted by name:
// `payload "a": why; payload "b": why`.
func describeMissing(ms []Missing) string {
	ms = slices.Clone(ms)
	slices.SortFunc(ms, func(a, b Missing) int { return strings.Compare(a.Payload, b.Payload) })
	var why []string
	for _, m := range ms {
		why = append(why, fmt.Sprintf("payload %q: %s", m.Payload, m.Reason))
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
