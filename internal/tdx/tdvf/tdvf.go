// Package tdvf parses the TDX metadata of a TDVF (OVMF) firmware image and
// computes the MRTD the TDX module builds from it.
package tdvf

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
)

// GUIDs in on-disk (mixed-endian) byte order.
var (
	// footerGUID ends the OVMF GUIDed table: 96b582de-1fb2-45f7-baea-a366c55a082d.
	footerGUID = GUID(0x96b582de, 0x1fb2, 0x45f7, [8]byte{0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d})
	// metadataOffsetGUID marks the table entry holding the descriptor offset:
	// e47a6535-984a-4798-865e-4685a7bf8ec2.
	metadataOffsetGUID = GUID(0xe47a6535, 0x984a, 0x4798, [8]byte{0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2})
	// descriptorGUID stands just before the descriptor:
	// e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae.
	descriptorGUID = GUID(0xe9eaf9f3, 0x168e, 0x44d5, [8]byte{0xa8, 0xeb, 0x7f, 0x4d, 0x87, 0x38, 0xf6, 0xae})
)

// GUID returns the EFI GUID {a-b-c-d} in on-disk (mixed-endian) byte order.
func GUID(a uint32, b, c uint16, d [8]byte) []byte {
	g := make([]byte, 16)
	binary.LittleEndian.PutUint32(g[0:], a)
	binary.LittleEndian.PutUint16(g[4:], b)
	binary.LittleEndian.PutUint16(g[6:], c)
	copy(g[8:], d[:])
	return g
}

// SectionType is a TDVF metadata section type.
type SectionType uint32

// Section types defined by the TDVF specification.
const (
	BFV          SectionType = 0
	CFV          SectionType = 1
	TDHOB        SectionType = 2
	TempMem      SectionType = 3
	PermMem      SectionType = 4
	Payload      SectionType = 5
	PayloadParam SectionType = 6
)

func (t SectionType) String() string {
	switch t {
	case BFV:
		return "BFV"
	case CFV:
		return "CFV"
	case TDHOB:
		return "TD_HOB"
	case TempMem:
		return "TempMem"
	case PermMem:
		return "PermMem"
	case Payload:
		return "Payload"
	case PayloadParam:
		return "PayloadParam"
	}
	return fmt.Sprintf("type-%d", uint32(t))
}

// Section attribute bits.
const (
	AttrMRExtend = 1 << 0 // MR.EXTEND: the section's bytes are measured into MRTD
	AttrPageAug  = 1 << 1 // PAGE.AUG: pages are added after boot, not measured
)

// PageSize is the TDX page granularity.
const PageSize = 4096

// maxSections bounds the descriptor; real images have fewer than 10.
const maxSections = 64

// maxMeasured bounds the memory a section may describe (16 GiB), so hostile
// metadata cannot make MRTD loop for hours.
const maxMeasured = 16 << 30

// Section is one TDVF metadata section.
type Section struct {
	DataOffset     uint32      `json:"data_offset"`
	RawDataSize    uint32      `json:"raw_data_size"`
	MemoryAddress  uint64      `json:"memory_address"`
	MemoryDataSize uint64      `json:"memory_data_size"`
	Type           SectionType `json:"type"`
	Attributes     uint32      `json:"attributes"`
}

// MRExtend reports whether the section's content is extended into MRTD.
func (s Section) MRExtend() bool { return s.Attributes&AttrMRExtend != 0 }

// PageAug reports whether the section's pages are added after boot.
func (s Section) PageAug() bool { return s.Attributes&AttrPageAug != 0 }

func (s Section) String() string {
	return fmt.Sprintf("%s gpa=%#x size=%#x file[%#x+%#x] attr=%#x", s.Type, s.MemoryAddress, s.MemoryDataSize, s.DataOffset, s.RawDataSize, s.Attributes)
}

// Metadata is the parsed TDVF descriptor.
type Metadata struct {
	Version  uint32
	Sections []Section
	size     int // firmware file size
}

// ErrNoMetadata means the image carries no TDX metadata at all.
var ErrNoMetadata = errors.New("tdvf: firmware has no TDX metadata: not a TDVF/OVMF image built with TDX support, or truncated (pass the unified OVMF.fd)")

// guidTable walks the OVMF GUIDed table at the end of the image and returns
// the data of the entry with the given GUID.
func guidTable(fw []byte, want []byte) ([]byte, error) {
	if len(fw) < 64 {
		return nil, fmt.Errorf("tdvf: firmware is %d bytes, too small to be a TDVF image (truncated?)", len(fw))
	}
	end := len(fw) - 32
	if !bytes.Equal(fw[end-16:end], footerGUID) {
		return nil, ErrNoMetadata
	}
	tableLen := int(binary.LittleEndian.Uint16(fw[end-18 : end-16]))
	start := end - tableLen
	if tableLen < 18 || start < 0 {
		return nil, fmt.Errorf("tdvf: GUIDed table length %d is invalid", tableLen)
	}
	p := end - 18
	for p > start {
		if p-18 < start {
			return nil, errors.New("tdvf: GUIDed table entry overruns the table")
		}
		g := fw[p-16 : p]
		l := int(binary.LittleEndian.Uint16(fw[p-18 : p-16]))
		if l < 18 || p-l < start {
			return nil, fmt.Errorf("tdvf: GUIDed table entry length %d is invalid", l)
		}
		if bytes.Equal(g, want) {
			return fw[p-l : p-18], nil
		}
		p -= l
	}
	return nil, ErrNoMetadata
}

