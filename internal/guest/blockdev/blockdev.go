// Package blockdev finds the guest's disks and partitions through sysfs
// and returns their /dev nodes, creating a node from sysfs where /dev
// lacks it. It is the one place that walks /sys/block; callers (payload
// disks in internal/guest/dmverity, sealed volumes in initd/volume) keep
// their own rule for which disk or partition is theirs.
package blockdev

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tdforge/tdforge/internal/guest/devmapper"
	"github.com/tdforge/tdforge/internal/image/gptdisk/gptread"
)

// Tree is where the kernel lists its block devices (SysBlock, normally
// /sys/block) and where their nodes live (Dev, normally /dev). The zero
// Tree is the running kernel's; tests point it at a fake tree.
type Tree struct {
	SysBlock, Dev string
}

func (t Tree) sysBlock() string {
	if t.SysBlock == "" {
		return "/sys/block"
	}
	return t.SysBlock
}

func (t Tree) dev() string {
	if t.Dev == "" {
		return "/dev"
	}
	return t.Dev
}

// Disk is a whole disk found under /sys/block.
type Disk struct {
	Name       string // sysfs name, e.g. vdb
	Node       string // device node, e.g. /dev/vdb
	SectorSize int64  // logical block size (512 when sysfs does not say)
}

// skipped are the name prefixes of block devices that the guest itself
// creates and that never are a host-attached disk: device-mapper targets
// (whose contents are payload or volume data, and could carry a copy of a
// GPT), RAM disks, zram and loop devices (backed by guest files; unbound
// ones read as empty).
var skipped = []string{"dm-", "ram", "zram", "loop"}

// Disks lists the disks under /sys/block, in sysfs order, that could be
// host-attached, with their nodes (created when missing). A disk whose
// node cannot be made is left out: nothing can read it.
func (t Tree) Disks() ([]Disk, error) {
	ents, err := os.ReadDir(t.sysBlock())
	if err != nil {
		return nil, err
	}
	var out []Disk
next:
	for _, e := range ents {
		name := e.Name()
		for _, p := range skipped {
			if strings.HasPrefix(name, p) {
				continue next
			}
		}
		node, err := t.node(name)
		if err != nil {
			continue
		}
		out = append(out, Disk{Name: name, Node: node, SectorSize: t.sectorSize(name)})
	}
	return out, nil
}

// GPT reads and checks d's primary GPT (gptread.Read; an error wrapping
// gptread.ErrNoGPT means the disk has none).
func (d Disk) GPT() (*gptread.Table, error) {
	f, err := os.Open(d.Node)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return gptread.Read(f, d.Node, d.SectorSize)
}

// NoPartitionError says that disk has no partition Index in sysfs.
type NoPartitionError struct {
	Disk     string
	Index    int
	SysBlock string
}

func (e *NoPartitionError) Error() string {
	return fmt.Sprintf("disk %s has no partition %d in %s", e.Disk, e.Index, e.SysBlock)
}

// PartitionNode returns the node of partition index (1-based, the GPT
// entry's number) of disk, found by its sysfs "partition" file (names
// differ: vdb2, nvme0n1p2), created when missing. A disk without that
// partition is a *NoPartitionError.
func (t Tree) PartitionNode(disk string, index int) (string, error) {
	ents, err := os.ReadDir(filepath.Join(t.sysBlock(), disk))
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(t.sysBlock(), disk, e.Name(), "partition"))
		if err != nil {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n == index {
			return t.node(filepath.Join(disk, e.Name()))
		}
	}
	return "", &NoPartitionError{Disk: disk, Index: index, SysBlock: t.sysBlock()}
}

// node returns <Dev>/<base name of rel>. devtmpfs names each node after
// the kernel's device, so a node that exists is used; a missing one (a
// /dev without devtmpfs) is made from <SysBlock>/<rel>/dev.
func (t Tree) node(rel string) (string, error) {
	node := filepath.Join(t.dev(), filepath.Base(rel))
	if _, err := os.Stat(node); err == nil {
		return node, nil
	}
	b, err := os.ReadFile(filepath.Join(t.sysBlock(), rel, "dev"))
	if err != nil {
		return "", err
	}
	dev, err := devmapper.ParseMajMin(string(b))
	if err != nil {
		return "", err
	}
	if err := devmapper.EnsureNode(node, unix.S_IFBLK, dev); err != nil {
		return "", err
	}
	return node, nil
}

// sectorSize is disk's logical block size from sysfs, 512 when sysfs
// does not say or says less.
func (t Tree) sectorSize(disk string) int64 {
	b, err := os.ReadFile(filepath.Join(t.sysBlock(), disk, "queue", "logical_block_size"))
	if err != nil {
		return 512
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n < 512 {
		return 512
	}
	return n
}
