package dmverity

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tdforge/tdforge/internal/guest/devmapper"
	"github.com/tdforge/tdforge/internal/image/gptdisk/gptread"
)

// Roots, overridable in tests.
var (
	sysBlock = "/sys/block"
	devDir   = "/dev"
)

// FindPartition returns the device node (e.g. /dev/vdb2) of partition
// index (1-based) on the disk whose primary GPT header carries diskGUID.
// Disks are found under /sys/block; missing /dev nodes are created from
// sysfs. It is an error if no disk or more than one disk matches.
func FindPartition(diskGUID string, index int) (string, error) {
	want := strings.ToLower(diskGUID)
	ents, err := os.ReadDir(sysBlock)
	if err != nil {
		return "", fmt.Errorf("find partition: %w", err)
	}
	var matches []string
	var damaged []string // disks with a GPT that failed its checks
	for _, e := range ents {
		disk := e.Name()
		if strings.HasPrefix(disk, "dm-") || strings.HasPrefix(disk, "ram") || strings.HasPrefix(disk, "zram") {
			continue
		}
		node, err := nodeFor(disk)
		if err != nil {
			continue
		}
		guid, err := readDiskGUID(node, sectorSize(disk))
		if err != nil && !errors.Is(err, gptread.ErrNoGPT) {
			damaged = append(damaged, err.Error())
		}
		if err != nil || guid != want {
			continue
		}
		matches = append(matches, disk)
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
	parts, err := os.ReadDir(filepath.Join(sysBlock, disk))
	if err != nil {
		return "", fmt.Errorf("find partition: %w", err)
	}
	for _, p := range parts {
		b, err := os.ReadFile(filepath.Join(sysBlock, disk, p.Name(), "partition"))
		if err != nil {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n == index {
			return nodeFor(filepath.Join(disk, p.Name()))
		}
	}
	return "", fmt.Errorf("find partition: disk %s (GUID %s) has no partition %d", disk, want, index)
}

// nodeFor returns /dev/<base name of rel>, creating the block device node
// from <sysBlock>/<rel>/dev when it is missing.
func nodeFor(rel string) (string, error) {
	node := filepath.Join(devDir, filepath.Base(rel))
	if _, err := os.Stat(node); err == nil {
		return node, nil
	}
	b, err := os.ReadFile(filepath.Join(sysBlock, rel, "dev"))
	if err != nil {
		return "", err
	}
	dev, err := devmapper.ParseMajMin(string(b))
	if err != nil {
		return "", err
	}
	return node, devmapper.EnsureNode(node, unix.S_IFBLK, dev)
}

func sectorSize(disk string) int64 {
	b, err := os.ReadFile(filepath.Join(sysBlock, disk, "queue", "logical_block_size"))
	if err != nil {
		return 512
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n < 512 {
		return 512
	}
	return n
}

// readDiskGUID reads and checks the primary GPT of node and returns its
// disk GUID.
func readDiskGUID(node string, sector int64) (string, error) {
	f, err := os.Open(node)
	if err != nil {
		return "", err
	}
	defer f.Close()
	t, err := gptread.Read(f, node, sector)
	if err != nil {
		return "", err
	}
	return t.DiskGUID, nil
}
