// Package testdeps locates, for tests, the pinned Debian packages that
// `make deps` caches: $TDFORGE_KERNEL_DEB / $TDFORGE_OVMF_DEB, else the
// tdforge cache's deb/ directory (the same place scripts/deps.sh uses).
package testdeps

import (
	"fmt"
	"os"
	"path/filepath"
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
