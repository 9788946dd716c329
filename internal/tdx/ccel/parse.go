package ccel

import (
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	evreg "github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"

	"github.com/tdforge/tdforge/internal/tdx/register"
)

// CheckTable validates the CCEL ACPI table: signature, length, checksum and
// the TDX CC type.
func CheckTable(table []byte) error {
	if len(table) < TableSize {
		return fmt.Errorf("CCEL ACPI table: %d bytes, want %d", len(table), TableSize)
	}
	if string(table[:4]) != "CCEL" {
		return fmt.Errorf("CCEL ACPI table: signature %q, want \"CCEL\"", table[:4])
	}
	if l := binary.LittleEndian.Uint32(table[4:8]); int(l) != len(table) {
		return fmt.Errorf("CCEL ACPI table: header length %d but %d bytes supplied", l, len(table))
	}
	var sum byte
	for _, b := range table {
		sum += b
	}
	if sum != 0 {
		return errors.New("CCEL ACPI table: bad checksum")
	}
	if table[36] != CCTypeTDX {
		return fmt.Errorf("CCEL ACPI table: CC type %d, want %d (TDX)", table[36], CCTypeTDX)
	}
	return nil
}

// Parse parses a firmware event log without trusting it: the returned
// events of RTMR0..2 (EV_NO_ACTION skipped; MRTD is not extended by events
// and RTMR3 belongs to the runtime log) are what the log claims, described
// for people. The go-eventlog log is returned for replay.
func Parse(raw []byte) ([]Event, *tcg.EventLog, error) {
	el, err := tcg.ParseEventLog(raw, tcg.ParseOpts{AllowPadding: true})
	if err != nil {
		return nil, nil, fmt.Errorf("firmware event log (CCEL): %w", err)
	}
	if !slices.Contains(el.Algs, evreg.HashSHA384) {
		return nil, nil, errors.New("firmware event log (CCEL): no SHA-384 digests (not a TDX CCEL)")
	}
	var out []Event
	for _, e := range el.Events(evreg.HashSHA384) {
		if e.Type == tcg.NoAction {
			continue
		}
		r, err := register.FromCCMR(e.MRIndex())
		if err != nil || !slices.Contains(register.Firmware, r) {
			continue
		}
		if len(e.Digest) != sha512.Size384 {
			return nil, nil, fmt.Errorf("firmware event log (CCEL): event of %s has no SHA-384 digest", r)
		}
		d := [48]byte(e.Digest)
		out = append(out, Event{
			Register: r, Type: e.Type, Digest: &d, Data: e.Data,
			Description: describe(e.Type, e.Data),
		})
	}
	return out, el, nil
}

// Verify parses the log (checking table when given) and replays it with
// go-eventlog against the quote's RTMR0..2; a register without events must
// be zero. It returns the parsed events even when the replay fails (nil only
// when the log cannot be parsed). A parser crash on the untrusted log is a
// failed replay, never a crashed caller.
func Verify(table, raw []byte, q register.Quote) (events []Event, err error) {
	defer func() {
		if p := recover(); p != nil {
			events, err = nil, fmt.Errorf("malformed CCEL: the parser failed (%v)", p)
		}
	}()
	if len(table) > 0 {
		if err := CheckTable(table); err != nil {
			return nil, err
		}
	}
	events, el, err := Parse(raw)
	if err != nil {
		return nil, err
	}
	bank := evreg.RTMRBank{}
	for _, r := range register.Firmware {
		bank.RTMRs = append(bank.RTMRs, evreg.RTMR{Index: r.RTMRIndex(), Digest: q[r][:]})
	}
	var bad []register.Register
	if _, err := el.Verify(bank.MRs()); err != nil {
		var re tcg.ReplayError
		if !errors.As(err, &re) {
			return events, fmt.Errorf("firmware event log (CCEL) does not replay: %v", err)
		}
		for _, mr := range re.InvalidMRs {
			if r, err := register.FromCCMR(uint32(mr)); err == nil {
				bad = append(bad, r)
			}
		}
	}
	for _, r := range register.Firmware {
		if v, _ := Replay(events, r); v != q[r] && !slices.Contains(bad, r) {
			bad = append(bad, r)
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		names := make([]string, len(bad))
		for i, r := range bad {
			names[i] = r.Name()
		}
		return events, fmt.Errorf("firmware event log (CCEL) does not replay to the quote's %s: the log was altered or belongs to another boot", strings.Join(names, ", "))
	}
	return events, nil
}
