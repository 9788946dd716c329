package authenticode

import (
	"bytes"
	"crypto/sha512"
	"debug/pe"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/testutil/testdeps"
)

// simpleDigest is a second implementation on top of the standard library's
// debug/pe parser, following the Authenticode specification's prose.
func simpleDigest(t *testing.T, img []byte) [48]byte {
	f, err := pe.NewFile(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	peOff := int(binary.LittleEndian.Uint32(img[0x3c:]))
	opt := peOff + 4 + 20
	var sizeOfHeaders, certOff, certSize uint32
	var dirs []pe.DataDirectory
	switch oh := f.OptionalHeader.(type) {
	case *pe.OptionalHeader64:
		sizeOfHeaders, dirs = oh.SizeOfHeaders, oh.DataDirectory[:oh.NumberOfRvaAndSizes]
		certOff = uint32(opt + 112 + 4*8)
	case *pe.OptionalHeader32:
		sizeOfHeaders, dirs = oh.SizeOfHeaders, oh.DataDirectory[:oh.NumberOfRvaAndSizes]
		certOff = uint32(opt + 96 + 4*8)
	}
	if len(dirs) > 4 {
		certSize = dirs[4].Size
	}
	checksum := uint32(opt + 64)
	var buf []byte
	buf = append(buf, img[:checksum]...)
	buf = append(buf, img[checksum+4:certOff]...)
	buf = append(buf, img[certOff+8:sizeOfHeaders]...)
	secs := append([]*pe.Section(nil), f.Sections...)
	sort.Slice(secs, func(i, j int) bool { return secs[i].Offset < secs[j].Offset })
	sum := sizeOfHeaders
	for _, s := range secs {
		if s.Size == 0 {
			continue
		}
		buf = append(buf, img[s.Offset:s.Offset+s.Size]...)
		sum += s.Size
	}
	if uint32(len(img)) > sum+certSize {
		buf = append(buf, img[sum:uint32(len(img))-certSize]...)
	}
	return sha512.Sum384(buf)
}

func TestDebianKernel(t *testing.T) {
	k := testdeps.Vmlinuz(t)
	d, err := Digest(k)
	if err != nil {
		t.Fatal(err)
	}
	if want := simpleDigest(t, k); d != want {
		t.Fatalf("Authenticode %x, debug/pe implementation %x", d, want)
	}
	t.Logf("Debian kernel Authenticode SHA-384: %x", d)

	t.Run("osslsigncode", func(t *testing.T) {
		if _, err := exec.LookPath("osslsigncode"); err != nil {
			t.Skip("osslsigncode is not installed; the debug/pe cross-check above still ran")
		}
		dir := t.TempDir()
		key, cert := filepath.Join(dir, "k.pem"), filepath.Join(dir, "c.pem")
		if out, err := exec.Command("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-subj", "/CN=tdforge-test", "-days", "1").CombinedOutput(); err != nil {
			t.Fatalf("openssl: %v %s", err, out)
		}
		in, signed := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "signed.efi")
		if err := os.WriteFile(in, k, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("osslsigncode", "sign", "-h", "sha384", "-certs", cert, "-key", key, "-in", in, "-out", signed).CombinedOutput(); err != nil {
			t.Fatalf("osslsigncode sign: %v %s", err, out)
		}
		out, _ := exec.Command("osslsigncode", "verify", "-in", signed).CombinedOutput() // self-signed: verify "fails", digests still print
		m := regexp.MustCompile(`Calculated message digest\s*:\s*([0-9A-Fa-f]{96})`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("no calculated digest in osslsigncode output:\n%s", out)
		}
		if got := strings.ToLower(string(m[1])); got != hex.EncodeToString(d[:]) {
			t.Errorf("osslsigncode %s, ours %x", got, d)
		}
		sb, err := os.ReadFile(signed)
		if err != nil {
			t.Fatal(err)
		}
		ds, err := Digest(sb)
		if err != nil {
			t.Fatal(err)
		}
		if ds != d {
			t.Errorf("signed copy digest %x differs from unsigned %x: the certificate table must be excluded", ds, d)
		}
	})
}

func TestNonPE(t *testing.T) {
	elf, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"elf": elf, "empty": nil, "text": []byte("not a kernel at all, just text that is long enough to pass the size check......")} {
		if _, err := Digest(b); !errors.Is(err, ErrNotPE) {
			t.Errorf("%s: %v, want ErrNotPE", name, err)
		}
	}
	k := testdeps.Vmlinuz(t)
	if _, err := Digest(k[:len(k)/2]); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Errorf("truncated kernel: %v", err)
	}
}

