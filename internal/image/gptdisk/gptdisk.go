// Package gptdisk assembles the payload disk: a GPT disk with one partition
// per payload, each holding an EROFS image followed by its dm-verity hash
// area, then one all-zero (sparse) partition per sealed volume, which
// initd formats on the TD's first boot (docs/volume.md). Every byte, GUIDs
// included, is a function of the payload contents and the volumes' names,
// UUIDs and sizes, so the same input always gives the same disk.
//
// Partitions are built into a content-addressed cache (Options.CacheDir) and
// copied into the disk with reflink or copy_file_range, so an unchanged
// payload is neither re-hashed nor re-encoded on the next build.
package gptdisk

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/tdforge/tdforge/internal/fsutil"
	"github.com/tdforge/tdforge/internal/image/fstree"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

const (
	sector   = 512
	align    = 1 << 20 // partition alignment and granularity
	firstLBA = align / sector
	maxParts = 128 // GPT partition entries
)

// Payload is one named file tree to put in its own partition.
type Payload struct {
	Name string // partition name, matching policy.NamePattern
	Tree *fstree.Tree
	// Key, if set, encrypts the EROFS image in dm-crypt's format (package
	// crypt) before dm-verity hashes it: the partition then holds
	// ciphertext and a hash tree over the ciphertext. The key is used for
	// nothing else and never written.
	Key []byte
}

// Options tune Build.
type Options struct {
	// CacheDir holds cached partition images and source file digests. If
	// empty, a temporary directory next to the output is used and removed.
	CacheDir string
	// Progress, if set, is called as a payload is built: done and total
	// count content bytes encoded plus bytes hashed. A cached payload
	// reports done == total at once.
	Progress func(name string, done, total int64)
	// Volumes are the sealed volumes' regions, placed after the payloads.
	Volumes []Volume
}

// Volume is a sealed volume's region: SizeBytes of zeros in a partition
// whose unique GUID is UUID (the policy's volume UUID, by which initd
// finds it) and whose type GUID is policy.VolumeTypeGUID.
type Volume struct {
	Name      string
	UUID      string
	SizeBytes uint64
}

// Build writes the disk image to out (atomically: temp file + rename) and
// returns its layout.
func Build(ctx context.Context, out string, payloads []Payload, opts Options) (*Layout, error) {
	if len(payloads) == 0 {
		return nil, errors.New("payload disk: no payloads; a disk needs at least one")
	}
	if len(payloads) > maxParts {
		return nil, fmt.Errorf("payload disk: %d payloads, a GPT holds at most %d", len(payloads), maxParts)
	}
	seen := map[string]bool{}
	for i, p := range payloads {
		if !policy.ValidName(p.Name) {
			return nil, fmt.Errorf("payload disk: payload %d: name %q must match %s (it is the GPT partition name)", i, p.Name, policy.NamePattern)
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("payload disk: payload %q listed twice", p.Name)
		}
		seen[p.Name] = true
		if p.Tree == nil {
			return nil, fmt.Errorf("payload disk: payload %q has no tree", p.Name)
		}
	}
	for _, v := range opts.Volumes {
		if !policy.ValidName(v.Name) || seen["volume "+v.Name] {
			return nil, fmt.Errorf("payload disk: volume %q: name must be unique and match %s", v.Name, policy.NamePattern)
		}
		seen["volume "+v.Name] = true
		if !policy.ValidGUID(v.UUID) || v.SizeBytes == 0 || v.SizeBytes%align != 0 {
			return nil, fmt.Errorf("payload disk: volume %q: uuid %q must be a lowercase dashed UUID and size %d a positive multiple of 1 MiB", v.Name, v.UUID, v.SizeBytes)
		}
	}
	if len(payloads)+len(opts.Volumes) > maxParts {
		return nil, fmt.Errorf("payload disk: %d payloads and %d volumes, a GPT holds at most %d partitions", len(payloads), len(opts.Volumes), maxParts)
	}
	c, err := openCache(opts.CacheDir)
	if err != nil {
		return nil, err
	}
	preps := make([]*prepared, len(payloads))
	for i, p := range payloads {
		if preps[i], err = c.prepare(p.Name, p.Tree, p.Key); err != nil {
			return nil, err
		}
	}
	progress := func(name string) func(done, total int64) {
		if opts.Progress == nil {
			return nil
		}
		return func(done, total int64) { opts.Progress(name, done, total) }
	}
	if opts.CacheDir == "" {
		return buildDirect(ctx, out, c, preps, opts.Volumes, progress)
	}
	built := make([]cachedPart, len(preps))
	for i, p := range preps {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		bp, err := c.partition(ctx, p, progress(p.name))
		if saveErr := c.saveDigests(); err == nil && saveErr != nil {
			err = saveErr
		}
		if err != nil {
			return nil, err
		}
		built[i] = bp
	}
	l := layout(built, opts.Volumes)
	if c.outputUnchanged(out, l) {
		return l, nil
	}
	f, err := createDisk(out, l)
	if err != nil {
		return nil, err
	}
	defer f.Abort()
	for i, p := range l.Partitions {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		src, err := os.Open(built[i].path)
		if err != nil {
			return nil, fmt.Errorf("payload disk: %w", err)
		}
		err = copyRange(f.File, int64(p.StartLBA*sector), src, int64(p.SizeBytes))
		src.Close()
		if err != nil {
			return nil, fmt.Errorf("payload disk: copying partition %q: %w", p.Name, err)
		}
	}
	if err := f.Commit(); err != nil {
		return nil, fmt.Errorf("payload disk: %w", err)
	}
	if err := c.recordOutput(out, l); err != nil {
		return nil, err
	}
	return l, nil
}

