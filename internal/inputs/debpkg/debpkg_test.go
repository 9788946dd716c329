package debpkg

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/testutil/testdeps"
)

func ovmfDeb(t *testing.T) string { return testdeps.OVMFDeb(t) }

func kernelDeb(t *testing.T) string { return testdeps.Kernel61Deb(t) }

// dpkgExtract extracts one file with dpkg-deb + tar, as an independent check.
func dpkgExtract(t *testing.T, deb, p string) []byte {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-x", deb, dir).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, p))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestOVMFDeb(t *testing.T) {
	deb := ovmfDeb(t)
	es, err := List(deb)
	if err != nil {
		t.Fatal(err)
	}
	byPath := map[string]Entry{}
	for _, e := range es {
		if strings.HasPrefix(e.Path, ".") || strings.HasPrefix(e.Path, "/") {
			t.Fatalf("unclean path %q", e.Path)
		}
		byPath[e.Path] = e
	}
	fd := byPath["usr/share/ovmf/OVMF.fd"]
	if fd.Type != tar.TypeReg || fd.Size != 2097152 {
		t.Fatalf("OVMF.fd entry %+v", fd)
	}
	if l := byPath["usr/share/OVMF/OVMF_CODE.ms.fd"]; l.Type != tar.TypeSymlink || l.Linkname != "OVMF_CODE.secboot.fd" {
		t.Fatalf("symlink entry %+v", l)
	}
	var buf bytes.Buffer
	n, err := ExtractFile(deb, "./usr/share/ovmf/OVMF.fd", &buf)
	if err != nil || n != 2097152 {
		t.Fatal(n, err)
	}
	if want := dpkgExtract(t, deb, "usr/share/ovmf/OVMF.fd"); sum(want) != sum(buf.Bytes()) {
		t.Fatal("OVMF.fd differs from dpkg-deb's extraction")
	}
	// Through a symlink.
	viaLink, err := ReadFile(deb, "usr/share/OVMF/OVMF_CODE.ms.fd")
	if err != nil {
		t.Fatal(err)
	}
	direct, err := ReadFile(deb, "usr/share/OVMF/OVMF_CODE.secboot.fd")
	if err != nil || !bytes.Equal(viaLink, direct) || len(direct) != 1966080 {
		t.Fatal("symlink extraction differs", err)
	}
	if _, err := ReadFile(deb, "usr/share/ovmf/nope.fd"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("want ErrNotFound, got %v", err)
	}
	dest := t.TempDir()
	cnt, err := ExtractTree(deb, "usr/share/OVMF", dest)
	if err != nil || cnt != 12 {
		t.Fatal(cnt, err)
	}
	if tgt, err := os.Readlink(filepath.Join(dest, "OVMF_CODE.ms.fd")); err != nil || tgt != "OVMF_CODE.secboot.fd" {
		t.Fatal(tgt, err)
	}
}

func TestKernelDebVmlinuz(t *testing.T) {
	deb := kernelDeb(t)
	var buf bytes.Buffer
	if _, err := ExtractFile(deb, "boot/vmlinuz-6.1.0-56-cloud-amd64", &buf); err != nil {
		t.Fatal(err)
	}
	// bzImage: "HdrS" at 0x202.
	if buf.Len() != 14184960 || string(buf.Bytes()[0x202:0x206]) != "HdrS" {
		t.Fatalf("vmlinuz: %d bytes", buf.Len())
	}
}

// buildDeb makes a package with dpkg-deb using the given compressor.
func buildDeb(t *testing.T, comp string) string {
	t.Helper()
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "DEBIAN"), 0o755))
	must(os.WriteFile(filepath.Join(root, "DEBIAN/control"), []byte("Package: tdf-test\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: test\n"), 0o644))
	must(os.MkdirAll(filepath.Join(root, "opt/app/bin"), 0o755))
	must(os.WriteFile(filepath.Join(root, "opt/app/bin/tool"), []byte("#!/bin/sh\necho hi\n"), 0o755))
	must(os.WriteFile(filepath.Join(root, "opt/app/data.txt"), []byte("data"), 0o644))
	must(os.Link(filepath.Join(root, "opt/app/data.txt"), filepath.Join(root, "opt/app/hard.txt")))
	must(os.Symlink("bin/tool", filepath.Join(root, "opt/app/tool")))
	must(os.Symlink("app", filepath.Join(root, "opt/current")))
	out := filepath.Join(t.TempDir(), "p.deb")
	if o, err := exec.Command("dpkg-deb", "--root-owner-group", "-Z"+comp, "--build", root, out).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v\n%s", err, o)
	}
	return out
}

func TestCompressionsAndLinks(t *testing.T) {
	for _, comp := range []string{"xz", "gzip", "zstd", "none"} {
		t.Run(comp, func(t *testing.T) {
			deb := buildDeb(t, comp)
			es, err := List(deb)
			if err != nil {
				t.Fatal(err)
			}
			types := map[string]byte{}
			for _, e := range es {
				types[e.Path] = e.Type
			}
			if types["opt/app/tool"] != tar.TypeSymlink || types["opt/app/bin/tool"] != tar.TypeReg {
				t.Fatalf("types %v", types)
			}
			if types["opt/app/hard.txt"] != tar.TypeLink && types["opt/app/data.txt"] != tar.TypeLink {
				t.Fatalf("no hardlink recorded: %v", types)
			}
			for _, p := range []string{"opt/app/hard.txt", "opt/app/data.txt", "opt/current/hard.txt"} {
				b, err := ReadFile(deb, p)
				if err != nil || string(b) != "data" {
					t.Fatalf("%s: %q %v", p, b, err)
				}
			}
			b, err := ReadFile(deb, "/opt/current/tool") // parent symlink + symlink
			if err != nil || !strings.Contains(string(b), "echo hi") {
				t.Fatalf("%q %v", b, err)
			}
			dest := t.TempDir()
			if _, err := ExtractTree(deb, "opt/app", dest); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(filepath.Join(dest, "bin/tool"))
			if err != nil || fi.Mode().Perm() != 0o755 {
				t.Fatal(fi, err)
			}
			h1, _ := os.Stat(filepath.Join(dest, "hard.txt"))
			h2, _ := os.Stat(filepath.Join(dest, "data.txt"))
			if !os.SameFile(h1, h2) {
				t.Fatal("hardlink not preserved")
			}
			if tgt, _ := os.Readlink(filepath.Join(dest, "tool")); tgt != "bin/tool" {
				t.Fatal("symlink", tgt)
			}
		})
	}
}

func TestNotADeb(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.deb")
	os.WriteFile(p, []byte("hello"), 0o644)
	if _, err := List(p); err == nil || !strings.Contains(err.Error(), "not a Debian package") {
		t.Fatal(err)
	}
}
