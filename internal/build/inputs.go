package build

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"

	"github.com/tdforge/tdforge/internal/debpkg"
	"github.com/tdforge/tdforge/internal/fetch"
	"github.com/tdforge/tdforge/internal/imagedir"
	"github.com/tdforge/tdforge/internal/kmod"
	"github.com/tdforge/tdforge/internal/manifest"
)

// fetchSource resolves a pinned source to a verified local file.
func (p *pipeline) fetchSource(ctx context.Context, key string, src manifest.Source) (string, error) {
	local, sha, err := fetch.Resolve(ctx, src, p.o.Cache, p.o.Progress)
	if err != nil {
		return "", fmt.Errorf("%s: %w", key, err)
	}
	p.inputs[key] = sha
	return local, nil
}

// readSourceFile returns the bytes of a firmware/kernel source: the whole
// file, or PathInDeb inside a .deb.
func (p *pipeline) readSourceFile(ctx context.Context, key string, src manifest.Source) ([]byte, string, error) {
	local, err := p.fetchSource(ctx, key, src)
	if err != nil {
		return nil, "", err
	}
	if src.Kind == "deb" {
		if src.PathInDeb == "" {
			return nil, "", fmt.Errorf("%s: deb source needs path = \"<file inside the package>\"", key)
		}
		b, err := debpkg.ReadFile(local, src.PathInDeb)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", key, err)
		}
		return b, local, nil
	}
	b, err := os.ReadFile(local)
	return b, local, err
}

func checkPin(what, pin string, data []byte) error {
	if pin == "" {
		return nil
	}
	if got := sha256hex(data); got != pin {
		return fmt.Errorf("%s: sha256 mismatch:\n  manifest pins %s\n  input has     %s\nfix the pin in the manifest if the new input is intended", what, pin, got)
	}
	return nil
}

func (p *pipeline) resolveFirmware(ctx context.Context) error {
	b, _, err := p.readSourceFile(ctx, "firmware", p.m.Firmware.Source)
	if err != nil {
		return err
	}
	if err := checkPin("firmware", p.m.Firmware.SHA256, b); err != nil {
		return err
	}
	p.firmware = b
	p.inputs["firmware.file"] = sha256hex(b)
	return p.write(imagedir.Firmware, b, 0o644)
}

// moduleSet is the kernel modules going into the initramfs.
type moduleSet struct {
	release string
	dir     string   // extracted lib/modules tree root (host path)
	paths   []string // initramfs paths in load order
}

func (p *pipeline) resolveKernel(ctx context.Context) error {
	b, local, err := p.readSourceFile(ctx, "kernel", p.m.Kernel.Source)
	if err != nil {
		return err
	}
	if err := checkPin("kernel", p.m.Kernel.SHA256, b); err != nil {
		return err
	}
	if !bytes.HasPrefix(b, []byte("MZ")) {
		return fmt.Errorf("kernel: %s is not a bzImage with an EFI stub (no MZ header)", p.m.Kernel.Source.PathInDeb)
	}
	p.kernel = b
	p.inputs["kernel.file"] = sha256hex(b)
	if err := p.write(imagedir.Kernel, b, 0o644); err != nil {
		return err
	}
	if err := p.write(imagedir.Cmdline, []byte(p.m.Kernel.Cmdline+"\n"), 0o644); err != nil {
		return err
	}
	if len(p.m.Kernel.Modules) == 0 {
		p.modules = &moduleSet{}
		return nil
	}
	if p.m.Kernel.Source.Kind != "deb" {
		return fmt.Errorf("kernel.modules needs the kernel from a Debian package (deb source), which carries modules.dep")
	}
	set, err := kmod.Resolve(local, p.m.Kernel.Modules)
	if err != nil {
		return fmt.Errorf("kernel.modules: %w", err)
	}
	dir := filepath.Join(p.work, "modules")
	if err := set.Extract(local, dir); err != nil {
		return fmt.Errorf("kernel.modules: %w", err)
	}
	ms := &moduleSet{release: set.Release, dir: dir}
	for _, mod := range set.Modules {
		ms.paths = append(ms.paths, "/"+path.Clean(mod.Path))
	}
	p.modules = ms
	return nil
}
