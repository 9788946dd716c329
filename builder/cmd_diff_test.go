package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/image/fstree"
	"github.com/tdforge/tdforge/internal/image/initramfs"
)

func diffTestRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// makeBuildDir writes a synthetic build output: initrd.img, disk.raw (GPT
// with one EROFS + fake verity partition), payloads.json and extra files.
func diffMakeBuildDir(t *testing.T, dir string, files map[string]string, initrdFiles map[string]string, diskGUID string, hashByte byte, extra map[string]string) {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	// initrd
	tr := &fstree.Tree{Epoch: 1}
	for p, c := range initrdFiles {
		tr.Entries = append(tr.Entries, fstree.Entry{Path: p, Type: fstree.File, Mode: 0o644, Data: []byte(c), Size: int64(len(c))})
	}
	var ib bytes.Buffer
	if err := initramfs.Write(&ib, tr); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "initrd.img"), ib.Bytes(), 0o644)

	// EROFS filesystem
	src := t.TempDir()
	for p, c := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755)
		os.WriteFile(filepath.Join(src, p), []byte(c), 0o644)
	}
	img := filepath.Join(t.TempDir(), "fs.erofs")
	diffTestRun(t, "mkfs.erofs", "-T0", "-U", "6b1f4c2e-0000-4000-8000-000000000001", img, src)
	fsb, _ := os.ReadFile(img)
	dataSize := (len(fsb) + 4095) / 4096 * 4096
	hashOffset := dataSize + 4096

	disk := filepath.Join(dir, "disk.raw")
	f, _ := os.Create(disk)
	f.Truncate(8 << 20)
	f.Close()
	diffTestRun(t, "sgdisk", "-U", diskGUID, "-n", "1:2048:+4M", "-c", "1:model", "-u", "1:0e3a5b1c-1111-4222-8333-444455556666", disk)
	f, _ = os.OpenFile(disk, os.O_RDWR, 0)
	f.WriteAt(fsb, 2048*512)
	f.WriteAt(bytes.Repeat([]byte{hashByte}, 4096), 2048*512+int64(hashOffset))
	f.Close()
	layout := map[string]any{"disk_guid": diskGUID, "partitions": []map[string]any{{
		"name": "model", "partition": 1, "start_lba": 2048, "data_size": dataSize, "hash_offset": hashOffset}}}
	lb, _ := json.Marshal(layout)
	os.WriteFile(filepath.Join(dir, "payloads.json"), lb, 0o644)
	for p, c := range extra {
		os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644)
	}
}

func diffFind(rep *diffReport, name string) *artifactDiff {
	for i := range rep.Artifacts {
		if rep.Artifacts[i].Name == name {
			return &rep.Artifacts[i]
		}
	}
	return nil
}

