package build

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/tdforge/tdforge/internal/canonjson"

	"github.com/tdforge/tdforge/internal/image/imagedir"
)

// writeInfo writes build.json last: the artifact digests and the toolchain.
func (p *pipeline) writeInfo(ctx context.Context) error {
	info := &imagedir.Info{
		Schema: "tdforge.build/v1",
		Image: imagedir.ImageInfo{Name: p.m.Image.Name, Version: p.m.Image.Version, Dev: p.m.Image.Dev,
			SourceDateEpoch: p.m.Image.SourceDateEpoch, Manifest: filepath.Base(p.m.Path)},
		VM:        imagedir.VMInfo{CPUs: p.m.VM.CPUs, MemoryMB: p.m.VM.MemoryMB, Platform: p.m.VM.Platform},
		TDX:       imagedir.TDXInfo{Simulate: p.m.TDX.Simulate, Debug: p.m.TDX.Debug},
		Kernel:    imagedir.KernelInfo{CCMeasurement: p.m.Kernel.CCMeasurement},
		Agent:     imagedir.AgentInfo{HTTPSPort: listenPort(p.m.Agent.Listen), HTTPPort: listenPort(p.m.Agent.PlainHTTP)},
		Artifacts: map[string]string{},
		Toolchain: map[string]string{"go": p.goVersion, "gcc": gccVersion()},
		Inputs:    p.inputs,
	}
	err := filepath.WalkDir(p.stage, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(p.stage, path)
		sum, _, err := fileSHA256(path)
		if err != nil {
			return err
		}
		info.Artifacts[filepath.ToSlash(rel)] = sum
		return nil
	})
	if err != nil {
		return err
	}
	b, err := canonjson.Marshal(info)
	if err != nil {
		return err
	}
	p.info = info
	return p.write(imagedir.BuildInfo, b, 0o644)
}

func gccVersion() string {
	out, err := exec.Command("gcc", "-dumpfullversion").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
