package build

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/tdforge/tdforge/internal/image/imagedir"
	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/platform"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
)

// measure computes the registers from the exact artifacts just built and
// writes reference-values.json.
func (p *pipeline) measure(ctx context.Context) error {
	events, err := p.pol.ExpectedEvents()
	if err != nil {
		return err
	}
	doc, err := referenceDocument(p, events)
	if err != nil {
		return err
	}
	b, err := doc.Marshal()
	if err != nil {
		return err
	}
	return p.write(imagedir.ReferenceValues, b, 0o644)
}

func profileFor(name string) (*platform.Profile, error) {
	if name == "" {
		return platform.Default(), nil
	}
	return platform.Lookup(name)
}

func referenceDocument(p *pipeline, events []event.Event) (*refvalues.Document, error) {
	m := p.m
	prof, err := profileFor(m.VM.Platform)
	if err != nil {
		return nil, fmt.Errorf("vm.platform: %w", err)
	}
	res, err := p.compute(prof, events)
	if err != nil {
		return nil, err
	}
	doc := &refvalues.Document{
		Schema: refvalues.Schema,
		Image: refvalues.Image{Name: m.Image.Name, Version: m.Image.Version, Dev: m.Image.Dev, Simulated: m.TDX.Simulate,
			Cmdline: m.Kernel.Cmdline, Memory: m.VM.Memory, CPUs: m.VM.CPUs},
		Platform: refvalues.Platform{Name: prof.Name, QEMU: prof.QEMUVersion, OVMF: prof.OVMFBuild, Version: prof.Version},
		Reasons:  map[string]string{},
		Events:   res.Events,
		TD:       refvalues.TD{Attributes: platform.TDAttributes(m.TDX.Debug), XFAM: platform.XFAM, DebugAllowed: m.TDX.Debug},
		Source:   "builder",
	}
	for k, v := range res.Reasons {
		doc.Reasons[k] = v
	}
	doc.Registers.Set("mrtd", ptr48(res.MRTD))
	for i := 0; i < 4; i++ {
		doc.Registers.Set(fmt.Sprintf("rtmr%d", i), ptr48(res.RTMR[i]))
	}
	for _, k := range sortedKeys(p.inputs) {
		doc.Inputs = append(doc.Inputs, refvalues.Digest{Name: k, SHA256: p.inputs[k]})
	}
	for _, a := range []struct {
		name string
		data []byte
	}{{imagedir.Firmware, p.firmware}, {imagedir.Kernel, p.kernel}, {imagedir.Initrd, p.initrd}} {
		if a.data == nil {
			continue
		}
		s384 := sha512.Sum384(a.data)
		doc.Artifacts = append(doc.Artifacts, refvalues.Digest{Name: a.name, SHA256: sha256hex(a.data), SHA384: hex.EncodeToString(s384[:]), Size: int64(len(a.data))})
	}
	if p.layout != nil {
		if sum, size, err := fileSHA256(filepath.Join(p.stage, imagedir.Disk)); err == nil {
			doc.Artifacts = append(doc.Artifacts, refvalues.Digest{Name: imagedir.Disk, SHA256: sum, Size: size})
		} else if !os.IsNotExist(err) {
			return nil, err
		}
		for _, part := range p.layout.Partitions {
			doc.Payloads = append(doc.Payloads, refvalues.Payload{Name: part.Name, Partition: part.Index, RootHash: part.RootHash,
				Salt: part.Salt, DataSize: part.DataSize, HashOffset: part.HashOffset})
		}
	}
	sort.Slice(doc.Artifacts, func(i, j int) bool { return doc.Artifacts[i].Name < doc.Artifacts[j].Name })
	if len(doc.Reasons) == 0 {
		doc.Reasons = nil
	}
	return doc, nil
}

func ptr48(v *[48]byte) []byte {
	if v == nil {
		return nil
	}
	return v[:]
}
