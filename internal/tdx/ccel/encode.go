package ccel

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/google/go-eventlog/tcg"
)

// LogArea is the log area size the simulated firmware reserves; Encode pads
// the log to a multiple of it with 0xFF, as OVMF leaves it.
const LogArea = 64 << 10

// Address is the log area address the simulated CCEL table reports. The
// simulator hands the log over fw_cfg, so the address is nominal.
const Address = 0x7f000000

// TableSize is the size of the CCEL ACPI table.
const TableSize = 56

// CCTypeTDX is the table's CC type of Intel TDX.
const CCTypeTDX = 2

// algSHA384 is the TCG algorithm ID of SHA-384.
const algSHA384 = 0x000c

// Encode renders firmware events as a TCG crypto-agile SHA-384 event log
// (Spec ID Event03 header, CC MR index numbering) padded with 0xFF, plus the
// CCEL ACPI table describing it. Events with an unknown digest or outside
// RTMR0..3 are refused.
func Encode(events []Event) (table, log []byte, err error) {
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
	le(uint32(tcg.NoAction))
	b.Write(make([]byte, 20))
	le(uint32(spec.Len()))
	b.Write(spec.Bytes())
	for i, e := range events {
		if e.Digest == nil {
			return nil, nil, fmt.Errorf("CCEL: event %d (%s) has an unknown digest", i, e.Description)
		}
		if !e.Register.IsRTMR() {
			return nil, nil, fmt.Errorf("CCEL: event %d targets %s", i, e.Register)
		}
		le(e.Register.CCMRIndex())
		le(uint32(e.Type))
		le(uint32(1))
		le(uint16(algSHA384))
		b.Write(e.Digest[:])
		le(uint32(len(e.Data)))
		b.Write(e.Data)
	}
	n := (b.Len() + LogArea - 1) / LogArea * LogArea
	log = append(b.Bytes(), bytes.Repeat([]byte{0xff}, n-b.Len())...)

	table = make([]byte, TableSize)
	copy(table[0:], "CCEL")
	binary.LittleEndian.PutUint32(table[4:], TableSize)
	table[8] = 1 // revision
	copy(table[10:], "TDFRGE")
	copy(table[16:], "TDFRGSIM")
	binary.LittleEndian.PutUint32(table[24:], 1)
	copy(table[28:], "TDFG")
	binary.LittleEndian.PutUint32(table[32:], 1)
	table[36] = CCTypeTDX
	binary.LittleEndian.PutUint64(table[40:], uint64(len(log)))
	binary.LittleEndian.PutUint64(table[48:], Address)
	var sum byte
	for _, c := range table {
		sum += c
	}
	table[9] = -sum
	return table, log, nil
}
