// Package diff compares two build output directories artifact by artifact
// and explains where two images differ: initrd entries, GPT fields,
// partition areas and the files of differing EROFS filesystems. It is
// `builder diff`.
package diff

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tdforge/tdforge/internal/fsutil"
	"github.com/tdforge/tdforge/internal/image/gptdisk"
	"github.com/tdforge/tdforge/internal/image/gptdisk/gptread"
	"github.com/tdforge/tdforge/internal/image/imagedir"
	"github.com/tdforge/tdforge/internal/image/initramfs"
)

// Report is the comparison of two build output directories.
type Report struct {
	A         string     `json:"a"`
	B         string     `json:"b"`
	Identical bool       `json:"identical"`
	Artifacts []Artifact `json:"artifacts"`
}

type Artifact struct {
	Name    string        `json:"name"`
	Status  string        `json:"status"` // same, different, missing_in_a, missing_in_b
	SizeA   int64         `json:"size_a,omitempty"`
	SizeB   int64         `json:"size_b,omitempty"`
	SHA256A string        `json:"sha256_a,omitempty"`
	SHA256B string        `json:"sha256_b,omitempty"`
	Initrd  []InitrdEntry `json:"initrd,omitempty"`
	Disk    *Disk         `json:"disk,omitempty"`
	Note    string        `json:"note,omitempty"` // why a detail could not be computed
}

type InitrdEntry struct {
	Name   string   `json:"name"`
	Status string   `json:"status"`           // different, missing_in_a, missing_in_b
	Fields []string `json:"fields,omitempty"` // content, mode, mtime, size, uid, gid, rdev, target, order
}

type Disk struct {
	SizeA      int64       `json:"size_a"`
	SizeB      int64       `json:"size_b"`
	GPT        []Field     `json:"gpt,omitempty"`
	Partitions []Partition `json:"partitions,omitempty"`
	Other      []Region    `json:"other_regions,omitempty"` // outside partitions
	Note       string      `json:"note,omitempty"`
}

type Field struct {
	Field string `json:"field"`
	A     string `json:"a"`
	B     string `json:"b"`
}

type Partition struct {
	Index          int      `json:"partition"`
	Name           string   `json:"name"`
	Status         string   `json:"status"` // same, different
	DifferentBytes int64    `json:"different_bytes"`
	Regions        []Region `json:"regions,omitempty"`
	MoreRegions    int      `json:"more_regions,omitempty"`
	Files          []File   `json:"files,omitempty"`
	FilesNote      string   `json:"files_note,omitempty"`
}

type Region struct {
	Offset int64  `json:"offset"` // bytes from the partition start (disk start for other_regions)
	Length int64  `json:"length"`
	Area   string `json:"area"` // filesystem, padding, verity hash, partition, primary GPT, backup GPT, unpartitioned
}

type File struct {
	Path   string `json:"path"`
	Change string `json:"change"` // content, mode, type, target, missing_in_a, missing_in_b
}

const maxRegions = 16

func listFiles(dir string) (map[string]bool, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory (want a build output directory)", dir)
	}
	out := map[string]bool{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out[filepath.ToSlash(rel)] = true
		}
		return nil
	})
	return out, err
}

// Dirs compares build output directories a and b: every regular file is
// same, different or missing on one side. A differing initrd is compared
// entry by entry; a differing disk image by GPT, partition areas
// (filesystem, padding, verity hash, from payloads.json) and, when
// fsck.erofs is installed, by file.
func Dirs(ctx context.Context, a, b string) (*Report, error) {
	fa, err := listFiles(a)
	if err != nil {
		return nil, err
	}
	fb, err := listFiles(b)
	if err != nil {
		return nil, err
	}
	names := maps.Clone(fa)
	maps.Copy(names, fb)
	rep := &Report{A: a, B: b, Identical: true}
	for _, n := range slices.Sorted(maps.Keys(names)) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ad := Artifact{Name: n}
		pa, pb := filepath.Join(a, filepath.FromSlash(n)), filepath.Join(b, filepath.FromSlash(n))
		if fa[n] {
			if ad.SHA256A, ad.SizeA, err = fsutil.SHA256(pa); err != nil {
				return nil, err
			}
		}
		if fb[n] {
			if ad.SHA256B, ad.SizeB, err = fsutil.SHA256(pb); err != nil {
				return nil, err
			}
		}
		switch {
		case !fa[n]:
			ad.Status = "missing_in_a"
		case !fb[n]:
			ad.Status = "missing_in_b"
		case ad.SHA256A == ad.SHA256B:
			ad.Status = "same"
		default:
			ad.Status = "different"
			base := filepath.Base(n)
			switch {
			case base == imagedir.Initrd || strings.HasSuffix(base, ".cpio.gz") || strings.HasSuffix(base, ".cpio"):
				ad.Initrd, err = diffInitrd(pa, pb)
				if err != nil {
					ad.Note = "initrd not comparable: " + err.Error()
				}
			case base == imagedir.Disk || strings.HasSuffix(base, ".raw"):
				ad.Disk, err = diffDisk(ctx, a, b, pa, pb)
				if err != nil {
					ad.Note = "disk not comparable: " + err.Error()
				}
			}
		}
		if ad.Status != "same" {
			rep.Identical = false
		}
		rep.Artifacts = append(rep.Artifacts, ad)
	}
	return rep, nil
}

