package build

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/tdforge/tdforge/internal/image/imagedir"
	"github.com/tdforge/tdforge/internal/inputs/debpkg"
	"github.com/tdforge/tdforge/internal/inputs/fetch"
	"github.com/tdforge/tdforge/internal/inputs/kmod"
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
	src := p.m.Kernel.Source
	if len(p.m.Kernel.Modules) > 0 && src.Kind != "deb" {
		return fmt.Errorf("kernel.modules needs the kernel from a Debian package (deb source), which carries the modules")
	}
	var b []byte
	if src.Kind == "deb" {
		// Reading a kernel package means decompressing it (seconds per
		// pass): the bzImage and the resolved modules are cached by the
		// package's verified digest, so a rebuild reads it not at all.
		local, err := p.fetchSource(ctx, "kernel", src)
		if err != nil {
			return err
		}
		if b, p.modules, err = p.kernelFromDeb(local, p.inputs["kernel"]); err != nil {
			return err
		}
	} else {
		var err error
		if b, _, err = p.readSourceFile(ctx, "kernel", src); err != nil {
			return err
		}
		p.modules = &moduleSet{}
	}
	if err := checkPin("kernel", p.m.Kernel.SHA256, b); err != nil {
		return err
	}
	if !bytes.HasPrefix(b, []byte("MZ")) {
		return fmt.Errorf("kernel: %s is not a bzImage with an EFI stub (no MZ header)", src.PathInDeb)
	}
	if p.publishing {
		if err := checkKernelStub(p.m.Kernel, b); err != nil {
			return err
		}
	}
	p.kernel = b
	p.inputs["kernel.file"] = sha256hex(b)
	if err := p.write(imagedir.Kernel, b, 0o644); err != nil {
		return err
	}
	return p.write(imagedir.Cmdline, []byte(p.m.Kernel.Cmdline+"\n"), 0o644)
}

// kernelEntry is a cached kernel extraction.
type kernelEntry struct {
	Release string   `json:"release"`
	Modules []string `json:"modules"` // initramfs paths, load order
}

// kernelFromDeb returns the bzImage at kernel.path and the resolved kernel
// modules of the (verified) package debSHA, from the cache or by reading
// the package once and caching the result.
func (p *pipeline) kernelFromDeb(deb, debSHA string) ([]byte, *moduleSet, error) {
	src := p.m.Kernel.Source
	if src.PathInDeb == "" {
		return nil, nil, fmt.Errorf("kernel: deb source needs path = \"<file inside the package>\"")
	}
	root, err := p.o.Cache.Dir("kernels")
	if err != nil {
		return nil, nil, err
	}
	k := sha256.Sum256([]byte("tdforge/v1/kernel\x00" + debSHA + "\x00" + src.PathInDeb + "\x00" + strings.Join(p.m.Kernel.Modules, ",")))
	dir := filepath.Join(root, hex.EncodeToString(k[:16]))
	load := func() ([]byte, *moduleSet, error) {
		var e kernelEntry
		mb, err := os.ReadFile(filepath.Join(dir, "kernel.json"))
		if err != nil {
			return nil, nil, err
		}
		if err := json.Unmarshal(mb, &e); err != nil {
			return nil, nil, err
		}
		b, err := os.ReadFile(filepath.Join(dir, "vmlinuz"))
		if err != nil {
			return nil, nil, err
		}
		return b, &moduleSet{release: e.Release, dir: filepath.Join(dir, "modules"), paths: e.Modules}, nil
	}
	if b, ms, err := load(); err == nil {
		return b, ms, nil
	}
	tmp, err := os.MkdirTemp(root, ".tmp-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(tmp)
	b, err := debpkg.ReadFile(deb, src.PathInDeb)
	if err != nil {
		return nil, nil, fmt.Errorf("kernel: %w", err)
	}
	e := kernelEntry{Modules: []string{}}
	if len(p.m.Kernel.Modules) > 0 {
		set, err := kmod.Resolve(deb, p.m.Kernel.Modules)
		if err != nil {
			return nil, nil, fmt.Errorf("kernel.modules: %w", err)
		}
		if err := set.Extract(deb, filepath.Join(tmp, "modules")); err != nil {
			return nil, nil, fmt.Errorf("kernel.modules: %w", err)
		}
		e.Release = set.Release
		for _, mod := range set.Modules {
			e.Modules = append(e.Modules, "/"+path.Clean(mod.Path))
		}
	}
	mb, _ := json.Marshal(e)
	if err := os.WriteFile(filepath.Join(tmp, "vmlinuz"), b, 0o644); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "kernel.json"), mb, 0o644); err != nil {
		return nil, nil, err
	}
	// Publish atomically; a concurrent build may have won the race, which
	// is fine: both wrote the same content.
	if err := os.Rename(tmp, dir); err != nil {
		if _, _, lerr := load(); lerr != nil {
			return nil, nil, err
		}
	}
	return load()
}
