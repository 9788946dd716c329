// Package register names the TDX measurement registers once: MRTD and
// RTMR0..3, numbered by their CC measurement register (CC MR) index as the
// CCEL, the runtime CEL and the quote body order them (MRTD=0, RTMRn=n+1).
//
// A Register knows its name ("RTMR0"), its key in JSON documents ("rtmr0"),
// its RTMR index (0..3, as the kernel and the TDX module number them) and its
// CC MR index (1..4). The package has no dependencies beyond the standard
// library, so guest and host code both import it.
package register

import (
	"crypto/sha512"
	"fmt"
	"strings"
)

// Register is a TDX measurement register; its value is its CC MR index.
type Register uint8

// The registers, in quote order.
const (
	MRTD Register = iota
	RTMR0
	RTMR1
	RTMR2
	RTMR3
)

// All lists every register in quote order; RTMRs lists RTMR0..3.
var (
	All   = []Register{MRTD, RTMR0, RTMR1, RTMR2, RTMR3}
	RTMRs = []Register{RTMR0, RTMR1, RTMR2, RTMR3}
)

// Firmware lists the registers the firmware event log (CCEL) extends.
var Firmware = []Register{RTMR0, RTMR1, RTMR2}

// Size is the size of a register value (SHA-384).
const Size = sha512.Size384

// Value is a register value.
type Value = [Size]byte

// Quote holds the registers of one quote, indexed by Register.
type Quote [5]Value

// FromRTMR returns RTMRi for i in 0..3.
func FromRTMR(i int) (Register, error) {
	if i < 0 || i > 3 {
		return 0, fmt.Errorf("RTMR index %d out of range (RTMR0..RTMR3)", i)
	}
	return Register(i + 1), nil
}

// FromCCMR returns the register with CC MR index i (0..4).
func FromCCMR(i uint32) (Register, error) {
	if i > uint32(RTMR3) {
		return 0, fmt.Errorf("CC MR index %d out of range (MRTD=0, RTMR0..3=1..4)", i)
	}
	return Register(i), nil
}

// Parse accepts a register's name or key, in any case ("RTMR0", "rtmr0").
func Parse(s string) (Register, error) {
	for _, r := range All {
		if strings.EqualFold(s, r.Key()) {
			return r, nil
		}
	}
	return 0, fmt.Errorf("unknown register %q (want mrtd or rtmr0..rtmr3)", s)
}

// Valid reports whether r is one of MRTD, RTMR0..3.
func (r Register) Valid() bool { return r <= RTMR3 }

// IsRTMR reports whether r is one of RTMR0..3.
func (r Register) IsRTMR() bool { return r >= RTMR0 && r <= RTMR3 }

// Name is the register's name for people: "MRTD", "RTMR0".."RTMR3".
func (r Register) Name() string { return strings.ToUpper(r.Key()) }

// String implements fmt.Stringer (the Name).
func (r Register) String() string { return r.Name() }

// Key is the register's key in JSON documents: "mrtd", "rtmr0".."rtmr3".
func (r Register) Key() string {
	switch {
	case r == MRTD:
		return "mrtd"
	case r.IsRTMR():
		return fmt.Sprintf("rtmr%d", r-RTMR0)
	}
	return fmt.Sprintf("register(%d)", uint8(r))
}

// RTMRIndex is the RTMR number 0..3 (-1 for MRTD).
func (r Register) RTMRIndex() int {
	if !r.IsRTMR() {
		return -1
	}
	return int(r - RTMR0)
}

// CCMRIndex is the CC measurement register index: MRTD=0, RTMRn=n+1.
func (r Register) CCMRIndex() uint32 { return uint32(r) }

// MarshalText renders the Key, so a Register reads the same in JSON as the
// string keys of reference-value documents.
func (r Register) MarshalText() ([]byte, error) {
	if !r.Valid() {
		return nil, fmt.Errorf("invalid register %d", uint8(r))
	}
	return []byte(r.Key()), nil
}

// UnmarshalText parses a name or key.
func (r *Register) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// Extend returns SHA384(value || digest), the TDX register extend operation.
func Extend(value, digest Value) Value {
	var buf [2 * Size]byte
	copy(buf[:Size], value[:])
	copy(buf[Size:], digest[:])
	return sha512.Sum384(buf[:])
}

// Replay extends a zero register with each digest in order.
func Replay(digests ...Value) Value {
	var v Value
	for _, d := range digests {
		v = Extend(v, d)
	}
	return v
}