func readInitrd(p string) ([]initramfs.Entry, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return initramfs.Read(f)
}

func diffInitrd(pa, pb string) ([]InitrdEntry, error) {
	ea, err := readInitrd(pa)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pa, err)
	}
	eb, err := readInitrd(pb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pb, err)
	}
	type idx struct {
		e   initramfs.Entry
		pos int
	}
	ma, mb := map[string]idx{}, map[string]idx{}
	var names []string
	for i, e := range ea {
		ma[e.Name] = idx{e, i}
		names = append(names, e.Name)
	}
	for i, e := range eb {
		if _, ok := ma[e.Name]; !ok {
			names = append(names, e.Name)
		}
		mb[e.Name] = idx{e, i}
	}
	slices.Sort(names)
	// Positions and inode numbers shift when entries are added or removed;
	// compare them only when both archives hold the same names.
	sameSet := len(names) == len(ea) && len(ea) == len(eb)
	var out []InitrdEntry
	for _, n := range names {
		x, okA := ma[n]
		y, okB := mb[n]
		switch {
		case !okA:
			out = append(out, InitrdEntry{Name: n, Status: "missing_in_a"})
			continue
		case !okB:
			out = append(out, InitrdEntry{Name: n, Status: "missing_in_b"})
			continue
		}
		var f []string
		for _, c := range []struct {
			field   string
			differs bool
		}{
			{"content", x.e.SHA256 != y.e.SHA256},
			{"mode", x.e.Mode != y.e.Mode},
			{"mtime", x.e.MTime != y.e.MTime},
			{"size", x.e.Size != y.e.Size},
			{"uid", x.e.UID != y.e.UID},
			{"gid", x.e.GID != y.e.GID},
			{"rdev", x.e.Rmajor != y.e.Rmajor || x.e.Rminor != y.e.Rminor},
			{"target", x.e.Target != y.e.Target},
			{"inode", sameSet && (x.e.Ino != y.e.Ino || x.e.NLink != y.e.NLink)},
			{"order", sameSet && x.pos != y.pos},
		} {
			if c.differs {
				f = append(f, c.field)
			}
		}
		if len(f) > 0 {
			out = append(out, InitrdEntry{Name: n, Status: "different", Fields: f})
		}
	}
	return out, nil
}

// readLayout reads dir/payloads.json (an object with "partitions" or a bare
// array) without gptdisk.ReadLayout's strict checks, so that the outputs of
// older builders compare too; a missing file yields nil.
func readLayout(dir string) (map[uint64]gptdisk.Partition, error) {
	b, err := os.ReadFile(filepath.Join(dir, imagedir.Payloads))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var parts []gptdisk.Partition
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '[' {
		err = json.Unmarshal(t, &parts)
	} else {
		var l gptdisk.Layout
		err = json.Unmarshal(t, &l)
		parts = l.Partitions
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, imagedir.Payloads), err)
	}
	m := map[uint64]gptdisk.Partition{}
	for _, p := range parts {
		m[p.StartLBA] = p
	}
	return m, nil
}

const sector = 512

// area is a named byte range of the disk used to classify differences.
type area struct {
	start, end int64 // disk offsets
	part       int   // index into Disk.Partitions, -1 for other
	base       int64 // offset origin for reports
	name       string
}

