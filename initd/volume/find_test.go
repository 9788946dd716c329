package volume

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/image/fstree"
	"github.com/tdforge/tdforge/internal/image/gptdisk"
	"github.com/tdforge/tdforge/internal/tdx/policy"
	"github.com/tdforge/tdforge/internal/testutil/fakeblock"
)

// TestFindPartition: the volume's partition is found by its GPT GUID on
// whichever disk holds it; a partition with the GUID but another size is
// refused, as are two partitions with the GUID (a cloned disk).
func TestFindPartition(t *testing.T) {
	dir := t.TempDir()
	v := policy.Volume{Name: "data", UUID: policy.VolumeUUID("img", "data"), SizeBytes: 1 << 20}
	data := bytes.Repeat([]byte("p"), 10000)
	disk := filepath.Join(dir, "disk.raw")
	l, err := gptdisk.Build(context.Background(), disk,
		[]gptdisk.Payload{{Name: "apps", Tree: &fstree.Tree{Epoch: 1, Entries: []fstree.Entry{{Path: "f", Type: fstree.File, Mode: 0o644, Data: data, Size: int64(len(data))}}}}},
		gptdisk.Options{Volumes: []gptdisk.Volume{{Name: v.Name, UUID: v.UUID, SizeBytes: v.SizeBytes}}})
	if err != nil {
		t.Fatal(err)
	}
	idx := l.Volumes[0].Index
	o := &Opener{Devices: fakeblock.New(t)}
	fakeblock.AddDisk(t, o.Devices, "vdb", disk, 1, idx)
	got, err := o.findPartition(v)
	if want := filepath.Join(o.Devices.Dev, "vdb2"); err != nil || got != want {
		t.Fatalf("findPartition = %q, %v; want %s", got, err, want)
	}
	other := v
	other.UUID = policy.VolumeUUID("img", "other")
	if _, err := o.findPartition(other); err == nil || !strings.Contains(err.Error(), "no partition with GPT GUID "+other.UUID) {
		t.Errorf("unknown volume: %v", err)
	}
	small := v
	small.SizeBytes /= 2
	if _, err := o.findPartition(small); err == nil || !strings.Contains(err.Error(), "but type "+policy.VolumeTypeGUID+" and 1048576 bytes") {
		t.Errorf("size mismatch: %v", err)
	}
	b, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	clone := filepath.Join(dir, "clone.raw")
	if err := os.WriteFile(clone, b, 0o644); err != nil {
		t.Fatal(err)
	}
	fakeblock.AddDisk(t, o.Devices, "vdc", clone, 1, idx)
	if _, err := o.findPartition(v); err == nil || !strings.Contains(err.Error(), "refusing to guess") {
		t.Errorf("cloned disk: %v", err)
	}
}
