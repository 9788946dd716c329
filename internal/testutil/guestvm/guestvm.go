// Package guestvm is the one host-side harness for the QEMU guest tests:
// it unpacks the pinned Debian kernel, packs a tiny Go /init with kernel
// modules and a JSON config into an initramfs (Build), boots it under TCG
// with disks (Boot) and checks the console for the GUEST-RESULT line that
// package guestinit prints (RequirePass).
package guestvm

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/inputs/debpkg"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/tdforge/tdforge/internal/testutil/guestvm/guestinit"
	"github.com/tdforge/tdforge/internal/testutil/testdeps"
)

// VerityModules are the modules (paths under KernelPackage.ModDir, in
// dependency order) a guest needs to map dm-verity over a virtio disk and
// mount EROFS with the pinned Debian 6.1 cloud kernel.
var VerityModules = []string{
	"drivers/virtio/virtio_ring.ko", "drivers/virtio/virtio.ko",
	"drivers/virtio/virtio_pci_modern_dev.ko", "drivers/virtio/virtio_pci_legacy_dev.ko",
	"drivers/virtio/virtio_pci.ko", "drivers/block/virtio_blk.ko",
	"drivers/md/dm-mod.ko", "drivers/md/dm-bufio.ko", "lib/reed_solomon/reed_solomon.ko",
	"drivers/md/dm-verity.ko", "lib/libcrc32c.ko", "fs/erofs/erofs.ko",
}

// KernelPackage is the pinned Debian 6.1 cloud kernel package, unpacked.
type KernelPackage struct {
	Root    string // where the package was unpacked
	Vmlinuz string // Root/boot/vmlinuz-<release>
	Release string // the kernel release, e.g. 6.1.0-...-cloud-amd64
}

// ModDir is the package's lib/modules/<release>/kernel directory, which
// Build's module paths are relative to.
func (k KernelPackage) ModDir() string {
	return filepath.Join(k.Root, "lib", "modules", k.Release, "kernel")
}

// Kernel unpacks the pinned Debian 6.1 cloud kernel package.
func Kernel(t testing.TB) KernelPackage {
	t.Helper()
	deb := testdeps.Kernel61Deb(t)
	root := filepath.Join(t.TempDir(), "kernel")
	if _, err := debpkg.ExtractTree(deb, "", root); err != nil {
		t.Fatalf("unpacking %s: %v", deb, err)
	}
	kernels, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	mods, _ := filepath.Glob(filepath.Join(root, "lib", "modules", "*"))
	if len(kernels) != 1 || len(mods) != 1 {
		t.Fatalf("unexpected kernel package layout: %v %v", kernels, mods)
	}
	return KernelPackage{Root: root, Vmlinuz: kernels[0], Release: filepath.Base(mods[0])}
}

// Build compiles initPkg (a package path as go build takes it, relative to
// the test's directory) statically as /init and writes an initramfs with
// it, config as guestinit.ConfigPath, and the modules (paths under modDir,
// in load order) under /lib/modules, listed in guestinit.ModulesPath. It
// returns the initramfs path.
func Build(t testing.TB, initPkg string, config any, modDir string, modules []string) string {
	t.Helper()
	dir := t.TempDir()
	prog := buildInit(t, dir, initPkg)
	js, err := json.Marshal(config)
	if err != nil {
		t.Fatalf("guest config: %v", err)
	}
	recs := []cpio.Record{
		cpio.StaticFile("init", prog, 0o755),
		cpio.StaticFile(strings.TrimPrefix(guestinit.ConfigPath, "/"), string(js), 0o644),
	}
	var order []string
	for _, m := range modules {
		data, err := os.ReadFile(filepath.Join(modDir, m))
		if err != nil {
			t.Fatal(err)
		}
		dst := "/lib/modules/" + filepath.Base(m)
		recs = append(recs, cpio.StaticFile(dst[1:], string(data), 0o644))
		order = append(order, dst)
	}
	recs = append(recs, cpio.StaticFile(strings.TrimPrefix(guestinit.ModulesPath, "/"), strings.Join(order, "\n"), 0o644))
	initrd := filepath.Join(dir, "initrd")
	if err := os.WriteFile(initrd, Archive(t, recs), 0o644); err != nil {
		t.Fatal(err)
	}
	return initrd
}