func diffDisk(ctx context.Context, dirA, dirB, pa, pb string) (*Disk, error) {
	fa, err := os.Open(pa)
	if err != nil {
		return nil, err
	}
	defer fa.Close()
	fb, err := os.Open(pb)
	if err != nil {
		return nil, err
	}
	defer fb.Close()
	sa, _ := fa.Seek(0, io.SeekEnd)
	sb, _ := fb.Seek(0, io.SeekEnd)
	d := &Disk{SizeA: sa, SizeB: sb}
	ga, errA := gptread.Read(fa, pa, sector)
	gb, errB := gptread.Read(fb, pb, sector)
	if err := cmp.Or(errA, errB); err != nil {
		return nil, err // names the disk
	}
	la, err := readLayout(dirA)
	if err != nil {
		return nil, err
	}
	lb, err := readLayout(dirB)
	if err != nil {
		return nil, err
	}
	if ga.DiskGUID != gb.DiskGUID {
		d.GPT = append(d.GPT, Field{"disk_guid", ga.DiskGUID, gb.DiskGUID})
	}
	if len(ga.Partitions) != len(gb.Partitions) {
		d.GPT = append(d.GPT, Field{"partition_count", fmt.Sprint(len(ga.Partitions)), fmt.Sprint(len(gb.Partitions))})
	}
	pb2 := map[int]gptread.Partition{}
	for _, p := range gb.Partitions {
		pb2[p.Index] = p
	}
	common := min(sa, sb)
	var areas []area
	areas = append(areas, area{0, 34 * sector, -1, 0, "primary GPT"})
	if common > 33*sector {
		areas = append(areas, area{common - 33*sector, common, -1, 0, "backup GPT"})
	}
	type extract struct {
		part   int
		startA int64
		lenA   int64
		startB int64
		lenB   int64
	}
	var extracts []extract
	for _, p := range ga.Partitions {
		q, ok := pb2[p.Index]
		pre := fmt.Sprintf("partition %d ", p.Index)
		if !ok {
			d.GPT = append(d.GPT, Field{pre + "present", "yes", "no"})
			continue
		}
		for _, c := range []Field{{"type", p.TypeGUID, q.TypeGUID}, {"guid", p.GUID, q.GUID}, {"name", p.Name, q.Name},
			{"first_lba", fmt.Sprint(p.FirstLBA), fmt.Sprint(q.FirstLBA)}, {"last_lba", fmt.Sprint(p.LastLBA), fmt.Sprint(q.LastLBA)},
			{"attributes", fmt.Sprint(p.Attributes), fmt.Sprint(q.Attributes)}} {
			if c.A != c.B {
				d.GPT = append(d.GPT, Field{pre + c.Field, c.A, c.B})
			}
		}
		pd := Partition{Index: p.Index, Name: p.Name, Status: "same"}
		idx := len(d.Partitions)
		d.Partitions = append(d.Partitions, pd)
		start := int64(p.FirstLBA) * sector
		end := (int64(p.LastLBA) + 1) * sector
		l, hasLayout := la[p.FirstLBA]
		if hasLayout && l.Name != "" {
			d.Partitions[idx].Name = l.Name
		}
		lB, hasLayoutB := lb[q.FirstLBA]
		if hasLayout && l.DataSize > 0 && l.HashOffset >= l.DataSize {
			areas = append(areas,
				area{start, start + int64(l.DataSize), idx, start, "filesystem"},
				area{start + int64(l.DataSize), start + int64(l.HashOffset), idx, start, "padding"},
				area{start + int64(l.HashOffset), end, idx, start, "verity hash"})
		} else {
			areas = append(areas, area{start, end, idx, start, "partition"})
		}
		if p.FirstLBA == q.FirstLBA && p.LastLBA == q.LastLBA {
			ex := extract{part: idx, startA: start, lenA: end - start, startB: start, lenB: end - start}
			if hasLayout {
				ex.lenA = int64(l.DataSize)
			}
			if hasLayoutB {
				ex.lenB = int64(lB.DataSize)
			}
			extracts = append(extracts, ex)
		}
	}
	slices.SortStableFunc(areas, func(x, y area) int { return cmp.Compare(x.start, y.start) })
	if sa != sb {
		d.Note = fmt.Sprintf("disk sizes differ (%d vs %d bytes); compared the first %d bytes", sa, sb, common)
	}
	if err := compareRegions(ctx, fa, fb, common, areas, d); err != nil {
		return nil, err
	}
	// Name differing files of differing filesystems.
	for _, ex := range extracts {
		pd := &d.Partitions[ex.part]
		fsDiff := false
		for _, r := range pd.Regions {
			if r.Area == "filesystem" || r.Area == "partition" {
				fsDiff = true
			}
		}
		if !fsDiff && pd.MoreRegions == 0 {
			continue
		}
		files, note := diffErofs(ctx, fa, fb, ex.startA, ex.lenA, ex.startB, ex.lenB)
		pd.Files, pd.FilesNote = files, note
	}
	return d, nil
}

