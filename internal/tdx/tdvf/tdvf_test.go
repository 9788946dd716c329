package tdvf

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func ovmfPath() string {
	if p := os.Getenv("TDFORGE_OVMF"); p != "" {
		return p
	}
	return "/usr/share/ovmf/OVMF.fd"
}

func readOVMF(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(ovmfPath())
	if err != nil {
		t.Fatalf("unified OVMF image needed (set TDFORGE_OVMF or install Debian's ovmf package): %v", err)
	}
	return b
}

// simpleSection and simpleMRTD are a second, deliberately plain reading of
// the facts: find the descriptor by searching for its signature after the
// descriptor GUID, then build the whole hashed byte stream in memory.
type simpleSection struct {
	off, raw   uint32
	gpa, size  uint64
	typ, attrs uint32
}

func simpleParse(t *testing.T, fw []byte) []simpleSection {
	t.Helper()
	// Descriptor GUID e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae in memory order.
	g := []byte{0xf3, 0xf9, 0xea, 0xe9, 0x8e, 0x16, 0xd5, 0x44, 0xa8, 0xeb, 0x7f, 0x4d, 0x87, 0x38, 0xf6, 0xae}
	i := bytes.LastIndex(fw, append(g, "TDVF"...))
	if i < 0 {
		t.Fatal("simple parser: no TDVF descriptor")
	}
	d := fw[i+16:]
	n := binary.LittleEndian.Uint32(d[12:])
	var out []simpleSection
	for k := uint32(0); k < n; k++ {
		e := d[16+32*k:]
		out = append(out, simpleSection{
			binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint32(e[4:]),
			binary.LittleEndian.Uint64(e[8:]), binary.LittleEndian.Uint64(e[16:]),
			binary.LittleEndian.Uint32(e[24:]), binary.LittleEndian.Uint32(e[28:]),
		})
	}
	return out
}

func simpleMRTD(fw []byte, secs []simpleSection, twoPass bool) [48]byte {
	var stream []byte
	add := func(gpa uint64) {
		b := make([]byte, 128)
		copy(b, "MEM.PAGE.ADD")
		binary.LittleEndian.PutUint64(b[16:], gpa)
		stream = append(stream, b...)
	}
	ext := func(gpa uint64, data []byte) {
		for c := 0; c < 4096; c += 256 {
			b := make([]byte, 128)
			copy(b, "MR.EXTEND")
			binary.LittleEndian.PutUint64(b[16:], gpa+uint64(c))
			stream = append(stream, b...)
			stream = append(stream, data[c:c+256]...)
		}
	}
	for _, s := range secs {
		pages := int(s.size / 4096)
		page := func(p int) []byte { return fw[int(s.off)+p*4096 : int(s.off)+(p+1)*4096] }
		if twoPass {
			for p := 0; p < pages && s.attrs&2 == 0; p++ {
				add(s.gpa + uint64(p)*4096)
			}
			for p := 0; p < pages && s.attrs&1 != 0; p++ {
				ext(s.gpa+uint64(p)*4096, page(p))
			}
			continue
		}
		for p := 0; p < pages; p++ {
			if s.attrs&2 == 0 {
				add(s.gpa + uint64(p)*4096)
			}
			if s.attrs&1 != 0 {
				ext(s.gpa+uint64(p)*4096, page(p))
			}
		}
	}
	return sha512.Sum384(stream)
}

