package initramfs

import (
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/image/fstree"
)

// BenchmarkWriteGzip measures Write (gzip -9) against the baseline of
// writing the same tree uncompressed, reporting time and size ratios.
func BenchmarkWriteGzip(b *testing.B) {
	dir := b.TempDir()
	// A binary-like 8 MiB file: half random, half repetitive.
	data := make([]byte, 8<<20)
	rand.New(rand.NewSource(1)).Read(data[:4<<20])
	for i := 4 << 20; i < len(data); i++ {
		data[i] = byte(i % 251)
	}
	src := filepath.Join(dir, "agent")
	os.WriteFile(src, data, 0o755)
	tr := &fstree.Tree{Epoch: 1, Entries: []fstree.Entry{{Path: "agent", Type: fstree.File, Mode: 0o755, Source: src, Size: int64(len(data))}}}
	var base time.Duration
	var baseSize int64
	for i := 0; i < 3; i++ {
		cw := &countWriter{}
		start := time.Now()
		if err := WriteOptions(cw, tr, Options{Uncompressed: true}); err != nil {
			b.Fatal(err)
		}
		base += time.Since(start)
		baseSize = cw.n
	}
	base /= 3
	b.ResetTimer()
	var size int64
	for i := 0; i < b.N; i++ {
		cw := &countWriter{}
		if err := Write(cw, tr); err != nil {
			b.Fatal(err)
		}
		size = cw.n
	}
	b.StopTimer()
	perOp := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(perOp)/float64(base), "x_time_vs_uncompressed")
	b.ReportMetric(float64(size)/float64(baseSize), "size_ratio_vs_uncompressed")
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

var _ io.Writer = (*countWriter)(nil)