// compareRegions finds differing byte runs in [0, n) and files them under
// the areas (split at area boundaries).
func compareRegions(ctx context.Context, fa, fb *os.File, n int64, areas []area, d *Disk) error {
	const chunk = 1 << 20
	ba, bb := make([]byte, chunk), make([]byte, chunk)
	runStart := int64(-1)
	var ai int
	// areaAt returns the area holding off (-1 for none) and the offset where
	// that classification ends; offsets only increase between calls.
	areaAt := func(off int64) (int, int64) {
		for ai < len(areas) && areas[ai].end <= off {
			ai++
		}
		if ai < len(areas) && areas[ai].start <= off {
			return ai, areas[ai].end
		}
		if ai < len(areas) {
			return -1, areas[ai].start
		}
		return -1, n
	}
	emit := func(s, e int64) {
		for s < e {
			i, next := areaAt(s)
			stop := min(e, next)
			if i < 0 {
				addRegion(&d.Other, nil, Region{Offset: s, Length: stop - s, Area: "unpartitioned"})
			} else {
				a := areas[i]
				if a.part < 0 {
					addRegion(&d.Other, nil, Region{Offset: s, Length: stop - s, Area: a.name})
				} else {
					p := &d.Partitions[a.part]
					p.Status = "different"
					p.DifferentBytes += stop - s
					addRegion(&p.Regions, &p.MoreRegions, Region{Offset: s - a.base, Length: stop - s, Area: a.name})
				}
			}
			s = stop
		}
	}
	for off := int64(0); off < n; off += chunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		m := int(min(chunk, n-off))
		if _, err := fa.ReadAt(ba[:m], off); err != nil && err != io.EOF {
			return err
		}
		if _, err := fb.ReadAt(bb[:m], off); err != nil && err != io.EOF {
			return err
		}
		if bytes.Equal(ba[:m], bb[:m]) {
			if runStart >= 0 {
				emit(runStart, off)
				runStart = -1
			}
			continue
		}
		for i := 0; i < m; i++ {
			if ba[i] != bb[i] {
				if runStart < 0 {
					runStart = off + int64(i)
				}
			} else if runStart >= 0 {
				emit(runStart, off+int64(i))
				runStart = -1
			}
		}
	}
	if runStart >= 0 {
		emit(runStart, n)
	}
	return nil
}

// addRegion appends r, merging it with the previous region when they touch
// in the same area (or are within 512 bytes), and caps the list.
func addRegion(list *[]Region, more *int, r Region) {
	if k := len(*list); k > 0 {
		last := &(*list)[k-1]
		if last.Area == r.Area && r.Offset-(last.Offset+last.Length) <= 512 && r.Offset >= last.Offset {
			last.Length = r.Offset + r.Length - last.Offset
			return
		}
	}
	if len(*list) >= maxRegions {
		if more != nil {
			*more++
		}
		return
	}
	*list = append(*list, r)
}

// diffErofs extracts both filesystem areas with fsck.erofs and names the
// files that differ.
func diffErofs(ctx context.Context, fa, fb *os.File, startA, lenA, startB, lenB int64) ([]File, string) {
	if _, err := exec.LookPath("fsck.erofs"); err != nil {
		return nil, "fsck.erofs not installed (apt-get install erofs-utils) so files are not named"
	}
	tmp, err := os.MkdirTemp("", "tdforge-diff-")
	if err != nil {
		return nil, err.Error()
	}
	defer os.RemoveAll(tmp)
	extract := func(f *os.File, start, n int64, tag string) (string, error) {
		img := filepath.Join(tmp, tag+".erofs")
		out, err := os.Create(img)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(out, io.NewSectionReader(f, start, n))
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return "", err
		}
		dir := filepath.Join(tmp, tag)
		cmd := exec.CommandContext(ctx, "fsck.erofs", "--extract="+dir, "--preserve-perms", "--no-preserve-owner", img)
		if o, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("fsck.erofs on side %s: %v: %s", strings.ToUpper(tag), err, strings.TrimSpace(string(o)))
		}
		os.Remove(img)
		return dir, nil
	}
	da, err := extract(fa, startA, lenA, "a")
	if err != nil {
		return nil, err.Error()
	}
	db, err := extract(fb, startB, lenB, "b")
	if err != nil {
		return nil, err.Error()
	}
	files, err := diffTrees(da, db)
	if err != nil {
		return nil, err.Error()
	}
	if len(files) == 0 {
		return nil, "file contents identical; the difference is in filesystem metadata"
	}
	return files, ""
}