// Parse reads and checks the TDVF metadata of a firmware image. Sections
// that point outside the file (a split OVMF_CODE.fd) and truncated images are
// refused.
func Parse(fw []byte) (*Metadata, error) {
	data, err := guidTable(fw, metadataOffsetGUID)
	if err != nil {
		return nil, err
	}
	if len(data) < 4 {
		return nil, errors.New("tdvf: TDX metadata offset entry is shorter than 4 bytes")
	}
	fromEnd := int64(binary.LittleEndian.Uint32(data[len(data)-4:]))
	off := int64(len(fw)) - fromEnd
	if fromEnd <= 0 || off < 16 || off+16 > int64(len(fw)) {
		return nil, fmt.Errorf("tdvf: TDX metadata offset %#x (from the end) points outside the %d-byte firmware", fromEnd, len(fw))
	}
	if !bytes.Equal(fw[off-16:off], descriptorGUID) {
		return nil, errors.New("tdvf: TDX metadata descriptor GUID is missing")
	}
	d := fw[off:]
	if string(d[0:4]) != "TDVF" {
		return nil, fmt.Errorf("tdvf: TDX metadata signature is %q, want \"TDVF\"", d[0:4])
	}
	length := binary.LittleEndian.Uint32(d[4:8])
	version := binary.LittleEndian.Uint32(d[8:12])
	count := binary.LittleEndian.Uint32(d[12:16])
	if version != 1 {
		return nil, fmt.Errorf("tdvf: TDX metadata version %d is not supported (want 1)", version)
	}
	if count == 0 || count > maxSections {
		return nil, fmt.Errorf("tdvf: TDX metadata has %d sections (want 1..%d)", count, maxSections)
	}
	if uint64(length) != 16+32*uint64(count) || int64(length) > int64(len(d)) {
		return nil, fmt.Errorf("tdvf: TDX metadata length %d does not fit %d sections in the %d bytes left", length, count, len(d))
	}
	m := &Metadata{Version: version, size: len(fw)}
	for i := uint32(0); i < count; i++ {
		b := d[16+32*i:]
		s := Section{
			DataOffset:     binary.LittleEndian.Uint32(b[0:]),
			RawDataSize:    binary.LittleEndian.Uint32(b[4:]),
			MemoryAddress:  binary.LittleEndian.Uint64(b[8:]),
			MemoryDataSize: binary.LittleEndian.Uint64(b[16:]),
			Type:           SectionType(binary.LittleEndian.Uint32(b[24:])),
			Attributes:     binary.LittleEndian.Uint32(b[28:]),
		}
		if err := checkSection(int(i), s, len(fw)); err != nil {
			return nil, err
		}
		m.Sections = append(m.Sections, s)
	}
	if len(m.BySection(TDHOB)) != 1 {
		return nil, fmt.Errorf("tdvf: TDX metadata has %d TD_HOB sections, want exactly 1", len(m.BySection(TDHOB)))
	}
	if len(m.BySection(BFV)) == 0 {
		return nil, errors.New("tdvf: TDX metadata has no BFV section")
	}
	return m, nil
}

func checkSection(i int, s Section, fwSize int) error {
	name := fmt.Sprintf("tdvf: section %d (%s)", i, s.Type)
	if s.Type > PayloadParam {
		return fmt.Errorf("%s: unknown section type %d", name, uint32(s.Type))
	}
	if s.MemoryAddress%PageSize != 0 || s.MemoryDataSize%PageSize != 0 {
		return fmt.Errorf("%s: memory address %#x and size %#x must be 4 KiB aligned", name, s.MemoryAddress, s.MemoryDataSize)
	}
	if s.MemoryDataSize == 0 || s.MemoryDataSize > maxMeasured {
		return fmt.Errorf("%s: memory size %#x is out of range", name, s.MemoryDataSize)
	}
	if s.MemoryAddress+s.MemoryDataSize < s.MemoryAddress {
		return fmt.Errorf("%s: memory range wraps around", name)
	}
	if uint64(s.RawDataSize) > s.MemoryDataSize {
		return fmt.Errorf("%s: raw data size %#x exceeds memory size %#x", name, s.RawDataSize, s.MemoryDataSize)
	}
	switch s.Type {
	case BFV, CFV:
		if s.RawDataSize == 0 {
			return fmt.Errorf("%s: firmware volume section has no data", name)
		}
		// QEMU copies MemoryDataSize bytes from DataOffset.
		if uint64(s.DataOffset)+s.MemoryDataSize > uint64(fwSize) {
			return fmt.Errorf("%s: data [%#x, %#x) lies outside the %d-byte firmware file; this looks like a split OVMF_CODE.fd or a truncated image: pass the unified OVMF.fd (QEMU-TDX loads one image with -bios)",
				name, s.DataOffset, uint64(s.DataOffset)+s.MemoryDataSize, fwSize)
		}
	case TDHOB, TempMem, PermMem:
		if s.RawDataSize != 0 || s.MRExtend() {
			return fmt.Errorf("%s: memory-only section must have no data and no MR.EXTEND", name)
		}
	}
	if s.MRExtend() && uint64(s.DataOffset)+s.MemoryDataSize > uint64(fwSize) {
		return fmt.Errorf("%s: measured data lies outside the %d-byte firmware file", name, fwSize)
	}
	return nil
}

