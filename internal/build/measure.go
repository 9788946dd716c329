package build

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/measure"
	"github.com/tdforge/tdforge/internal/tdx/policy"
	"github.com/tdforge/tdforge/internal/tdx/register"
)

// measure computes the registers from the artifacts the earlier steps
// produced. With every input here, RTMR3 is the boot policy's expected
// events. With payloads missing, RTMR3 is computed from the built payloads'
// root hashes and the missing ones' pins when every missing payload is
// pinned (the runtime configuration event does not depend on the layout);
// RTMR2, and RTMR1 where the platform patches the kernel with the initrd
// size, are reported unknown with the reason.
func (p *pipeline) measure(ctx context.Context) error {
	if len(p.missing) == 0 && len(p.unset) == 0 {
		events, err := p.pol.ExpectedEvents()
		if err != nil {
			return err
		}
		p.result, err = p.compute(events)
		return err
	}
	why := describeMissing(p.missing, p.unset)
	var unpinned []string
	for _, pl := range p.m.Payloads {
		if slices.ContainsFunc(p.missing, func(m Missing) bool { return m.Payload == pl.Name && !m.Pinned }) {
			unpinned = append(unpinned, pl.Name)
		}
	}
	var events []event.Event
	if len(unpinned) == 0 && len(p.unset) == 0 {
		var err error
		if events, err = p.pinnedEvents(); err != nil {
			return err
		}
	}
	r, err := p.compute(events)
	if err != nil {
		return err
	}
	initrdWhy := "the initrd holds the boot policy, which records every payload's layout (sizes, offsets, GUIDs), and " + why
	if len(p.unset) > 0 {
		initrdWhy = "the kernel command line and the boot policy in the initrd are measured, and " + why
	}
	r.SetUnknown(register.RTMR2, initrdWhy)
	if p.prof.KernelSetupPatch {
		r.SetUnknown(register.RTMR1, "platform "+p.prof.Name+" patches the kernel setup header with the initrd size before measuring it; "+initrdWhy)
	}
	if len(p.unset) > 0 {
		r.SetUnknown(register.RTMR3, "RTMR3 ends with the runtime configuration event, a digest of the boot policy, and "+why)
	} else if len(unpinned) > 0 {
		r.SetUnknown(register.RTMR3, fmt.Sprintf("payload(s) %s have no verity root hash here: %s; pin verity_root_hash (printed by 'builder build') to measure without the bytes",
			strings.Join(unpinned, ", "), why))
	}
	p.result = r
	return nil
}

// pinnedEvents is RTMR3's expected events when some payloads are missing
// but pinned: each payload's root hash (built here, or the manifest's pin)
// in manifest order, then the runtime configuration event.
func (p *pipeline) pinnedEvents() ([]event.Event, error) {
	var events []event.Event
	for _, pl := range p.m.Payloads {
		root := pl.VerityRootHash
		if p.layout != nil {
			if part, ok := p.layout.Partition(pl.Name); ok {
				root = part.RootHash
			}
		}
		events = append(events, policy.Payload{Name: pl.Name, RootHash: root}.Event())
	}
	pol, err := p.policyObject()
	if err != nil {
		return nil, err
	}
	c, err := pol.ConfigEvent()
	if err != nil {
		return nil, err
	}
	return append(events, c), nil
}

// compute runs the measurement engine over what the pipeline holds.
func (p *pipeline) compute(events []event.Event) (*measure.Result, error) {
	r, err := measure.Compute(measure.Inputs{
		Firmware: p.firmware, Kernel: p.kernel, Initrd: p.initrd, Cmdline: p.m.Kernel.Cmdline,
		MemoryMB: p.m.VM.MemoryMB, CPUs: p.m.VM.CPUs, Profile: p.prof, RTMR3Events: events,
		CCMeasurement: p.m.Kernel.CCMeasurement,
	})
	if err != nil {
		return nil, fmt.Errorf("measure: %w", err)
	}
	if r.Reasons == nil {
		r.Reasons = map[string]string{}
	}
	if !p.publishing && r.Stub != nil && !r.Stub.Measures {
		r.Notes = append(r.Notes, "builder build refuses this kernel: the initrd holds the boot policy, which would go unmeasured; "+kernelFix)
	}
	return r, nil
}
