package e2e

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkBootPhases boots the dev image (beside the dev key broker) and
// reports initd's phase times (kernel, modules, verity, network, unlock:
// the time key release adds, services) and QEMU start to ready.
func BenchmarkBootPhases(b *testing.B) {
	for i := 0; i < b.N; i++ {
		start := time.Now()
		v := boot(b, devImage, bootOpts{})
		if err := v.waitHTTP("/readyz", 120*time.Second); err != nil {
			b.Fatalf("not ready: %v\n%s", err, v.tail())
		}
		ready := time.Since(start)
		log, _ := os.ReadFile(v.console)
		re := regexp.MustCompile(`initd: phase (\w+) (\d+)ms`)
		for _, m := range re.FindAllStringSubmatch(string(log), -1) {
			ms, _ := strconv.Atoi(m[2])
			b.ReportMetric(float64(ms), "phase_"+m[1]+"_ms")
		}
		b.ReportMetric(ready.Seconds(), "qemu_start_to_ready_s")
		v.shutdown()
	}
}

// BenchmarkBootPayloadSize compares boot-to-ready with a 64 MiB and a 2 GiB
// extra model payload that Ollama's service needs: dm-verity reads lazily,
// so the ratio should stay near 1 (goal <= 1.1).
func BenchmarkBootPayloadSize(b *testing.B) {
	dir := b.TempDir()
	times := map[int64]time.Duration{}
	for _, size := range []int64{64 << 20, 2 << 30} {
		img := buildWithWeights(b, dir, size)
		for i := 0; i < b.N; i++ {
			start := time.Now()
			v := boot(b, img, bootOpts{wait: 180 * time.Second})
			if err := v.waitHTTP("/readyz", 180*time.Second); err != nil {
				b.Fatalf("not ready: %v\n%s", err, v.tail())
			}
			times[size] += time.Since(start)
			v.shutdown()
		}
		os.RemoveAll(filepath.Join(img, "disk.raw"))
	}
	small, big := times[64<<20]/time.Duration(b.N), times[2<<30]/time.Duration(b.N)
	b.ReportMetric(small.Seconds(), "ready_64MiB_s")
	b.ReportMetric(big.Seconds(), "ready_2GiB_s")
	b.ReportMetric(big.Seconds()/small.Seconds(), "ratio_2GiB_vs_64MiB")
}

func buildWithWeights(b *testing.B, dir string, size int64) string {
	weights := filepath.Join(dir, fmt.Sprintf("weights-%d.bin", size))
	f, err := os.Create(weights)
	if err != nil {
		b.Fatal(err)
	}
	blk, _ := aes.NewCipher(make([]byte, 16))
	stream := cipher.NewCTR(blk, make([]byte, 16))
	if _, err := io.CopyN(f, cipher.StreamReader{S: stream, R: zeroReader{}}, size); err != nil {
		b.Fatal(err)
	}
	f.Close()
	src, _ := os.ReadFile(filepath.Join(repoRoot, "manifests", "dev.hcl"))
	s := strings.Replace(string(src), `path = "../webui"`, `path = "`+filepath.Join(repoRoot, "webui")+`"`, 1)
	s = strings.Replace(s, `needs   = ["model"]`, `needs   = ["model", "weights"]`, 1)
	s += fmt.Sprintf("\npayload \"weights\" {\n  file {\n    path = %q\n  }\n}\n", weights)
	m := filepath.Join(dir, fmt.Sprintf("weights-%d.hcl", size))
	os.WriteFile(m, []byte(s), 0o644)
	out := filepath.Join(dir, fmt.Sprintf("img-%d", size))
	cmd := exec.Command(filepath.Join(binDir, "builder"), "build", "--secrets", "manifests/dev-secrets", "-o", out, m)
	cmd.Dir = repoRoot
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build with %d-byte weights: %v\n%s", size, err, o)
	}
	os.Remove(weights)
	return out
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