func TestQEMUSetupPatch(t *testing.T) {
	k := testdeps.Vmlinuz(t)
	const initrd = 12345678
	p, err := PatchQEMUSetupHeader(k, QEMUBoot{BelowFourG: BelowFourG(2 << 30), InitrdSize: initrd, Cmdline: "console=ttyS0"})
	if err != nil {
		t.Fatal(err)
	}
	// Debian's kernel: protocol 2.15 with XLF_CAN_BE_LOADED_ABOVE_4G, so
	// QEMU caps initrd_max at below_4g - acpi_data_size - 1.
	initrdMax := uint32(0x80000000 - 0x28000 - 1)
	for _, c := range []struct {
		off  int
		size int
		want uint32
	}{
		{0x210, 1, 0xb0},
		{0x211, 1, uint32(k[0x211] | 0x80)},
		{0x224, 2, 0xfe00},
		{0x228, 4, 0x20000},
		{0x218, 4, (initrdMax - initrd) &^ 4095},
		{0x21c, 4, initrd},
	} {
		var got uint32
		switch c.size {
		case 1:
			got = uint32(p[c.off])
		case 2:
			got = uint32(binary.LittleEndian.Uint16(p[c.off:]))
		case 4:
			got = binary.LittleEndian.Uint32(p[c.off:])
		}
		if got != c.want {
			t.Errorf("setup header %#x = %#x, want %#x", c.off, got, c.want)
		}
	}
	diff := 0
	for i := range k {
		if k[i] != p[i] {
			diff++
			if i < 0x1fa || i >= 0x230 {
				t.Errorf("byte %#x changed outside the setup header fields", i)
			}
		}
	}
	if diff == 0 {
		t.Fatal("patch changed nothing")
	}
	a, _ := Digest(k)
	b, _ := Digest(p)
	if a == b {
		t.Error("patched and unpatched kernels must measure differently")
	}
	if _, err := PatchQEMUSetupHeader(k, QEMUBoot{BelowFourG: BelowFourG(256 << 20), InitrdSize: 300 << 20}); err == nil || !strings.Contains(err.Error(), "initrd") {
		t.Errorf("oversized initrd: %v", err)
	}
	if _, err := PatchQEMUSetupHeader([]byte("MZ short"), QEMUBoot{BelowFourG: 1 << 30}); err == nil {
		t.Error("short kernel accepted")
	}
	if v, err := vgaMode("0x317 quiet"); err != nil || v != 0x317 {
		t.Errorf("vga=0x317: %v %v", v, err)
	}
	if BelowFourG(4<<30) != 0x80000000 || BelowFourG(2<<30) != 2<<30 {
		t.Error("q35 low-memory split is wrong")
	}
	if l, err := CmdlineLimit(k); err != nil || l != 2047 {
		t.Errorf("cmdline limit %d %v, Debian's kernel says 2047", l, err)
	}
}

// minimalPE builds a small PE32+ image for fuzz seeds.
func minimalPE() []byte {
	b := make([]byte, 0x400)
	copy(b, "MZ")
	binary.LittleEndian.PutUint32(b[0x3c:], 0x40)
	copy(b[0x40:], "PE\x00\x00")
	coff := 0x44
	binary.LittleEndian.PutUint16(b[coff+2:], 1)    // sections
	binary.LittleEndian.PutUint16(b[coff+16:], 240) // optional header size
	opt := coff + 20
	binary.LittleEndian.PutUint16(b[opt:], pe32PlusMagic)
	binary.LittleEndian.PutUint32(b[opt+60:], 0x200) // SizeOfHeaders
	binary.LittleEndian.PutUint32(b[opt+108:], 16)
	sec := opt + 240
	copy(b[sec:], ".text")
	binary.LittleEndian.PutUint32(b[sec+16:], 0x100)
	binary.LittleEndian.PutUint32(b[sec+20:], 0x200)
	return b
}

func FuzzParse(f *testing.F) {
	f.Add(minimalPE())
	f.Add([]byte("MZ"))
	f.Fuzz(func(t *testing.T, b []byte) {
		img, err := Parse(b)
		if err != nil {
			return
		}
		h := sha512.New384()
		img.Hash(b, h) // must not panic on anything Parse accepts
	})
}

func TestMinimalPE(t *testing.T) {
	b := minimalPE()
	d, err := Digest(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := simpleDigest(t, b); d != want {
		t.Errorf("minimal PE %x, debug/pe implementation %x", d, want)
	}
}