func TestMRTDDebianOVMF(t *testing.T) {
	fw := readOVMF(t)
	secs := simpleParse(t, fw)
	m, err := Parse(fw)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Sections) != len(secs) {
		t.Fatalf("parsed %d sections, simple parser %d", len(m.Sections), len(secs))
	}
	for i, s := range m.Sections {
		w := secs[i]
		if s.DataOffset != w.off || s.RawDataSize != w.raw || s.MemoryAddress != w.gpa || s.MemoryDataSize != w.size || uint32(s.Type) != w.typ || s.Attributes != w.attrs {
			t.Errorf("section %d: %v, simple parser %+v", i, s, w)
		}
	}
	inter, err := MRTD(fw, Interleaved)
	if err != nil {
		t.Fatal(err)
	}
	two, err := MRTD(fw, TwoPass)
	if err != nil {
		t.Fatal(err)
	}
	if want := simpleMRTD(fw, secs, false); inter != want {
		t.Errorf("interleaved MRTD %x, simple implementation %x", inter, want)
	}
	if want := simpleMRTD(fw, secs, true); two != want {
		t.Errorf("two-pass MRTD %x, simple implementation %x", two, want)
	}
	if inter == two {
		t.Error("interleaved and two-pass MRTDs must differ for a firmware with measured sections")
	}
	t.Logf("MRTD interleaved %x", inter)
	t.Logf("MRTD two-pass    %x", two)
	if m.TDHOB().MemoryAddress != 0x809000 {
		t.Errorf("TD_HOB at %#x, Debian OVMF puts it at 0x809000", m.TDHOB().MemoryAddress)
	}
	cfv, err := m.CFVBytes(fw)
	if err != nil || len(cfv) == 0 {
		t.Fatalf("CFV: %v", err)
	}
}

func TestRefusesSplitAndTruncatedImages(t *testing.T) {
	for _, tc := range []struct {
		path, want string
	}{
		{"/usr/share/OVMF/OVMF_CODE.fd", "split OVMF_CODE.fd"},
		{"/usr/share/OVMF/OVMF_CODE_4M.fd", "no TDX metadata"},
	} {
		b, err := os.ReadFile(tc.path)
		if err != nil {
			t.Fatalf("%s is installed by Debian's ovmf package: %v", tc.path, err)
		}
		_, err = MRTD(b, Interleaved)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", tc.path, err, tc.want)
		}
	}
	fw := readOVMF(t)
	// Cut from the front: the metadata survives, the sections do not fit.
	if _, err := Parse(fw[1<<20:]); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Errorf("front-truncated image: %v", err)
	}
	// Cut from the end: the GUIDed table is gone.
	if _, err := Parse(fw[:len(fw)-4096]); !errors.Is(err, ErrNoMetadata) {
		t.Errorf("end-truncated image: %v", err)
	}
	if _, err := Parse(fw[:10]); err == nil || !strings.Contains(err.Error(), "too small") {
		t.Errorf("tiny image: %v", err)
	}
	if _, err := ParseOrder("backwards"); err == nil {
		t.Error("unknown order accepted")
	}
}

// buildImage makes a small synthetic TDVF image for unit and fuzz tests.
func buildImage(secs []Section, size int) []byte {
	fw := make([]byte, size)
	for i := range fw[:size/2] {
		fw[i] = byte(i * 7)
	}
	// Descriptor placed at size-0x400.
	desc := size - 0x400
	copy(fw[desc-16:], descriptorGUID)
	copy(fw[desc:], "TDVF")
	binary.LittleEndian.PutUint32(fw[desc+4:], uint32(16+32*len(secs)))
	binary.LittleEndian.PutUint32(fw[desc+8:], 1)
	binary.LittleEndian.PutUint32(fw[desc+12:], uint32(len(secs)))
	for i, s := range secs {
		e := fw[desc+16+32*i:]
		binary.LittleEndian.PutUint32(e, s.DataOffset)
		binary.LittleEndian.PutUint32(e[4:], s.RawDataSize)
		binary.LittleEndian.PutUint64(e[8:], s.MemoryAddress)
		binary.LittleEndian.PutUint64(e[16:], s.MemoryDataSize)
		binary.LittleEndian.PutUint32(e[24:], uint32(s.Type))
		binary.LittleEndian.PutUint32(e[28:], s.Attributes)
	}
	// GUIDed table: [offset u32][len u16][GUID] then [table len u16][footer GUID], ending at size-32.
	end := size - 32
	copy(fw[end-16:], footerGUID)
	entry := end - 18
	copy(fw[entry-16:], metadataOffsetGUID)
	binary.LittleEndian.PutUint16(fw[entry-18:], 22)
	binary.LittleEndian.PutUint32(fw[entry-22:], uint32(size-desc))
	binary.LittleEndian.PutUint16(fw[end-18:], 18+22)
	return fw
}

