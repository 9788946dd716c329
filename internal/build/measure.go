package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/tdforge/tdforge/internal/image/gptdisk"
	"github.com/tdforge/tdforge/internal/inputs/fetch"
	"github.com/tdforge/tdforge/internal/inputs/lockfile"
	"github.com/tdforge/tdforge/internal/manifest"
	"github.com/tdforge/tdforge/internal/cli/progress"
	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/measure"
	"github.com/tdforge/tdforge/internal/tdx/platform"
)

// Measure precomputes the registers of the image m describes without
// publishing an image. Payloads whose inputs cannot be had here (a variable
// with no value, an unreachable download) need no bytes when the manifest
// pins their verity_root_hash: RTMR3 is then still computed. RTMR2 (and
// RTMR1 on platforms that patch the kernel with the initrd size) embed the
// boot policy, which records every payload's layout, so they are reported
// unknown with the reason, never guessed.
func Measure(ctx context.Context, m *manifest.Manifest, opts Options) (*measure.Result, *platform.Profile, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	opts.Progress = progress.OrDiscard(opts.Progress)
	stage, err := os.MkdirTemp("", "tdforge-measure")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(stage)
	work := filepath.Join(stage, ".work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, nil, err
	}
	lock, err := lockfile.Read(m.Path + ".lock.hcl")
	if err != nil {
		return nil, nil, err
	}
	p := &pipeline{m: m, o: opts, stage: stage, work: work, lock: lock, inputs: map[string]string{}, progressDone: map[string]int64{}}
	prof, err := profileFor(m.VM.Platform)
	if err != nil {
		return nil, nil, fmt.Errorf("vm.platform: %w", err)
	}
	if err := p.resolveFirmware(ctx); err != nil {
		return nil, nil, err
	}
	if err := p.resolveKernel(ctx); err != nil {
		return nil, nil, err
	}
	missing := map[string]string{} // payload -> why its bytes are not here
	for _, pl := range m.Payloads {
		if why := unknownInputs(m, pl.Name); why != "" {
			missing[pl.Name] = why
			continue
		}
		t, err := p.payloadTree(ctx, pl)
		var ne *fetch.NetworkError
		if errors.As(err, &ne) {
			missing[pl.Name] = "its input could not be fetched: " + err.Error()
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("payload %q: %w", pl.Name, err)
		}
		t.Epoch = m.Image.SourceDateEpoch
		if err := t.Normalize(); err != nil {
			return nil, nil, err
		}
		p.payloads = append(p.payloads, builtPayload{name: pl.Name, tree: t})
	}
	if err := p.buildDisk(ctx); err != nil {
		return nil, nil, err
	}
	if len(missing) == 0 {
		for _, step := range []func(context.Context) error{p.buildPolicy, p.buildInitramfs} {
			if err := step(ctx); err != nil {
				return nil, nil, err
			}
		}
		events, err := p.pol.ExpectedEvents()
		if err != nil {
			return nil, nil, err
		}
		r, err := p.compute(prof, events)
		return r, prof, err
	}

	// Some payload bytes are missing: RTMR3 from pins, RTMR2 unknown.
	names := make([]string, 0, len(missing))
	for n := range missing {
		names = append(names, n)
	}
	sort.Strings(names)
	var why []string
	for _, n := range names {
		why = append(why, fmt.Sprintf("payload %q: %s", n, missing[n]))
	}
	layout := &gptdisk.Layout{}
	if p.layout != nil {
		layout.DiskGUID = p.layout.DiskGUID
	}
	var unpinned []string
	for i, pl := range m.Payloads {
		if part, ok := builtPartition(p.layout, pl.Name); ok {
			layout.Partitions = append(layout.Partitions, part)
			continue
		}
		if pl.VerityRootHash == "" || containsPrefix(m.Unknown, "payload."+pl.Name+".verity_root_hash") {
			unpinned = append(unpinned, pl.Name)
			continue
		}
		// The config event does not depend on the layout numbers.
		layout.Partitions = append(layout.Partitions, gptdisk.Partition{Name: pl.Name, Index: i + 1, RootHash: pl.VerityRootHash,
			GUID: "00000000-0000-0000-0000-000000000000", DataSize: 4096, HashOffset: 4096})
	}
	p.layout = layout
	var events []event.Event
	if len(unpinned) == 0 {
		pol, err := p.policyObject()
		if err != nil {
			return nil, nil, err
		}
		if events, err = pol.ExpectedEvents(); err != nil {
			return nil, nil, err
		}
	}
	p.initrd = nil
	r, err := p.compute(prof, events)
	if err != nil {
		return nil, nil, err
	}
	initrdWhy := "the initrd holds the boot policy, which records every payload's layout (sizes, offsets, GUIDs), and " + strings.Join(why, "; ")
	r.RTMR[2] = nil
	r.Reasons["rtmr2"] = initrdWhy
	if prof.KernelSetupPatch {
		r.RTMR[1] = nil
		r.Reasons["rtmr1"] = "platform " + prof.Name + " patches the kernel setup header with the initrd size before measuring it; " + initrdWhy
	}
	if len(unpinned) > 0 {
		r.RTMR[3] = nil
		r.Reasons["rtmr3"] = fmt.Sprintf("payload(s) %s have no verity root hash here: %s; pin verity_root_hash (printed by 'builder build') to measure without the bytes",
			strings.Join(unpinned, ", "), strings.Join(why, "; "))
	}
	return r, prof, nil
}

func containsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
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

// compute runs the measurement engine over what the pipeline holds.
func (p *pipeline) compute(prof *platform.Profile, events []event.Event) (*measure.Result, error) {
	r, err := measure.Compute(measure.Inputs{
		Firmware: p.firmware, Kernel: p.kernel, Initrd: p.initrd, Cmdline: p.m.Kernel.Cmdline,
		MemoryMB: p.m.VM.MemoryMB, CPUs: p.m.VM.CPUs, Profile: prof, RTMR3Events: events,
	})
	if err != nil {
		return nil, fmt.Errorf("measure: %w", err)
	}
	if r.Reasons == nil {
		r.Reasons = map[string]string{}
	}
	return r, nil
}

func builtPartition(l *gptdisk.Layout, name string) (gptdisk.Partition, bool) {
	if l == nil {
		return gptdisk.Partition{}, false
	}
	return l.Partition(name)
}
