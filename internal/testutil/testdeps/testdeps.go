// Package testdeps locates, for tests, the pinned Debian packages that
// `make deps` caches: $TDFORGE_KERNEL_DEB / $TDFORGE_OVMF_DEB, else the
// tdforge cache's deb/ directory (the same place scripts/deps.sh uses), and
// unpacks the kernel image from its package.
package testdeps

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/tdforge/tdforge/internal/inputs/cache"
)

// File names of the pinned packages (manifests/dev.hcl, scripts/deps.sh).
const (
	KernelDebName = "linux-image-6.1.0-56-cloud-amd64-unsigned_6.1.192-2_amd64.deb"
	OVMFDebName   = "ovmf_2022.11-6+deb12u2_all.deb"
)

// KernelDebPath returns the pinned kernel package, or an error saying how
// to get it.
func KernelDebPath() (string, error) { return find("TDFORGE_KERNEL_DEB", KernelDebName) }

// OVMFDebPath returns the pinned OVMF package, or an error saying how to
// get it.
func OVMFDebPath() (string, error) { return find("TDFORGE_OVMF_DEB", OVMFDebName) }

// KernelDeb is KernelDebPath that fails the test (never skips) when the
// package is missing.
func KernelDeb(t testing.TB) string {
	t.Helper()
	return must(t, KernelDebPath)
}

// OVMFDeb is OVMFDebPath that fails the test when the package is missing.
func OVMFDeb(t testing.TB) string {
	t.Helper()
	return must(t, OVMFDebPath)
}

var vmlinuz struct {
	once sync.Once
	b    []byte
	err  error
}

// Vmlinuz returns the kernel image (boot/vmlinuz-*) of the pinned kernel
// package, unpacked with dpkg-deb once per test binary; each call gets its
// own copy. It fails the test when the package or dpkg-deb is missing.
func Vmlinuz(t testing.TB) []byte {
	t.Helper()
	vmlinuz.once.Do(func() { vmlinuz.b, vmlinuz.err = extractVmlinuz() })
	if vmlinuz.err != nil {
		t.Fatal(vmlinuz.err)
	}
	return bytes.Clone(vmlinuz.b)
}

func extractVmlinuz() ([]byte, error) {
	deb, err := KernelDebPath()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "tdforge-kernel")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if out, err := exec.Command("dpkg-deb", "-x", deb, dir).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("dpkg-deb -x %s: %v: %s", deb, err, out)
	}
	m, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if len(m) != 1 {
		return nil, fmt.Errorf("no vmlinuz in %s", deb)
	}
	return os.ReadFile(m[0])
}

func must(t testing.TB, path func() (string, error)) string {
	t.Helper()
	p, err := path()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func find(env, name string) (string, error) {
	p := os.Getenv(env)
	if p == "" {
		root, err := cache.DefaultRoot()
		if err != nil {
			return "", err
		}
		p = filepath.Join(root, "deb", name)
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("pinned package %s is missing (run make deps, or set %s): %v", name, env, err)
	}
	return p, nil
}