func TestDiffBuildDirs(t *testing.T) {
	root := t.TempDir()
	a, a2, b := filepath.Join(root, "a"), filepath.Join(root, "a2"), filepath.Join(root, "b")
	guid := "11111111-2222-4333-8444-555555555555"
	fsA := map[string]string{"models/blob": strings.Repeat("weights ", 2000), "etc/conf": "x=1\n"}
	initA := map[string]string{"init": "initd v1", "etc/tdforge/policy.json": "{}"}
	diffMakeBuildDir(t, a, fsA, initA, guid, 0xaa, map[string]string{"cmdline.txt": "console=ttyS0", "notes.txt": "only in a"})
	diffMakeBuildDir(t, a2, fsA, initA, guid, 0xaa, map[string]string{"cmdline.txt": "console=ttyS0", "notes.txt": "only in a"})

	ctx := context.Background()
	rep, err := diffDirs(ctx, a, a2)
	if err != nil || !rep.Identical {
		t.Fatalf("identical dirs reported different: %v %+v", err, rep)
	}

	fsB := map[string]string{"models/blob": strings.Repeat("weightz ", 2000), "etc/conf": "x=1\n", "etc/new": "n"}
	initB := map[string]string{"init": "initd v2", "etc/tdforge/policy.json": "{}", "etc/extra": "e"}
	diffMakeBuildDir(t, b, fsB, initB, "99999999-2222-4333-8444-555555555555", 0xbb, map[string]string{"cmdline.txt": "console=ttyS0"})

	rep, err = diffDirs(ctx, a, b)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Identical {
		t.Fatal("different dirs reported identical")
	}
	if s := diffFind(rep, "cmdline.txt").Status; s != "same" {
		t.Errorf("cmdline.txt %s", s)
	}
	if s := diffFind(rep, "notes.txt").Status; s != "missing_in_b" {
		t.Errorf("notes.txt %s", s)
	}
	ir := diffFind(rep, "initrd.img")
	if ir.Status != "different" {
		t.Fatal("initrd same")
	}
	got := map[string]string{}
	for _, e := range ir.Initrd {
		got[e.Name] = e.Status + ":" + strings.Join(e.Fields, ",")
	}
	if got["init"] != "different:content" || len(got) != 2 {
		t.Errorf("init entry: %q (all %v)", got["init"], got)
	}
	if got["etc/extra"] != "missing_in_a:" {
		t.Errorf("etc/extra: %q", got["etc/extra"])
	}

	dk := diffFind(rep, "disk.raw").Disk
	if dk == nil {
		t.Fatalf("no disk detail: %+v", diffFind(rep, "disk.raw"))
	}
	foundGUID := false
	for _, g := range dk.GPT {
		if g.Field == "disk_guid" && g.A == guid {
			foundGUID = true
		}
	}
	if !foundGUID {
		t.Errorf("disk GUID change not reported: %+v", dk.GPT)
	}
	if len(dk.Other) == 0 || dk.Other[0].Area != "primary GPT" {
		t.Errorf("GPT header region not reported: %+v", dk.Other)
	}
	if len(dk.Partitions) != 1 {
		t.Fatalf("partitions %+v", dk.Partitions)
	}
	p := dk.Partitions[0]
	areas := map[string]bool{}
	for _, r := range p.Regions {
		areas[r.Area] = true
	}
	if p.Name != "model" || p.Status != "different" || !areas["filesystem"] || !areas["verity hash"] || areas["padding"] {
		t.Errorf("partition detail %+v", p)
	}
	files := map[string]string{}
	for _, f := range p.Files {
		files[f.Path] = f.Change
	}
	if files["models/blob"] != "content" || files["etc/new"] != "missing_in_a" || len(files) != 2 {
		t.Errorf("files %v (note %q)", files, p.FilesNote)
	}

	// The CLI: exit codes and JSON on stdout.
	var stdout, stderr bytes.Buffer
	code := runDiff(ctx, []string{"--json", a, b}, &stdout, &stderr)
	raw := bytes.Clone(stdout.Bytes())
	codeSame := runDiff(ctx, []string{a, a2}, &stdout, &stderr)
	codeUsage := runDiff(ctx, []string{a}, &stdout, &stderr)
	if code != cli.ExitFail || codeSame != cli.ExitOK || codeUsage != cli.ExitUsage {
		t.Fatalf("exit codes %d %d %d", code, codeSame, codeUsage)
	}
	var back diffReport
	if err := json.NewDecoder(bytes.NewReader(raw)).Decode(&back); err != nil || back.Identical || len(back.Artifacts) != len(rep.Artifacts) {
		t.Fatalf("json output: %v\n%s", err, raw)
	}
	var text bytes.Buffer
	printDiff(&text, rep)
	t.Logf("text report:\n%s", text.String())
	for _, want := range []string{"missing in b notes.txt", "entry init: content", "GPT disk_guid", "verity hash: offset", "file models/blob: content"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text output lacks %q:\n%s", want, text.String())
		}
	}
}
