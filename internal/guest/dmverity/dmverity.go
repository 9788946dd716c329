// Package dmverity activates dm-verity targets for payload partitions in
// the guest, talking to device-mapper with ioctls on /dev/mapper/control
// through package devmapper (no dmsetup or veritysetup binary), and finds payload partitions by GPT
// disk GUID and partition index.
//
// The table is
//
//	1 <dev> <dev> 4096 4096 <data_blocks> <hash_start> sha256 <root> <salt>
//
// with data and hash on the same partition and hash_start = hash_offset/4096
// + 1: the kernel wants the block of the tree's top level, which follows the
// one-block verity superblock (the verity package writes byte-identical
// hash areas to `veritysetup format`, whose tree starts there too).
package dmverity

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"

	"github.com/tdforge/tdforge/internal/guest/devmapper"
	"github.com/tdforge/tdforge/internal/image/hashtree"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// Table returns the dm-verity table parameters for payload p whose data
// and hash live on the block device dev ("major:minor" or a path).
func Table(dev string, p policy.Payload) (length uint64, params string, err error) {
	if p.HashAlg != hashtree.HashAlg || p.DataBlockSize != hashtree.BlockSize || p.HashBlockSize != hashtree.BlockSize {
		return 0, "", fmt.Errorf("dm-verity %q: only sha256 with 4096-byte blocks is supported", p.Name)
	}
	if p.DataSize == 0 || p.DataSize%hashtree.BlockSize != 0 || p.HashOffset < p.DataSize || p.HashOffset%hashtree.BlockSize != 0 {
		return 0, "", fmt.Errorf("dm-verity %q: data_size %d / hash_offset %d must be 4096-byte multiples with hash_offset >= data_size", p.Name, p.DataSize, p.HashOffset)
	}
	root, err := hex.DecodeString(p.RootHash)
	if err != nil || len(root) != 32 {
		return 0, "", fmt.Errorf("dm-verity %q: root hash must be 64 hex digits", p.Name)
	}
	salt, err := hex.DecodeString(p.Salt)
	if err != nil || len(salt) > 256 {
		return 0, "", fmt.Errorf("dm-verity %q: salt must be hex, at most 256 bytes", p.Name)
	}
	saltArg := "-"
	if len(salt) > 0 {
		saltArg = hex.EncodeToString(salt)
	}
	blocks := p.DataSize / hashtree.BlockSize
	params = fmt.Sprintf("1 %s %s %d %d %d %d %s %s %s", dev, dev, hashtree.BlockSize, hashtree.BlockSize,
		blocks, hashtree.HashStartBlock(int64(p.HashOffset)), hashtree.HashAlg, hex.EncodeToString(root), saltArg)
	return p.DataSize / 512, params, nil
}

// checkSuperblock compares the partition's verity superblock with the
// policy, for a clear error before the kernel would fail I/O. The root
// hash in the table is what actually protects the data.
func checkSuperblock(device string, p policy.Payload) error {
	f, err := os.Open(device)
	if err != nil {
		return fmt.Errorf("dm-verity %q: %w", p.Name, err)
	}
	defer f.Close()
	b := make([]byte, hashtree.SuperblockSize)
	if _, err := f.ReadAt(b, int64(p.HashOffset)); err != nil {
		return fmt.Errorf("dm-verity %q: reading superblock at %d of %s: %w", p.Name, p.HashOffset, device, err)
	}
	salt, blocks, err := hashtree.ParseSuperblock(b)
	if err != nil {
		return fmt.Errorf("dm-verity %q: %s at offset %d: %w", p.Name, device, p.HashOffset, err)
	}
	want, _ := hex.DecodeString(p.Salt)
	if !bytes.Equal(salt, want) || blocks != p.DataSize/hashtree.BlockSize {
		return fmt.Errorf("dm-verity %q: superblock on %s (salt %x, %d blocks) does not match the policy (salt %s, %d blocks): wrong disk or partition", p.Name, device, salt, blocks, p.Salt, p.DataSize/hashtree.BlockSize)
	}
	return nil
}

// Setup creates a read-only dm-verity device called name over the block
// device holding payload p and returns the path of its device node
// (/dev/mapper/<name>).
func Setup(name, device string, p policy.Payload) (string, error) {
	dev, err := devmapper.DevNum(device)
	if err != nil {
		return "", fmt.Errorf("dm-verity %q: %w", p.Name, err)
	}
	if err := checkSuperblock(device, p); err != nil {
		return "", err
	}
	length, params, err := Table(dev, p)
	if err != nil {
		return "", err
	}
	node, err := devmapper.Create(name, "TDFORGE-VERITY-"+name, true, devmapper.Target{Length: length, Type: "verity", Params: params})
	if err != nil {
		return "", fmt.Errorf("dm-verity %q (table %s): %w", p.Name, params, err)
	}
	return node, nil
}

// Remove removes the device-mapper device name and its node.
func Remove(name string) error { return devmapper.Remove(name) }

// Kernel bundles FindPartition, Setup and Remove as methods, for callers
// that take them as an interface (initd's payload.Verity).
type Kernel struct{}

// FindPartition calls the package-level FindPartition.
func (Kernel) FindPartition(diskGUID string, index int) (string, error) {
	return FindPartition(diskGUID, index)
}

// Setup calls the package-level Setup.
func (Kernel) Setup(name, device string, p policy.Payload) (string, error) {
	return Setup(name, device, p)
}

// Remove calls the package-level Remove.
func (Kernel) Remove(name string) error { return Remove(name) }
