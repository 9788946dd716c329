package reference

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/register"
)

// Shape names the trusted host or VM shape a recorded RTMR0 comes from.
type Shape struct {
	Name     string // e.g. "tcg-2G-2cpu" or a host name
	Platform string // platform profile; "" means the reference's
	Memory   string // "" means the reference image's
	CPUs     int    // 0 means the reference image's
}

// Merge adds the RTMR0 of rec, a document written by `verifier record`
// from a TD on trusted hardware, to ref's accepted RTMR0 set as a member
// named shape.Name, with rec's RTMR0 events. A member of the same name is
// replaced (replaced is true). ref must leave RTMR0 null, and rec must run
// ref's image: its MRTD, RTMR1 and RTMR2 must equal those ref pins.
func Merge(ref, rec *refvalues.Document, shape Shape) (replaced bool, err error) {
	switch {
	case shape.Name == "":
		return false, errors.New("the accepted value needs a name (the VM shape or host it was recorded on)")
	case ref.Registers.RTMR0 != nil:
		return false, fmt.Errorf("the reference already pins RTMR0 to %s…; accepted values are for an RTMR0 the builder leaves null (real-TDX platform profiles)", (*ref.Registers.RTMR0)[:16])
	case rec.Source != "recorded":
		return false, fmt.Errorf("the recorded document has source %q, not \"recorded\": give the output of `verifier record`", rec.Source)
	case rec.Registers.RTMR0 == nil:
		return false, errors.New("the recorded document has no RTMR0")
	}
	if shape.Platform == "" {
		shape.Platform = ref.Platform.Name
	}
	if ref.Platform.Name != "" && shape.Platform != ref.Platform.Name {
		return false, fmt.Errorf("platform profile %q is not the reference's %q: record on the platform the reference was built for", shape.Platform, ref.Platform.Name)
	}
	for _, reg := range []register.Register{register.MRTD, register.RTMR1, register.RTMR2} {
		want, got := ref.Registers.Get(reg), rec.Registers.Get(reg)
		if want != nil && (got == nil || !strings.EqualFold(*want, *got)) {
			g := "null"
			if got != nil {
				g = *got
			}
			return false, fmt.Errorf("the recorded TD does not run this reference's image: its %s is %s, the reference pins %s", reg, g, *want)
		}
	}
	if shape.Memory == "" {
		shape.Memory = ref.Image.Memory
	}
	if shape.CPUs == 0 {
		shape.CPUs = ref.Image.CPUs
	}
	m := refvalues.AcceptedValue{
		Name: shape.Name, Platform: shape.Platform, Memory: shape.Memory, CPUs: shape.CPUs,
		Value: strings.ToLower(*rec.Registers.RTMR0), Events: slices.Clone(rec.Events["rtmr0"]), Source: "recorded",
	}
	if m.Events == nil {
		m.Events = []refvalues.Event{}
	}
	if err := (&refvalues.Accepted{RTMR0: []refvalues.AcceptedValue{m}}).Check(); err != nil {
		return false, fmt.Errorf("recorded RTMR0: %w", err)
	}
	if ref.Accepted == nil {
		ref.Accepted = &refvalues.Accepted{}
	}
	set := ref.Accepted.RTMR0
	if i := slices.IndexFunc(set, func(v refvalues.AcceptedValue) bool { return v.Name == m.Name }); i >= 0 {
		set[i] = m
		return true, nil
	}
	ref.Accepted.RTMR0 = append(set, m)
	return false, nil
}
