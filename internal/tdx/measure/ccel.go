package measure

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// ccelLogArea is the log area size the simulated firmware reserves; the log
// is padded to a multiple of it with 0xFF, as OVMF leaves it.
const ccelLogArea = 64 << 10

// CCELAddress is the log area address the simulated CCEL table reports.
// The simulator hands the log over fw_cfg, so the address is nominal.
const CCELAddress = 0x7f000000

// EncodeCCEL renders firmware events as a TCG crypto-agile SHA-384 event log
// (Spec ID Event03 header, CC MR index numbering) padded with 0xFF, plus the
// 56-byte CCEL ACPI table describing it. Events with an unknown digest are
// refused.
func EncodeCCEL(events []LogEvent) (table, log []byte, err error) {
	var b bytes.Buffer
	le := func(v any) { binary.Write(&b, binary.LittleEndian, v) }
	// Spec ID Event03 in the SHA-1 TCG_PCR_EVENT format.
	var spec bytes.Buffer
	spec.WriteString("Spec ID Event03\x00")
	binary.Write(&spec, binary.LittleEndian, uint32(0)) // platform class
	spec.Write([]byte{0, 2, 0, 2})                      // version 2.0, errata 0, uintn size 2 (64-bit)
	binary.Write(&spec, binary.LittleEndian, uint32(1))
	binary.Write(&spec, binary.LittleEndian, uint16(algSHA384))
	binary.Write(&spec, binary.LittleEndian, uint16(48))
	spec.WriteByte(0) // vendor info size
	le(uint32(0))
	le(uint32(evNoAction))
	b.Write(make([]byte, 20))
	le(uint32(spec.Len()))
	b.Write(spec.Bytes())
	for i, e := range events {
		if e.Digest == nil {
			return nil, nil, fmt.Errorf("CCEL: event %d (%s) has an unknown digest", i, e.Description)
		}
		if e.Register < 0 || e.Register > 3 {
			return nil, nil, fmt.Errorf("CCEL: event %d targets RTMR%d", i, e.Register)
		}
		le(uint32(e.Register + 1)) // CC MR index: RTMRn = n+1
		le(e.Type)
		le(uint32(1))
		le(uint16(algSHA384))
		b.Write(e.Digest[:])
		le(uint32(len(e.Data)))
		b.Write(e.Data)
	}
	n := (b.Len() + ccelLogArea - 1) / ccelLogArea * ccelLogArea
	log = append(b.Bytes(), bytes.Repeat([]byte{0xff}, n-b.Len())...)

	table = make([]byte, 56)
	copy(table[0:], "CCEL")
	binary.LittleEndian.PutUint32(table[4:], 56)
	table[8] = 1 // revision
	copy(table[10:], "TDFRGE")
	copy(table[16:], "TDFRGSIM")
	binary.LittleEndian.PutUint32(table[24:], 1)
	copy(table[28:], "TDFG")
	binary.LittleEndian.PutUint32(table[32:], 1)
	table[36] = 2 // CC type TDX
	binary.LittleEndian.PutUint64(table[40:], uint64(len(log)))
	binary.LittleEndian.PutUint64(table[48:], CCELAddress)
	var sum byte
	for _, c := range table {
		sum += c
	}
	table[9] = -sum
	return table, log, nil
}

// CCEL encodes the result's RTMR0..2 firmware events; every one of those
// registers must be known.
func (r *Result) CCEL() (table, log []byte, err error) {
	for i := 0; i < 3; i++ {
		if r.RTMR[i] == nil {
			return nil, nil, fmt.Errorf("CCEL: RTMR%d is unknown: %s", i, r.Reasons[regName(i+1)])
		}
	}
	if len(r.FirmwareEvents) == 0 {
		return nil, nil, errors.New("CCEL: no firmware events")
	}
	return EncodeCCEL(r.FirmwareEvents)
}