// buildDirect encodes every partition in place in the new disk file (no
// cache, no copy). Partition sizes are known before encoding, so offsets
// are fixed up front; GUIDs and the GPT follow once root hashes are known.
func buildDirect(ctx context.Context, out string, c *cache, preps []*prepared, vols []Volume, progress func(string) func(done, total int64)) (*Layout, error) {
	planned := make([]cachedPart, len(preps))
	for i, p := range preps {
		planned[i].meta = partMeta{Name: p.name, Size: p.size}
	}
	pl := layout(planned, vols)
	f, err := fsutil.Create(out, 0o644)
	if err != nil {
		return nil, fmt.Errorf("payload disk: %w", err)
	}
	defer f.Abort()
	if err := f.Truncate(int64(pl.SizeBytes)); err != nil {
		return nil, fmt.Errorf("payload disk: %w", err)
	}
	built := make([]cachedPart, len(preps))
	for i, p := range preps {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		m, err := c.buildInto(ctx, f.File, int64(pl.Partitions[i].StartLBA*sector), p, progress(p.name))
		if err != nil {
			return nil, err
		}
		built[i].meta = m
	}
	l := layout(built, vols)
	for i := range l.Partitions {
		if l.Partitions[i].StartLBA != pl.Partitions[i].StartLBA || l.SizeBytes != pl.SizeBytes {
			return nil, fmt.Errorf("payload disk: internal error: partition %q moved after encoding", l.Partitions[i].Name)
		}
	}
	if err := writeGPT(f, l); err != nil {
		return nil, err
	}
	if err := f.Commit(); err != nil {
		return nil, fmt.Errorf("payload disk: %w", err)
	}
	return l, nil
}

// layout places partitions back to back from LBA 2048, 1 MiB aligned, and
// derives all GUIDs from the partitions' verity root hashes; the volume
// regions follow, their GUIDs being the volumes' UUIDs. The regions are
// never written: the disk file is truncated to size, so they are sparse
// zeros.
func layout(built []cachedPart, vols []Volume) *Layout {
	l := &Layout{}
	var diskParts [][]byte
	next := uint64(firstLBA)
	for i, b := range built {
		root, _ := hex.DecodeString(b.meta.RootHash)
		p := Partition{
			Name:       b.meta.Name,
			Index:      i + 1,
			GUID:       nameUUID("partition-guid", []byte(b.meta.Name), root),
			StartLBA:   next,
			SizeBytes:  b.meta.Size,
			DataSize:   b.meta.DataSize,
			HashOffset: b.meta.HashOffset,
			RootHash:   b.meta.RootHash,
			Salt:       b.meta.Salt,
			ContentKey: b.meta.ContentKey,
			Encrypted:  b.meta.Encrypted,
		}
		next += p.SizeBytes / sector
		l.Partitions = append(l.Partitions, p)
		diskParts = append(diskParts, []byte(p.Name), root)
	}
	for i, v := range vols {
		l.Volumes = append(l.Volumes, VolumePartition{Name: v.Name, Index: len(built) + i + 1, GUID: v.UUID, StartLBA: next, SizeBytes: v.SizeBytes})
		next += v.SizeBytes / sector
		diskParts = append(diskParts, []byte("volume:"+v.Name), []byte(v.UUID), []byte(fmt.Sprint(v.SizeBytes)))
	}
	l.DiskGUID = nameUUID("disk-guid", diskParts...)
	l.SizeBytes = next*sector + align // room for the backup GPT
	return l
}

// createDisk starts the atomic output file, sized, with the GPT written.
func createDisk(out string, l *Layout) (*fsutil.File, error) {
	f, err := fsutil.Create(out, 0o644)
	if err != nil {
		return nil, fmt.Errorf("payload disk: %w", err)
	}
	if err := f.Truncate(int64(l.SizeBytes)); err != nil {
		f.Abort()
		return nil, fmt.Errorf("payload disk: %w", err)
	}
	// The GPT goes first, while the file is still empty, so go-diskfs's
	// per-write syncs stay cheap.
	if err := writeGPT(f, l); err != nil {
		f.Abort()
		return nil, err
	}
	return f, nil
}

func writeGPT(f *fsutil.File, l *Layout) error {
	t := &gpt.Table{LogicalSectorSize: sector, PhysicalSectorSize: sector, ProtectiveMBR: true, GUID: l.DiskGUID}
	for _, p := range l.Partitions {
		t.Partitions = append(t.Partitions, &gpt.Partition{
			Index: p.Index, Start: p.StartLBA, Size: p.SizeBytes,
			Type: gpt.LinuxFilesystem, Name: p.Name, GUID: p.GUID,
		})
	}
	for _, v := range l.Volumes {
		t.Partitions = append(t.Partitions, &gpt.Partition{
			Index: v.Index, Start: v.StartLBA, Size: v.SizeBytes,
			Type: gpt.Type(strings.ToUpper(policy.VolumeTypeGUID)), Name: "volume-" + v.Name, GUID: v.GUID,
		})
	}
	if err := t.Write(f.File, int64(l.SizeBytes)); err != nil {
		return fmt.Errorf("payload disk: writing GPT: %w", err)
	}
	return nil
}
