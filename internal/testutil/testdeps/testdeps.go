// Package testdeps locates, for tests, the pinned Debian packages that
// `make deps` caches: $TDFORGE_KERNEL_DEB, $TDFORGE_KERNEL61_DEB and
// $TDFORGE_OVMF_DEB, else the tdforge cache's deb/ directory (the same
// place scripts/deps.sh uses), and unpacks the kernel image from its
// package.
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

// File names of the pinned packages (scripts/deps.sh). KernelDebName is
// the kernel of manifests/dev.hcl (and manifests/confidential-ai.hcl):
// Debian 12's backported 6.12, whose EFI stub measures into RTMR2 in a TD.
// Kernel61DebName is Debian 12's own 6.1, whose stub cannot (TCG2 only);
// tests of that refusal and tests bound to its module layout use it.
const (
	KernelDebName   = "linux-image-6.12.117+deb12-cloud-amd64-unsigned_6.12.117-1~deb12u1_amd64.deb"
	Kernel61DebName = "linux-image-6.1.0-56-cloud-amd64-unsigned_6.1.192-2_amd64.deb"
	OVMFDebName     = "ovmf_2022.11-6+deb12u2_all.deb"
)

// KernelDebPath returns the pinned dev kernel package, or an error saying
// how to get it.
func KernelDebPath() (string, error) { return find("TDFORGE_KERNEL_DEB", KernelDebName) }

// Kernel61DebPath returns the pinned 6.1 kernel package, or an error saying
// how to get it.
func Kernel61DebPath() (string, error) { return find("TDFORGE_KERNEL61_DEB", Kernel61DebName) }

// OVMFDebPath returns the pinned OVMF package, or an error saying how to
// get it.
func OVMFDebPath() (string, error) { return find("TDFORGE_OVMF_DEB", OVMFDebName) }

// KernelDeb is KernelDebPath that fails the test (never skips) when the
// package is missing.
func KernelDeb(t testing.TB) string {
	t.Helper()
	return must(t, KernelDebPath)
}

// Kernel61Deb is Kernel61DebPath that fails the test when the package is
// missing.
func Kernel61Deb(t testing.TB) string {
	t.Helper()
	return must(t, Kernel61DebPath)
}

// OVMFDeb is OVMFDebPath that fails the test when the package is missing.
func OVMFDeb(t testing.TB) string {
	t.Helper()
	return must(t, OVMFDebPath)
}

type unpacked struct {
	once sync.Once
	b    []byte
	err  error
}

var vmlinuz, vmlinuz61 unpacked

// Vmlinuz returns the kernel image (boot/vmlinuz-*) of the pinned dev
// kernel package, unpacked with dpkg-deb once per test binary; each call
// gets its own copy. It fails the test when the package or dpkg-deb is
// missing.
func Vmlinuz(t testing.TB) []byte {
	t.Helper()
	return vmlinuz.get(t, KernelDebPath)
}

// Vmlinuz61 is Vmlinuz for the pinned 6.1 kernel package.
func Vmlinuz61(t testing.TB) []byte {
	t.Helper()
	return vmlinuz61.get(t, Kernel61DebPath)
}

func (u *unpacked) get(t testing.TB, deb func() (string, error)) []byte {
	t.Helper()
	u.once.Do(func() { u.b, u.err = extractVmlinuz(deb) })
	if u.err != nil {
		t.Fatal(u.err)
	}
	return bytes.Clone(u.b)
}

func extractVmlinuz(path func() (string, error)) ([]byte, error) {
	deb, err := path()
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

// EventlogFixture returns a file of go-eventlog's test data
// (testdata/eventlogs/ccel/NAME, e.g. the real GCE TDX CCEL
// "cos-113-intel-tdx.bin"), from the module the go command resolves for
// this module, wherever its module cache is.
func EventlogFixture(t testing.TB, name string) []byte {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/google/go-eventlog").Output()
	dir := string(bytes.TrimSpace(out))
	if err != nil || dir == "" {
		t.Fatalf("locating go-eventlog's test data (run `go mod download github.com/google/go-eventlog`): %v", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "testdata", "eventlogs", "ccel", name))
	if err != nil {
		t.Fatalf("go-eventlog fixture: %v", err)
	}
	return b
}
