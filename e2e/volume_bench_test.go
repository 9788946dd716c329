package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/image/imagedir"
	"github.com/tdforge/tdforge/internal/testutil/guestvm"
)

// BenchmarkVolumeThroughput compares sequential write throughput through
// the sealed volume stack (dm-integrity J/HMAC-SHA256 under dm-crypt
// aes-xts-plain64, initd/volume.Map) with the same raw disk under QEMU
// TCG: the dev image's kernel and initramfs boot e2e/volbench as /init (a
// second initramfs archive overrides /init). Goal: sealed >= 0.5x plain.
func BenchmarkVolumeThroughput(b *testing.B) {
	dir := b.TempDir()
	initrd := guestvm.Overlay(b, filepath.Join(devImage, imagedir.Initrd), "./volbench")
	re := regexp.MustCompile(`volbench: plain-MBps=([\d.]+) sealed-MBps=([\d.]+)`)
	layers := regexp.MustCompile(`volbench: crypt-only-MBps=([\d.]+) integrity-only-MBps=([\d.]+)`)
	for i := 0; i < b.N; i++ {
		var disks []guestvm.Disk
		for _, n := range []string{"plain.raw", "sealed.raw", "crypt.raw", "integrity.raw"} {
			p := filepath.Join(dir, n)
			os.Remove(p)
			f, _ := os.Create(p)
			f.Truncate(160 << 20)
			f.Close()
			disks = append(disks, guestvm.Disk{Path: p})
		}
		out, err := guestvm.Boot(b, guestvm.Options{Kernel: filepath.Join(devImage, imagedir.Kernel), Initrd: initrd, Disks: disks,
			Accel: "tcg,thread=single", CPU: cpuModel(), Machine: "q35", CPUs: 2, Memory: "2048",
			Cmdline: "console=ttyS0 panic=-1 quiet loglevel=4", Timeout: 10 * time.Minute})
		m := re.FindStringSubmatch(out)
		if err != nil || m == nil {
			b.Fatalf("volbench: %v\n%s", err, out)
		}
		plain, _ := strconv.ParseFloat(m[1], 64)
		sealed, _ := strconv.ParseFloat(m[2], 64)
		b.ReportMetric(plain, "plain_MB/s")
		b.ReportMetric(sealed, "sealed_MB/s")
		b.ReportMetric(sealed/plain, "x-vs-plain")
		if m := layers.FindStringSubmatch(out); m != nil {
			c, _ := strconv.ParseFloat(m[1], 64)
			i, _ := strconv.ParseFloat(m[2], 64)
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