// Overlay writes a copy of the initramfs base (e.g. an image's) with a
// second, gzip-compressed archive appended whose /init is initPkg, built
// as Build does; the kernel unpacks both, so that /init replaces base's.
// It returns the new initramfs path.
func Overlay(t testing.TB, base, initPkg string) string {
	t.Helper()
	dir := t.TempDir()
	prog := buildInit(t, dir, initPkg)
	b, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	buf := bytes.NewBuffer(b)
	gz := gzip.NewWriter(buf)
	gz.Write(Archive(t, []cpio.Record{cpio.StaticFile("init", prog, 0o755)}))
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initrd")
	if err := os.WriteFile(initrd, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return initrd
}

// buildInit compiles initPkg statically into dir and returns the program.
func buildInit(t testing.TB, dir, initPkg string) string {
	t.Helper()
	bin := filepath.Join(dir, "init")
	build := exec.Command("go", "build", "-o", bin, initPkg)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building guest init %s: %v\n%s", initPkg, err, out)
	}
	prog, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	return string(prog)
}

// Archive returns recs, with their parent directories, as a newc cpio
// archive.
func Archive(t testing.TB, recs []cpio.Record) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := cpio.Newc.Writer(&buf)
	if err := cpio.WriteRecordsAndDirs(w, recs); err != nil {
		t.Fatal(err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Disk is a raw disk image attached as a virtio drive.
type Disk struct {
	Path     string
	ReadOnly bool
}

// Options describe one boot. Zero values mean: 512 MiB, 1 vCPU, the
// cmdline "console=ttyS0 panic=-1 loglevel=3", the CPU model qemu64,
// QEMU's default machine, accelerator "tcg" and a 4 minute timeout.
type Options struct {
	Kernel, Initrd string
	Disks          []Disk
	Memory         string // QEMU -m, e.g. "512" or "2048"
	CPUs           int
	Cmdline        string
	CPU            string // QEMU -cpu
	Machine        string // QEMU -machine
	Accel          string // QEMU -accel, e.g. "tcg,thread=single"
	Timeout        time.Duration
}

// Boot runs the guest under qemu-system-x86_64 (serial console on stdio,
// no reboot: a panic or power-off ends it) and returns its console output
// and QEMU's exit error.
func Boot(t testing.TB, o Options) (string, error) {
	t.Helper()
	if o.Memory == "" {
		o.Memory = "512"
	}
	if o.CPUs == 0 {
		o.CPUs = 1
	}
	if o.Cmdline == "" {
		o.Cmdline = "console=ttyS0 panic=-1 loglevel=3"
	}
	if o.CPU == "" {
		o.CPU = "qemu64"
	}
	if o.Accel == "" {
		o.Accel = "tcg"
	}
	if o.Timeout == 0 {
		o.Timeout = 4 * time.Minute
	}
	args := []string{"-accel", o.Accel, "-cpu", o.CPU}
	if o.Machine != "" {
		args = append(args, "-machine", o.Machine)
	}
	args = append(args, "-m", o.Memory, "-smp", strconv.Itoa(o.CPUs),
		"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
		"-kernel", o.Kernel, "-initrd", o.Initrd, "-append", o.Cmdline)
	for _, d := range o.Disks {
		spec := "file=" + d.Path + ",format=raw,if=virtio"
		if d.ReadOnly {
			spec += ",readonly=on"
		}
		args = append(args, "-drive", spec)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, "qemu-system-x86_64", args...).CombinedOutput()
	t.Logf("guest ran %.1fs", time.Since(start).Seconds())
	return string(out), err
}

// RequirePass fails the test unless the console out holds guestinit.Pass,
// and reports each line in wants that it lacks.
func RequirePass(t testing.TB, out string, qemuErr error, wants ...string) {
	t.Helper()
	if !strings.Contains(out, guestinit.Pass) {
		t.Fatalf("guest did not pass (qemu err %v):\n%s", qemuErr, out)
	}
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("guest output lacks %q:\n%s", want, out)
		}
	}
}
