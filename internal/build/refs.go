package build

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tdforge/tdforge/internal/image/imagedir"
	"github.com/tdforge/tdforge/internal/tdx/platform"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/register"
)

// writeReference writes reference-values.json from the measured registers
// and the exact artifacts just built.
func (p *pipeline) writeReference(ctx context.Context) error {
	doc, err := p.referenceDocument()
	if err != nil {
		return err
	}
	b, err := doc.Marshal()
	if err != nil {
		return err
	}
	p.ref = doc
	return p.write(imagedir.ReferenceValues, b, 0o644)
}

func profileFor(name string) (*platform.Profile, error) {
	if name == "" {
		return platform.Default(), nil
	}
	return platform.Lookup(name)
}

func (p *pipeline) referenceDocument() (*refvalues.Document, error) {
	m, prof, res := p.m, p.prof, p.result
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
	maps.Copy(doc.Reasons, res.Reasons)
	for _, reg := range register.All {
		doc.Registers.Set(reg, ptr48(res.Value(reg)))
	}
	for _, k := range slices.Sorted(maps.Keys(p.inputs)) {
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
	slices.SortFunc(doc.Artifacts, func(a, b refvalues.Digest) int { return strings.Compare(a.Name, b.Name) })
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
