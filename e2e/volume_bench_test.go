package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/tdforge/tdforge/internal/image/imagedir"
)

// BenchmarkVolumeThroughput compares sequential write throughput through
// the sealed volume stack (dm-integrity J/HMAC-SHA256 under dm-crypt
// aes-xts-plain64, initd/volume.Map) with the same raw disk under QEMU
// TCG: the dev image's kernel and initramfs boot e2e/volbench as /init (a
// second initramfs archive overrides /init). Goal: sealed >= 0.5x plain.
func BenchmarkVolumeThroughput(b *testing.B) {
	dir := b.TempDir()
	bin := filepath.Join(dir, "volbench")
	cmd := exec.Command("go", "build", "-o", bin, "./e2e/volbench")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("building volbench: %v\n%s", err, out)
	}
	prog, err := os.ReadFile(bin)
	if err != nil {
		b.Fatal(err)
	}
	var extra bytes.Buffer
	gz := gzip.NewWriter(&extra)
	w := cpio.Newc.Writer(gz)
	if err := w.WriteRecord(cpio.StaticFile("init", string(prog), 0o755)); err != nil {
		b.Fatal(err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		b.Fatal(err)
	}
	gz.Close()
	base, err := os.ReadFile(filepath.Join(devImage, imagedir.Initrd))
	if err != nil {
		b.Fatal(err)
	}
	initrd := filepath.Join(dir, "initrd")
	os.WriteFile(initrd, append(base, extra.Bytes()...), 0o644)
	re := regexp.MustCompile(`volbench: plain-MBps=([\d.]+) sealed-MBps=([\d.]+)`)
	layers := regexp.MustCompile(`volbench: crypt-only-MBps=([\d.]+) integrity-only-MBps=([\d.]+)`)
	for i := 0; i < b.N; i++ {
		var disks []string
		for _, n := range []string{"plain.raw", "sealed.raw", "crypt.raw", "integrity.raw"} {
			p := filepath.Join(dir, n)
			os.Remove(p)
			f, _ := os.Create(p)
			f.Truncate(160 << 20)
			f.Close()
			disks = append(disks, "-drive", "file="+p+",if=virtio,format=raw")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		args := append([]string{"-accel", "tcg,thread=single", "-cpu", cpuModel(), "-machine", "q35", "-smp", "2", "-m", "2048",
			"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
			"-kernel", filepath.Join(devImage, imagedir.Kernel), "-initrd", initrd,
			"-append", "console=ttyS0 panic=-1 quiet loglevel=4"}, disks...)
		out, err := exec.CommandContext(ctx, "qemu-system-x86_64", args...).CombinedOutput()
		cancel()
		m := re.FindSubmatch(out)
		if err != nil || m == nil {
			b.Fatalf("volbench: %v\n%s", err, out)
		}
		plain, _ := strconv.ParseFloat(string(m[1]), 64)
		sealed, _ := strconv.ParseFloat(string(m[2]), 64)
		b.ReportMetric(plain, "plain_MB/s")
		b.ReportMetric(sealed, "sealed_MB/s")
		b.ReportMetric(sealed/plain, "x-vs-plain")
		if m := layers.FindSubmatch(out); m != nil {
			c, _ := strconv.ParseFloat(string(m[1]), 64)
			i, _ := strconv.ParseFloat(string(m[2]), 64)
			b.ReportMetric(c, "crypt-only_MB/s")
			b.ReportMetric(i, "integrity-only_MB/s")
		}
	}
}

// cpuModel is the TCG CPU the benchmark emulates: qemu64, as builder launch
// --simulate uses, unless TDFORGE_VOLBENCH_CPU names another (e.g. max,
// whose AES-NI lets the guest kernel use aesni-intel).
func cpuModel() string {
	if c := os.Getenv("TDFORGE_VOLBENCH_CPU"); c != "" {
		return c
	}
	return "qemu64"
}
