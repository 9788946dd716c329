package gptdisk

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/image/crypt"
	"github.com/tdforge/tdforge/internal/image/fstree"
)

// Benchmarks use one 2 GiB incompressible file shared by all of them and
// compare against named baselines measured on the same file:
//   - mkfs.erofs + veritysetup format (Debian erofs-utils / cryptsetup)
//   - sha256sum (GNU coreutils)

const (
	benchSize      = 2 << 30
	childEnv       = "TDFORGE_GPTDISK_BENCH_CHILD" // "src|out": build once and exit
	benchDirPrefix = "tdforge-gptdisk-bench-"
)

var bench struct {
	once      sync.Once
	dir, src  string
	baseline  time.Duration // mkfs.erofs + veritysetup format
	sha256sum time.Duration
	err       error
}

func TestMain(m *testing.M) {
	if v := os.Getenv(childEnv); v != "" {
		src, out, _ := strings.Cut(v, "|")
		if _, err := Build(context.Background(), out, []Payload{benchPayload(src)}, Options{}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	if bench.dir != "" {
		os.RemoveAll(bench.dir)
	}
	os.Exit(code)
}

func benchPayload(src string) Payload {
	return Payload{Name: "models", Tree: &fstree.Tree{Epoch: 1700000000, Entries: []fstree.Entry{
		{Path: "blobs/model.gguf", Type: fstree.File, Mode: 0o644, Source: src, Size: benchSize},
	}}}
}

func timeCmd(name string, args ...string) (time.Duration, error) {
	start := time.Now()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%s: %v\n%s", name, err, out)
	}
	return time.Since(start), nil
}

func benchSetup(b *testing.B) {
	bench.once.Do(func() {
		dir, err := os.MkdirTemp("", benchDirPrefix)
		if err != nil {
			bench.err = err
			return
		}
		bench.dir = dir
		srcDir := filepath.Join(dir, "src")
		os.MkdirAll(srcDir, 0o755)
		bench.src = filepath.Join(srcDir, "model.gguf")
		genRandom(b, bench.src, benchSize)
		img, hash := filepath.Join(dir, "base.img"), filepath.Join(dir, "base.hash")
		t1, err := timeCmd("mkfs.erofs", "-T0", img, srcDir)
		if err != nil {
			bench.err = err
			return
		}
		t2, err := timeCmd("veritysetup", "format", img, hash)
		if err != nil {
			bench.err = err
			return
		}
		bench.baseline = t1 + t2
		os.Remove(img)
		os.Remove(hash)
		if bench.sha256sum, err = timeCmd("sha256sum", bench.src); err != nil {
			bench.err = err
		}
	})
	if bench.err != nil {
		b.Fatal(bench.err)
	}
}

// BenchmarkBuild2GiB: a first (uncached) build of a 2 GiB payload disk.
// Reports time relative to mkfs.erofs + veritysetup format on the same
// data (goal <= 1.0) and throughput relative to sha256sum.
func BenchmarkBuild2GiB(b *testing.B) {
	benchSetup(b)
	out := filepath.Join(bench.dir, "disk.raw")
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := Build(context.Background(), out, []Payload{benchPayload(bench.src)}, Options{}); err != nil {
			b.Fatal(err)
		}
	}
	per := time.Since(start) / time.Duration(b.N)
	b.StopTimer()
	os.Remove(out)
	mbps := float64(benchSize) / 1e6 / per.Seconds()
	shaMBps := float64(benchSize) / 1e6 / bench.sha256sum.Seconds()
	b.ReportMetric(per.Seconds()/bench.baseline.Seconds(), "x_vs_mkfs.erofs+veritysetup")
	b.ReportMetric(bench.baseline.Seconds(), "baseline_s")
	b.ReportMetric(mbps, "MB/s")
	b.ReportMetric(mbps/shaMBps, "x_MBps_vs_sha256sum")
}

