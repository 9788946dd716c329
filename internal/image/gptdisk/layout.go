package gptdisk

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"

	"github.com/tdforge/tdforge/internal/canonjson"
	"github.com/tdforge/tdforge/internal/image/hashtree"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// Partition describes one payload partition of the disk.
type Partition struct {
	Name  string `json:"name"`
	Index int    `json:"partition"` // 1-based GPT index
	GUID  string `json:"guid"`      // unique partition GUID, lowercase dashed
	// StartLBA is in 512-byte sectors; SizeBytes is the partition size.
	StartLBA  uint64 `json:"start_lba"`
	SizeBytes uint64 `json:"size"`
	// DataSize is the EROFS image size; HashOffset is where the verity
	// superblock starts, both relative to the partition start.
	DataSize   uint64 `json:"data_size"`
	HashOffset uint64 `json:"hash_offset"`
	RootHash   string `json:"verity_root_hash"` // hex
	Salt       string `json:"salt"`             // hex
	// ContentKey is the hex SHA-256 of the payload's tree listing
	// (paths, modes, sizes, link targets, content digests, epoch); for an
	// encrypted payload, a digest of that and of the key's digest, so that
	// it confirms no guess at the plaintext.
	ContentKey string `json:"content_key"`
	// Encrypted says the data area is dm-crypt ciphertext (package crypt).
	Encrypted bool `json:"encrypted,omitempty"`
}

// VolumePartition describes a sealed volume's all-zero region.
type VolumePartition struct {
	Name      string `json:"name"`
	Index     int    `json:"partition"` // 1-based GPT index, after the payloads
	GUID      string `json:"guid"`      // the policy's volume UUID
	StartLBA  uint64 `json:"start_lba"`
	SizeBytes uint64 `json:"size"`
}

// Layout describes the whole disk.
type Layout struct {
	DiskGUID   string            `json:"disk_guid"`
	SizeBytes  uint64            `json:"size"`
	Partitions []Partition       `json:"partitions"`
	Volumes    []VolumePartition `json:"volumes,omitempty"`
}

// Marshal returns the layout as indented JSON with a trailing newline.
func (l *Layout) Marshal() ([]byte, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	return canonjson.Marshal(l)
}

// ReadLayout reads and validates a layout JSON file (payloads.json).
func ReadLayout(path string) (*Layout, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("payload layout: %w", err)
	}
	var l Layout
	if err := canonjson.Decode(bytes.NewReader(b), &l); err != nil {
		return nil, fmt.Errorf("payload layout %s: %w", path, err)
	}
	if err := l.Validate(); err != nil {
		return nil, fmt.Errorf("payload layout %s: %w", path, err)
	}
	return &l, nil
}

// Validate checks that the layout is self-consistent.
func (l *Layout) Validate() error {
	if !policy.ValidGUID(l.DiskGUID) {
		return fmt.Errorf("disk_guid %q is not a lowercase dashed GUID", l.DiskGUID)
	}
	var end uint64 = firstLBA * sector
	names := map[string]bool{}
	for i, p := range l.Partitions {
		if p.Index != i+1 {
			return fmt.Errorf("partition %q has index %d, want %d", p.Name, p.Index, i+1)
		}
		if !policy.ValidName(p.Name) || names[p.Name] {
			return fmt.Errorf("partition %d: name %q must be unique and match %s", p.Index, p.Name, policy.NamePattern)
		}
		names[p.Name] = true
		if !policy.ValidGUID(p.GUID) {
			return fmt.Errorf("partition %q: guid %q is not a lowercase dashed GUID", p.Name, p.GUID)
		}
		if p.StartLBA*sector < end || p.StartLBA*sector%align != 0 || p.SizeBytes%align != 0 {
			return fmt.Errorf("partition %q: start_lba %d / size %d must be 1 MiB aligned and not overlap", p.Name, p.StartLBA, p.SizeBytes)
		}
		if p.DataSize == 0 || p.DataSize%4096 != 0 || p.HashOffset < p.DataSize || p.HashOffset%4096 != 0 || p.HashOffset >= p.SizeBytes {
			return fmt.Errorf("partition %q: data_size %d / hash_offset %d inconsistent with size %d", p.Name, p.DataSize, p.HashOffset, p.SizeBytes)
		}
		if b, err := hex.DecodeString(p.RootHash); err != nil || len(b) != sha256.Size {
			return fmt.Errorf("partition %q: verity_root_hash must be 64 hex digits", p.Name)
		}
		if b, err := hex.DecodeString(p.Salt); err != nil || len(b) > 256 {
			return fmt.Errorf("partition %q: salt must be at most 256 hex-encoded bytes", p.Name)
		}
		end = p.StartLBA*sector + p.SizeBytes
	}
	for i, v := range l.Volumes {
		if v.Index != len(l.Partitions)+i+1 || !policy.ValidName(v.Name) || !policy.ValidGUID(v.GUID) {
			return fmt.Errorf("volume %d: index %d, name %q and guid %q must follow the payloads, match %s and be a lowercase dashed GUID", i+1, v.Index, v.Name, v.GUID, policy.NamePattern)
		}
		if v.StartLBA*sector < end || v.StartLBA*sector%align != 0 || v.SizeBytes == 0 || v.SizeBytes%align != 0 {
			return fmt.Errorf("volume %q: start_lba %d / size %d must be 1 MiB aligned and not overlap", v.Name, v.StartLBA, v.SizeBytes)
		}
		end = v.StartLBA*sector + v.SizeBytes
	}
	if l.SizeBytes < end+align {
		return fmt.Errorf("disk size %d leaves no room for the backup GPT after %d", l.SizeBytes, end)
	}
	return nil
}

// Partition returns the partition named name.
func (l *Layout) Partition(name string) (Partition, bool) {
	for _, p := range l.Partitions {
		if p.Name == name {
			return p, true
		}
	}
	return Partition{}, false
}

// nameUUID derives a name-based UUID (RFC 9562 version 8, SHA-256) from a
// namespace label and parts.
func nameUUID(label string, parts ...[]byte) string {
	h := sha256.New()
	h.Write([]byte("tdforge/v1/" + label + "\x00"))
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write(p)
	}
	u := h.Sum(nil)[:16]
	u[6] = u[6]&0x0f | 0x80
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// Policy returns the boot-policy entry for this partition, mounted at
// mountPoint. It is where a payload's filesystem type and dm-verity
// parameters (hash, data and hash block size) are decided: those this
// package wrote the partition with.
func (p Partition) Policy(mountPoint string) policy.Payload {
	return policy.Payload{
		Name: p.Name, Partition: p.Index, PartitionGUID: p.GUID, FSType: policy.PayloadFSType,
		DataSize: p.DataSize, HashOffset: p.HashOffset,
		DataBlockSize: hashtree.BlockSize, HashBlockSize: hashtree.BlockSize, HashAlg: hashtree.HashAlg,
		RootHash: p.RootHash, Salt: p.Salt, MountPoint: mountPoint,
	}
}
