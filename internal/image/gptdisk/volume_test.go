package gptdisk

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tdforge/tdforge/internal/image/gptdisk/gptread"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// TestVolumeRegion: a volume gets a partition after the payloads whose
// GUID is its UUID and type policy.VolumeTypeGUID, holding zeros that take no
// disk space, in both build paths, reproducibly.
func TestVolumeRegion(t *testing.T) {
	dir := t.TempDir()
	pl := testPayloads(t, dir)
	vols := []Volume{{Name: "state", UUID: "0b9f3c1e-5a2d-8e4f-9a7b-112233445566", SizeBytes: 64 << 20}}
	var disks [][]byte
	for _, cache := range []string{"", filepath.Join(dir, "cache")} {
		out := filepath.Join(dir, "disk"+filepath.Base(cache)+".raw")
		l, err := Build(context.Background(), out, pl, Options{CacheDir: cache, Volumes: vols})
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Volumes) != 1 || l.Volumes[0].Index != len(pl)+1 || l.Volumes[0].GUID != vols[0].UUID {
			t.Fatalf("layout volumes %+v", l.Volumes)
		}
		if err := l.Validate(); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		tab, err := gptread.Read(f, out, 512)
		if err != nil {
			t.Fatal(err)
		}
		last := tab.Partitions[len(tab.Partitions)-1]
		if last.GUID != vols[0].UUID || last.TypeGUID != policy.VolumeTypeGUID || last.Name != "volume-state" {
			t.Fatalf("volume partition entry %+v", last)
		}
		if (last.LastLBA-last.FirstLBA+1)*512 != vols[0].SizeBytes {
			t.Fatalf("volume partition holds %d sectors", last.LastLBA-last.FirstLBA+1)
		}
		region := make([]byte, vols[0].SizeBytes)
		if _, err := f.ReadAt(region, int64(last.FirstLBA)*512); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(region, make([]byte, len(region))) {
			t.Fatal("volume region is not all zeros")
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		if used := st.Blocks * 512; used >= int64(vols[0].SizeBytes) {
			t.Errorf("disk uses %d bytes on disk: the volume region is not sparse", used)
		}
		f.Close()
		b, _ := os.ReadFile(out)
		disks = append(disks, b)
	}
	if !bytes.Equal(disks[0], disks[1]) {
		t.Error("cached and direct builds differ")
	}
	bad := []Volume{{Name: "state", UUID: "NOT-A-UUID", SizeBytes: 1 << 20}}
	if _, err := Build(context.Background(), filepath.Join(dir, "bad.raw"), pl, Options{Volumes: bad}); err == nil || !strings.Contains(err.Error(), "uuid") {
		t.Errorf("bad volume uuid: %v", err)
	}
}
