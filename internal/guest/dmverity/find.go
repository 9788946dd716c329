package dmverity

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/tdforge/tdforge/internal/guest/blockdev"
	"github.com/tdforge/tdforge/internal/image/gptdisk/gptread"
)

// devices is the kernel's block device tree (tests point it elsewhere).
var devices blockdev.Tree

// FindPartition returns the device node (e.g. /dev/vdb2) of partition
// index (1-based) on the disk whose primary GPT header carries diskGUID
// (disks and nodes come from blockdev). It is an error if no disk or more
// than one disk matches.
func FindPartition(diskGUID string, index int) (string, error) {
	want := strings.ToLower(diskGUID)
	disks, err := devices.Disks()
	if err != nil {
		return "", fmt.Errorf("find partition: %w", err)
	}
	var matches []string
	var damaged []string // disks with a GPT that failed its checks
	for _, d := range disks {
		t, err := d.GPT()
		if err != nil && !errors.Is(err, gptread.ErrNoGPT) {
			damaged = append(damaged, err.Error())
		}
		if err != nil || t.DiskGUID != want {
			continue
		}
		matches = append(matches, d.Name)
	}
	sort.Strings(matches)
	switch len(matches) {
	case 0:
		if len(damaged) > 0 {
			return "", fmt.Errorf("find partition: no disk with GPT disk GUID %s; refused: %s", want, strings.Join(damaged, "; "))
		}
		return "", fmt.Errorf("find partition: no disk with GPT disk GUID %s (is the payload disk attached?)", want)
	case 1:
	default:
		return "", fmt.Errorf("find partition: disks %v all carry GPT disk GUID %s; refusing to guess", matches, want)
	}
	disk := matches[0]
	node, err := devices.PartitionNode(disk, index)
	var np *blockdev.NoPartitionError
	if errors.As(err, &np) {
		return "", fmt.Errorf("find partition: disk %s (GUID %s) has no partition %d", disk, want, index)
	}
	if err != nil {
		return "", fmt.Errorf("find partition: %w", err)
	}
	return node, nil
}
