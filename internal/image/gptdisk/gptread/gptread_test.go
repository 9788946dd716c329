package gptread

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/partition/gpt"
)

const (
	diskGUID = "0e3a5b1c-1111-4222-8333-444455556666"
	partA    = "6b1f4c2e-0000-4000-8000-000000000001"
	partB    = "6b1f4c2e-0000-4000-8000-000000000002"
)

// writeDisk writes a GPT with two partitions using go-diskfs, the writer
// the payload disk uses.
func writeDisk(t *testing.T, sector int) []byte {
	t.Helper()
	size := int64(8 << 20)
	f, err := os.Create(filepath.Join(t.TempDir(), "disk.raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab := &gpt.Table{LogicalSectorSize: sector, PhysicalSectorSize: sector, ProtectiveMBR: true, GUID: diskGUID,
		Partitions: []*gpt.Partition{
			{Index: 1, Start: uint64(1<<20) / uint64(sector), Size: 1 << 20, Type: gpt.LinuxFilesystem, Name: "models", GUID: partA},
			{Index: 2, Start: uint64(2<<20) / uint64(sector), Size: 2 << 20, Type: gpt.LinuxFilesystem, Name: "web-ui_2", GUID: partB, Attributes: 1 << 60},
		}}
	if err := tab.Write(f, size); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRead(t *testing.T) {
	for _, sector := range []int{512, 4096} {
		d := writeDisk(t, sector)
		tab, err := Read(bytes.NewReader(d), "disk.raw", int64(sector))
		if err != nil {
			t.Fatalf("sector %d: %v", sector, err)
		}
		per := uint64(1<<20) / uint64(sector)
		want := []Partition{
			{Index: 1, TypeGUID: "0fc63daf-8483-4772-8e79-3d69d8477de4", GUID: partA, FirstLBA: per, LastLBA: 2*per - 1, Name: "models"},
			{Index: 2, TypeGUID: "0fc63daf-8483-4772-8e79-3d69d8477de4", GUID: partB, FirstLBA: 2 * per, LastLBA: 4*per - 1, Attributes: 1 << 60, Name: "web-ui_2"},
		}
		if tab.DiskGUID != diskGUID || len(tab.Partitions) != len(want) {
			t.Fatalf("sector %d: %+v", sector, tab)
		}
		for i, p := range tab.Partitions {
			if p != want[i] {
				t.Errorf("sector %d: partition %d = %+v, want %+v", sector, i+1, p, want[i])
			}
		}
	}
}

func TestReadRefuses(t *testing.T) {
	const hdr = 512
	for _, tc := range []struct {
		name, want string
		corrupt    func(b []byte)
	}{
		{"header CRC", "GPT of /dev/vdb: header CRC32 mismatch", func(b []byte) { b[hdr+56] ^= 1 }},                       // disk GUID
		{"entry array CRC", "GPT of /dev/vdb: partition entry array CRC32 mismatch", func(b []byte) { b[2*hdr+56] ^= 1 }}, // first name
		{"signature", "GPT of /dev/vdb: no GPT signature at LBA 1", func(b []byte) { copy(b[hdr:], "NOT PART") }},
		{"blank disk", "GPT of /dev/vdb: no GPT signature", func(b []byte) { clear(b) }},
	} {
		d := writeDisk(t, hdr)
		tc.corrupt(d)
		_, err := Read(bytes.NewReader(d), "/dev/vdb", hdr)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
		if noGPT := strings.Contains(tc.want, "no GPT signature"); errors.Is(err, ErrNoGPT) != noGPT {
			t.Errorf("%s: errors.Is(%v, ErrNoGPT) = %v, want %v", tc.name, err, !noGPT, noGPT)
		}
	}
	// An entry array too large to be real, with a correct header CRC: the
	// size is refused before anything is allocated.
	d := writeDisk(t, hdr)
	h := d[hdr : hdr+92]
	binary.LittleEndian.PutUint32(h[84:], 1<<30)
	binary.LittleEndian.PutUint32(h[16:], 0)
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h))
	if _, err := Read(bytes.NewReader(d), "/dev/vdb", hdr); err == nil || !strings.Contains(err.Error(), "implausible partition entry array") {
		t.Errorf("huge entry size: %v", err)
	}
	if _, err := Read(bytes.NewReader(make([]byte, 600)), "tiny.raw", hdr); err == nil || !strings.Contains(err.Error(), "GPT of tiny.raw: reading the header") {
		t.Errorf("truncated disk: %v", err)
	}
}