func syntheticSections() []Section {
	return []Section{
		{DataOffset: 0, RawDataSize: 0x1000, MemoryAddress: 0xfffe0000, MemoryDataSize: 0x1000, Type: CFV},
		{DataOffset: 0x1000, RawDataSize: 0x2000, MemoryAddress: 0xfffe1000, MemoryDataSize: 0x2000, Type: BFV, Attributes: AttrMRExtend},
		{MemoryAddress: 0x809000, MemoryDataSize: 0x2000, Type: TDHOB},
		{MemoryAddress: 0x800000, MemoryDataSize: 0x6000, Type: TempMem},
		{MemoryAddress: 0x900000, MemoryDataSize: 0x1000, Type: TempMem, Attributes: AttrPageAug},
	}
}

func TestSyntheticImage(t *testing.T) {
	fw := buildImage(syntheticSections(), 0x4000)
	m, err := Parse(fw)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Sections) != 5 || m.TDHOB().MemoryAddress != 0x809000 {
		t.Fatalf("sections %v", m.Sections)
	}
	var ss []simpleSection
	for _, s := range m.Sections {
		ss = append(ss, simpleSection{s.DataOffset, s.RawDataSize, s.MemoryAddress, s.MemoryDataSize, uint32(s.Type), s.Attributes})
	}
	for _, o := range []Order{Interleaved, TwoPass} {
		got, err := m.MRTD(fw, o)
		if err != nil {
			t.Fatal(err)
		}
		if want := simpleMRTD(fw, ss, o == TwoPass); got != want {
			t.Errorf("%v: %x want %x", o, got, want)
		}
	}
	// Bad sections.
	bad := syntheticSections()
	bad[1].MemoryAddress = 0xfffe1800
	if _, err := Parse(buildImage(bad, 0x4000)); err == nil || !strings.Contains(err.Error(), "aligned") {
		t.Errorf("unaligned section: %v", err)
	}
	bad = syntheticSections()
	bad[2].Attributes = AttrMRExtend
	if _, err := Parse(buildImage(bad, 0x4000)); err == nil {
		t.Error("measured TD_HOB accepted")
	}
	bad = syntheticSections()[:2]
	if _, err := Parse(buildImage(bad, 0x4000)); err == nil || !strings.Contains(err.Error(), "TD_HOB") {
		t.Errorf("missing TD_HOB: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(buildImage(syntheticSections(), 0x4000))
	f.Add(buildImage(syntheticSections()[:3], 0x3000))
	f.Add(make([]byte, 100))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		// Whatever parses must measure without panicking, and in bounded
		// time for small inputs.
		var measured uint64
		for _, s := range m.Sections {
			measured += s.MemoryDataSize
		}
		if measured > 1<<20 {
			return
		}
		if _, err := m.MRTD(b, Interleaved); err != nil {
			t.Fatalf("parsed image failed to measure: %v", err)
		}
	})
}

// BenchmarkMRTD reports MRTD time relative to the baseline of one plain
// SHA-384 pass over the firmware bytes ("x-sha384-of-image").
func BenchmarkMRTD(b *testing.B) {
	fw := readOVMF(b)
	t0 := time.Now()
	for i := 0; i < 5; i++ {
		sha512.Sum384(fw)
	}
	base := time.Since(t0) / 5
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := MRTD(fw, Interleaved); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if base > 0 {
		b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(base), "x-sha384-of-image")
	}
}

// GUID lays out 96b582de-1fb2-45f7-baea-a366c55a082d as the firmware stores it.
func TestGUID(t *testing.T) {
	got := hex.EncodeToString(GUID(0x96b582de, 0x1fb2, 0x45f7, [8]byte{0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d}))
	if want := "de82b596b21ff745baeaa366c55a082d"; got != want {
		t.Fatalf("GUID = %s, want %s", got, want)
	}
}