// BySection returns the sections of type t in metadata order.
func (m *Metadata) BySection(t SectionType) []Section {
	var out []Section
	for _, s := range m.Sections {
		if s.Type == t {
			out = append(out, s)
		}
	}
	return out
}

// TDHOB returns the TD HOB section (Parse guarantees exactly one).
func (m *Metadata) TDHOB() Section { return m.BySection(TDHOB)[0] }

// CFVBytes returns the raw bytes of the (first) CFV section, which the
// firmware measures into RTMR0.
func (m *Metadata) CFVBytes(fw []byte) ([]byte, error) {
	if len(fw) != m.size {
		return nil, errors.New("tdvf: firmware differs from the parsed image")
	}
	cfv := m.BySection(CFV)
	if len(cfv) == 0 {
		return nil, errors.New("tdvf: firmware has no CFV section")
	}
	s := cfv[0]
	return fw[s.DataOffset : uint64(s.DataOffset)+uint64(s.RawDataSize)], nil
}

// Order is the order in which the VMM adds and measures TDVF pages.
type Order int

// Page-add orders found in the wild; they yield different MRTDs.
const (
	// Interleaved: each page's PAGE.ADD then that page's MR.EXTENDs (QEMU >= 9).
	Interleaved Order = iota
	// TwoPass: all PAGE.ADDs of a section, then all its MR.EXTENDs (older TDX QEMU).
	TwoPass
)

func (o Order) String() string {
	if o == TwoPass {
		return "two-pass"
	}
	return "interleaved"
}

// ParseOrder parses "interleaved" or "two-pass".
func ParseOrder(s string) (Order, error) {
	switch s {
	case "interleaved":
		return Interleaved, nil
	case "two-pass":
		return TwoPass, nil
	}
	return 0, fmt.Errorf("page-add order %q is unknown (want interleaved or two-pass)", s)
}

// MRTD parses fw and returns the MRTD the TDX module computes for it.
func MRTD(fw []byte, order Order) ([48]byte, error) {
	m, err := Parse(fw)
	if err != nil {
		return [48]byte{}, err
	}
	return m.MRTD(fw, order)
}

// MRTD computes the measurement of fw under this metadata.
func (m *Metadata) MRTD(fw []byte, order Order) ([48]byte, error) {
	var out [48]byte
	if len(fw) != m.size {
		return out, errors.New("tdvf: firmware differs from the parsed image")
	}
	if order != Interleaved && order != TwoPass {
		return out, fmt.Errorf("tdvf: unknown page-add order %d", order)
	}
	h := sha512.New384()
	var blk [128]byte
	for _, s := range m.Sections {
		pages := s.MemoryDataSize / PageSize
		if order == TwoPass {
			if !s.PageAug() {
				for p := uint64(0); p < pages; p++ {
					pageAdd(h, &blk, s.MemoryAddress+p*PageSize)
				}
			}
			if s.MRExtend() {
				for p := uint64(0); p < pages; p++ {
					extendPage(h, &blk, fw, s, p)
				}
			}
			continue
		}
		for p := uint64(0); p < pages; p++ {
			if !s.PageAug() {
				pageAdd(h, &blk, s.MemoryAddress+p*PageSize)
			}
			if s.MRExtend() {
				extendPage(h, &blk, fw, s, p)
			}
		}
	}
	copy(out[:], h.Sum(nil))
	return out, nil
}

func pageAdd(h hash.Hash, blk *[128]byte, gpa uint64) {
	*blk = [128]byte{}
	copy(blk[:], "MEM.PAGE.ADD")
	binary.LittleEndian.PutUint64(blk[16:], gpa)
	h.Write(blk[:])
}

func extendPage(h hash.Hash, blk *[128]byte, fw []byte, s Section, page uint64) {
	base := uint64(s.DataOffset) + page*PageSize
	for c := uint64(0); c < PageSize; c += 256 {
		*blk = [128]byte{}
		copy(blk[:], "MR.EXTEND")
		binary.LittleEndian.PutUint64(blk[16:], s.MemoryAddress+page*PageSize+c)
		h.Write(blk[:])
		h.Write(fw[base+c : base+c+256])
	}
}