// BenchmarkEncryptedBuild2GiB: a first (uncached) build of the 2 GiB
// payload encrypted (dm-crypt aes-xts-plain64, then verity over the
// ciphertext) against the unencrypted build of the same payload, timed
// alternately in the same run. Reports the encrypted build's throughput
// relative to the unencrypted one (goal >= 0.8) and both in MB/s.
func BenchmarkEncryptedBuild2GiB(b *testing.B) {
	benchSetup(b)
	out := filepath.Join(bench.dir, "disk-enc.raw")
	key := make([]byte, crypt.KeySize)
	for i := range key {
		key[i] = byte(i)
	}
	var plain, enc time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, k := range [][]byte{nil, key} {
			pl := benchPayload(bench.src)
			pl.Key = k
			start := time.Now()
			if _, err := Build(context.Background(), out, []Payload{pl}, Options{}); err != nil {
				b.Fatal(err)
			}
			if k == nil {
				plain += time.Since(start)
			} else {
				enc += time.Since(start)
			}
			os.Remove(out)
		}
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(plain.Seconds()/enc.Seconds(), "x_throughput_vs_unencrypted")
	b.ReportMetric(float64(benchSize)/1e6/(enc.Seconds()/n), "encrypted_MB/s")
	b.ReportMetric(float64(benchSize)/1e6/(plain.Seconds()/n), "unencrypted_MB/s")
}

// warmBuild builds the bench payload into the disk outName with the cache
// cacheName (both in the bench directory, the cache removed when b ends)
// and returns the disk's path and a function that builds it again.
func warmBuild(b *testing.B, outName, cacheName string) (string, func()) {
	benchSetup(b)
	out := filepath.Join(bench.dir, outName)
	cache := filepath.Join(bench.dir, cacheName)
	b.Cleanup(func() { os.RemoveAll(cache) })
	pl := []Payload{benchPayload(bench.src)}
	build := func() {
		if _, err := Build(context.Background(), out, pl, Options{CacheDir: cache}); err != nil {
			b.Fatal(err)
		}
	}
	build()
	return out, build
}

// BenchmarkCachedRebuild2GiB: a no-change rebuild of the same output: no
// hashing, no encoding, and the unchanged disk is not rewritten.
func BenchmarkCachedRebuild2GiB(b *testing.B) {
	out, build := warmBuild(b, "disk-cached.raw", "cache")
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		build()
	}
	per := time.Since(start) / time.Duration(b.N)
	b.StopTimer()
	os.Remove(out)
	b.ReportMetric(per.Seconds()/bench.baseline.Seconds(), "x_vs_mkfs.erofs+veritysetup")
}

// BenchmarkPeakRSS2GiB runs an uncached build in a child process and
// reports its peak resident set size (goal <= 256 MiB).
func BenchmarkPeakRSS2GiB(b *testing.B) {
	benchSetup(b)
	out := filepath.Join(bench.dir, "disk-rss.raw")
	var maxKB int64
	for i := 0; i < b.N; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+bench.src+"|"+out)
		if o, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("child build: %v\n%s", err, o)
		}
		maxKB = max(maxKB, cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss)
	}
	os.Remove(out)
	b.ReportMetric(float64(maxKB)/1024, "peak_RSS_MiB")
}

// BenchmarkCachedNewOutput2GiB: every payload is cached but the output is
// new (or was modified), so partitions are copied into a fresh disk
// (reflink where supported, else copy_file_range) and the disk is synced.
func BenchmarkCachedNewOutput2GiB(b *testing.B) {
	out, build := warmBuild(b, "disk-copy.raw", "cache-copy")
	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		os.Remove(out)
		b.StartTimer()
		start := time.Now()
		build()
		total += time.Since(start)
	}
	os.Remove(out)
	b.ReportMetric(total.Seconds()/float64(b.N)/bench.baseline.Seconds(), "x_vs_mkfs.erofs+veritysetup")
}