type treeNode struct {
	mode   fs.FileMode
	sha    string
	target string
}

func scanTree(root string) (map[string]treeNode, error) {
	out := map[string]treeNode{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n := treeNode{mode: fi.Mode()}
		switch {
		case fi.Mode().IsRegular():
			if n.sha, _, err = fsutil.SHA256(p); err != nil {
				return err
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			if n.target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		out[filepath.ToSlash(rel)] = n
		return nil
	})
	return out, err
}

func diffTrees(a, b string) ([]File, error) {
	ta, err := scanTree(a)
	if err != nil {
		return nil, err
	}
	tb, err := scanTree(b)
	if err != nil {
		return nil, err
	}
	var names []string
	for n := range ta {
		names = append(names, n)
	}
	for n := range tb {
		if _, ok := ta[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	var out []File
	for _, n := range names {
		x, okA := ta[n]
		y, okB := tb[n]
		var c string
		switch {
		case !okA:
			c = "missing_in_a"
		case !okB:
			c = "missing_in_b"
		case x.mode.Type() != y.mode.Type():
			c = "type"
		case x.sha != y.sha:
			c = "content"
		case x.target != y.target:
			c = "target"
		case x.mode != y.mode:
			c = "mode"
		default:
			continue
		}
		out = append(out, File{Path: n, Change: c})
	}
	return out, nil
}

// WriteJSON writes r as indented JSON (`builder diff --json`).
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes r for people: one line per artifact, then what differs
// inside it, and a last line "identical" or "different".
func (r *Report) WriteText(w io.Writer) {
	for _, a := range r.Artifacts {
		fmt.Fprintf(w, "%-10s %s\n", strings.ReplaceAll(a.Status, "_", " "), a.Name)
		if a.Status == "different" {
			fmt.Fprintf(w, "    A: %d bytes sha256 %s\n    B: %d bytes sha256 %s\n", a.SizeA, a.SHA256A, a.SizeB, a.SHA256B)
		}
		for _, e := range a.Initrd {
			if e.Status == "different" {
				fmt.Fprintf(w, "    entry %s: %s differ\n", e.Name, strings.Join(e.Fields, ", "))
			} else {
				fmt.Fprintf(w, "    entry %s: %s\n", e.Name, strings.ReplaceAll(e.Status, "_", " "))
			}
		}
		if d := a.Disk; d != nil {
			if d.Note != "" {
				fmt.Fprintf(w, "    %s\n", d.Note)
			}
			for _, g := range d.GPT {
				fmt.Fprintf(w, "    GPT %s: %s -> %s\n", g.Field, g.A, g.B)
			}
			for _, o := range d.Other {
				fmt.Fprintf(w, "    %s: %d bytes at disk offset %d\n", o.Area, o.Length, o.Offset)
			}
			for _, p := range d.Partitions {
				if p.Status == "same" {
					fmt.Fprintf(w, "    partition %d (%s): same\n", p.Index, p.Name)
					continue
				}
				fmt.Fprintf(w, "    partition %d (%s): %d bytes differ\n", p.Index, p.Name, p.DifferentBytes)
				for _, rg := range p.Regions {
					fmt.Fprintf(w, "      %s: offset %d, %d bytes\n", rg.Area, rg.Offset, rg.Length)
				}
				if p.MoreRegions > 0 {
					fmt.Fprintf(w, "      ... %d more regions\n", p.MoreRegions)
				}
				for _, f := range p.Files {
					fmt.Fprintf(w, "      file %s: %s\n", f.Path, strings.ReplaceAll(f.Change, "_", " "))
				}
				if p.FilesNote != "" {
					fmt.Fprintf(w, "      (%s)\n", p.FilesNote)
				}
			}
		}
		if a.Note != "" {
			fmt.Fprintf(w, "    (%s)\n", a.Note)
		}
	}
	if r.Identical {
		fmt.Fprintln(w, "identical")
	} else {
		fmt.Fprintln(w, "different")
	}
}
