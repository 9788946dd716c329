// Package explain replays a TD's event logs against the registers of its
// quote and compares registers and events with a reference-values document,
// naming the first differing event (and its component) of every register.
//
// The firmware log (CCEL, TCG crypto-agile SHA-384) covers RTMR0..2 and is
// replayed with go-eventlog's tcg package; the runtime log (a TCG canonical
// event log of tdforge events, see internal/event) covers RTMR3.
package explain

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"

	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
)

// Status of one comparison.
type Status string

// Statuses.
const (
	Pass    Status = "PASS"
	Fail    Status = "FAIL"
	Skipped Status = "SKIPPED"
)

// Quote holds the measurement registers read from a quote, in
// refvalues.RegisterNames order (MRTD, RTMR0..3).
type Quote [5][48]byte

// LogEvent is one measured event from the firmware or runtime log.
type LogEvent struct {
	Register    string `json:"register"` // "rtmr0".."rtmr3"
	Index       int    `json:"index"`    // position among this register's events
	Type        string `json:"type"`
	Description string `json:"description"`
	Digest      string `json:"digest"`            // SHA-384 extended, hex
	Content     string `json:"content,omitempty"` // alg:hex content digest (runtime events)
}

// Mismatch names the first event of a register that differs from the
// reference. Expected or Got is "missing" when one side has no such event.
type Mismatch struct {
	Register    string `json:"register"` // "RTMR0".."RTMR3"
	EventIndex  int    `json:"event_index"`
	Description string `json:"description"`
	Component   string `json:"component,omitempty"`
	Expected    string `json:"expected"`
	Got         string `json:"got"`
}

// String renders e.g. `RTMR3: event 2 "payload:model" (payload:model)
// expected sha256:ab12… got sha256:cd34…`.
func (m Mismatch) String() string {
	comp := ""
	if m.Component != "" && m.Component != m.Description {
		comp = " (" + m.Component + ")"
	}
	return fmt.Sprintf("%s: event %d %q%s expected %s got %s", m.Register, m.EventIndex, m.Description, comp, short(m.Expected), short(m.Got))
}

// short abbreviates "alg:hex" digests to 8 hex digits for people.
func short(s string) string {
	alg, h, ok := strings.Cut(s, ":")
	if !ok || len(h) <= 12 {
		return s
	}
	return alg + ":" + h[:8] + "…"
}

// RegisterState compares one register across quote, reference and log.
type RegisterState struct {
	Name      string `json:"name"`                // "mrtd", "rtmr0".."rtmr3"
	Quote     string `json:"quote"`               // hex
	Reference string `json:"reference,omitempty"` // hex; empty when the reference leaves it open
	Reason    string `json:"reason,omitempty"`    // why the reference leaves it open
	Replayed  string `json:"replayed,omitempty"`  // hex value the event log replays to
	Match     Status `json:"match"`               // quote vs reference
}

// Result is the register's comparison (quote against reference) as one
// named outcome, e.g. "RTMR1 FAIL ...": the only comparison of a register
// with its reference value (verify reports it as is).
func (s RegisterState) Result() Result {
	name := strings.ToUpper(s.Name)
	switch s.Match {
	case Pass:
		return Result{name, Pass, "matches the reference " + abbrev(s.Reference)}
	case Fail:
		return Result{name, Fail, fmt.Sprintf("the quote's %s is %s, the reference expects %s", name, s.Quote, s.Reference)}
	}
	return Result{name, Skipped, "reference value is null: " + s.Reason}
}

func abbrev(h string) string {
	if len(h) <= 16 {
		return h
	}
	return h[:16] + "…"
}

// Result is one named comparison outcome.
type Result struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Reason string `json:"reason"`
}

// Analysis is the register and event diff of one piece of evidence.
type Analysis struct {
	Registers  []RegisterState `json:"registers"`
	Results    []Result        `json:"results"` // log replays and per-register event comparisons
	Mismatches []Mismatch      `json:"mismatches,omitempty"`
	Events     []LogEvent      `json:"events,omitempty"` // every measured event, in log order per register
	// InputErr is set when a log could not be parsed at all.
	InputErr error `json:"-"`
}

// Failed reports whether any comparison failed.
func (a *Analysis) Failed() bool {
	for _, r := range a.Results {
		if r.Status == Fail {
			return true
		}
	}
	for _, r := range a.Registers {
		if r.Match == Fail {
			return true
		}
	}
	return false
}

// Analyze replays the logs against the quote's registers and compares
// registers and events with ref. ccel, table and runtimeLog may be empty
// (the corresponding comparisons are then SKIPPED).
func Analyze(ref *refvalues.Document, q Quote, ccel, table, runtimeLog []byte) *Analysis {
	a := &Analysis{}
	var fw []LogEvent
	var fwErr error
	haveFW := len(ccel) > 0
	if haveFW {
		fw, fwErr = ReplayCCEL(table, ccel, q)
		if fw == nil && fwErr != nil {
			a.InputErr = fwErr
		}
	}
	var rt []LogEvent
	var rtErr error
	haveRT := len(runtimeLog) > 0
	if haveRT {
		rt, rtErr = ReplayRuntime(runtimeLog, q[4])
		if rt == nil && rtErr != nil {
			a.InputErr = rtErr
		}
	}
	replayed := map[string][]LogEvent{}
	for _, e := range fw {
		replayed[e.Register] = append(replayed[e.Register], e)
	}
	for _, e := range rt {
		replayed[e.Register] = append(replayed[e.Register], e)
	}
	a.Events = append(append(a.Events, fw...), rt...)

	for i, name := range refvalues.RegisterNames {
		st := RegisterState{Name: name, Quote: hex.EncodeToString(q[i][:]), Match: Skipped}
		if i > 0 && (i < 4 && fw != nil || i == 4 && rt != nil) {
			v := ReplayValue(replayed[name])
			st.Replayed = hex.EncodeToString(v[:])
		}
		switch {
		case ref == nil:
			st.Reason = "no reference values"
		case ref.Registers.Get(name) == nil:
			st.Reason = ref.Reasons[name]
			if st.Reason == "" {
				st.Reason = "the reference document leaves this register open and gives no reason"
			}
		default:
			st.Reference = *ref.Registers.Get(name)
			st.Match = Pass
			if !strings.EqualFold(st.Reference, st.Quote) {
				st.Match = Fail
			}
		}
		a.Registers = append(a.Registers, st)
	}

	// Log replay results.
	switch {
	case !haveFW:
		a.Results = append(a.Results, Result{"CCEL replay (RTMR0..2)", Skipped, "no firmware event log (CCEL) supplied"})
	case fwErr != nil:
		a.Results = append(a.Results, Result{"CCEL replay (RTMR0..2)", Fail, fwErr.Error()})
	default:
		a.Results = append(a.Results, Result{"CCEL replay (RTMR0..2)", Pass, fmt.Sprintf("%d events replay to the quote's RTMR0..2", len(fw))})
	}
	switch {
	case !haveRT:
		a.Results = append(a.Results, Result{"runtime log replay (RTMR3)", Skipped, "no runtime event log supplied"})
	case rtErr != nil:
		a.Results = append(a.Results, Result{"runtime log replay (RTMR3)", Fail, rtErr.Error()})
	default:
		a.Results = append(a.Results, Result{"runtime log replay (RTMR3)", Pass, fmt.Sprintf("%d events replay to the quote's RTMR3", len(rt))})
	}

	// Event comparisons.
	for i, name := range refvalues.RegisterNames[1:] {
		label := "events " + strings.ToUpper(name)
		haveLog := i < 3 && fw != nil || i == 3 && rt != nil
		var want []refvalues.Event
		if ref != nil {
			want = ref.Events[name]
		}
		switch {
		case ref == nil || len(want) == 0:
			a.Results = append(a.Results, Result{label, Skipped, "the reference lists no events for " + strings.ToUpper(name)})
		case !haveLog:
			a.Results = append(a.Results, Result{label, Skipped, "no parsable event log for " + strings.ToUpper(name) + " supplied"})
		default:
			if m := Compare(name, want, replayed[name]); m != nil {
				a.Mismatches = append(a.Mismatches, *m)
				a.Results = append(a.Results, Result{label, Fail, m.String()})
			} else {
				a.Results = append(a.Results, Result{label, Pass, fmt.Sprintf("%d events match the reference", len(want))})
			}
		}
	}
	return a
}

// Compare returns the first event of register name (e.g. "rtmr3") where got
// differs from want, or nil when both lists are identical.
func Compare(name string, want []refvalues.Event, got []LogEvent) *Mismatch {
	reg := strings.ToUpper(name)
	n := max(len(want), len(got))
	for i := 0; i < n; i++ {
		switch {
		case i >= len(got):
			w := want[i]
			return &Mismatch{Register: reg, EventIndex: i, Description: w.Description, Component: w.Component, Expected: expectedString(w), Got: "missing"}
		case i >= len(want):
			g := got[i]
			return &Mismatch{Register: reg, EventIndex: i, Description: g.Description, Expected: "missing", Got: gotString(g, "")}
		case !strings.EqualFold(want[i].Digest, got[i].Digest):
			w, g := want[i], got[i]
			desc := w.Description
			if desc == "" {
				desc = g.Description
			}
			exp, got := expectedString(w), gotString(g, w.Content)
			if exp == got || (g.Description != "" && w.Description != "" && g.Description != w.Description) {
				// Same content, different event (e.g. payload-failed:model
				// instead of payload:model): name both events.
				exp, got = w.Description+" "+exp, g.Description+" "+got
			}
			return &Mismatch{Register: reg, EventIndex: i, Description: desc, Component: w.Component, Expected: exp, Got: got}
		}
	}
	return nil
}

func expectedString(w refvalues.Event) string {
	if w.Content != "" {
		return w.Content
	}
	return "sha384:" + strings.ToLower(w.Digest)
}

// gotString renders the observed event like the expected one: as a content
// digest when the reference used one and the event has one.
func gotString(g LogEvent, wantContent string) string {
	if g.Content != "" && (wantContent != "" || g.Register == "rtmr3") {
		return g.Content
	}
	return "sha384:" + g.Digest
}

// ReplayValue extends a zero register with each event's digest in order.
func ReplayValue(events []LogEvent) [48]byte {
	var reg [48]byte
	for _, e := range events {
		var d [48]byte
		b, _ := hex.DecodeString(e.Digest)
		copy(d[:], b)
		reg = event.Extend(reg, d)
	}
	return reg
}

// CCEL table layout (ACPI "CCEL", 56 bytes).
const (
	ccelTableLen = 56
	ccTypeTDX    = 2
)

// CheckCCELTable validates the 56-byte CCEL ACPI table: signature, length,
// checksum and the TDX CC type.
func CheckCCELTable(table []byte) error {
	if len(table) < ccelTableLen {
		return fmt.Errorf("CCEL ACPI table: %d bytes, want %d", len(table), ccelTableLen)
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
	if table[36] != ccTypeTDX {
		return fmt.Errorf("CCEL ACPI table: CC type %d, want %d (TDX)", table[36], ccTypeTDX)
	}
	return nil
}

// ParseCCEL parses a firmware event log without trusting it: the returned
// events (RTMR0..2, EV_NO_ACTION skipped) are what the log claims.
func ParseCCEL(raw []byte) ([]LogEvent, *tcg.EventLog, error) {
	el, err := tcg.ParseEventLog(raw, tcg.ParseOpts{AllowPadding: true})
	if err != nil {
		return nil, nil, fmt.Errorf("firmware event log (CCEL): %w", err)
	}
	hasSHA384 := false
	for _, a := range el.Algs {
		if a == register.HashSHA384 {
			hasSHA384 = true
		}
	}
	if !hasSHA384 {
		return nil, nil, errors.New("firmware event log (CCEL): no SHA-384 digests (not a TDX CCEL)")
	}
	var out []LogEvent
	counts := map[int]int{}
	for _, e := range el.Events(register.HashSHA384) {
		if e.Type == tcg.NoAction {
			continue
		}
		// CC MR index: 1..3 = RTMR0..2. MRTD (0) is not extended by events
		// and RTMR3 (4) belongs to the runtime log.
		if e.Index < 1 || e.Index > 3 {
			continue
		}
		if len(e.Digest) != sha512.Size384 {
			return nil, nil, fmt.Errorf("firmware event log (CCEL): event of %s has no SHA-384 digest", rtmrName(e.Index-1))
		}
		name := fmt.Sprintf("rtmr%d", e.Index-1)
		out = append(out, LogEvent{
			Register: name, Index: counts[e.Index], Type: e.Type.TCGString(),
			Description: describe(e.Type, e.Data), Digest: hex.EncodeToString(e.Digest),
		})
		counts[e.Index]++
	}
	return out, el, nil
}

func rtmrName(i int) string { return fmt.Sprintf("RTMR%d", i) }

// ReplayCCEL parses the CCEL (checking table when given), replays it with
// go-eventlog against the quote's RTMR0..2 and also checks that every
// register without events is zero. It returns the parsed events even when
// the replay fails (nil only when the log cannot be parsed).
func ReplayCCEL(table, raw []byte, q Quote) (events []LogEvent, err error) {
	// The log is untrusted input for third-party parsers: a crash is a
	// failed replay, never a crashed verifier.
	defer func() {
		if p := recover(); p != nil {
			events, err = nil, fmt.Errorf("malformed CCEL: the parser failed (%v)", p)
		}
	}()
	if len(table) > 0 {
		if err := CheckCCELTable(table); err != nil {
			return nil, err
		}
	}
	events, el, perr := ParseCCEL(raw)
	err = perr
	if err != nil {
		return nil, err
	}
	bank := register.RTMRBank{}
	for i := 0; i < 3; i++ {
		bank.RTMRs = append(bank.RTMRs, register.RTMR{Index: i, Digest: q[i+1][:]})
	}
	var bad []string
	if _, err := el.Verify(bank.MRs()); err != nil {
		var re tcg.ReplayError
		if errors.As(err, &re) {
			for _, mr := range re.InvalidMRs {
				bad = append(bad, rtmrName(mr-1))
			}
		} else {
			return events, fmt.Errorf("firmware event log (CCEL) does not replay: %v", err)
		}
	}
	by := map[string][]LogEvent{}
	for _, e := range events {
		by[e.Register] = append(by[e.Register], e)
	}
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("rtmr%d", i)
		if v := ReplayValue(by[name]); v != q[i+1] && !contains(bad, rtmrName(i)) {
			bad = append(bad, rtmrName(i))
		}
	}
	if len(bad) > 0 {
		return events, fmt.Errorf("firmware event log (CCEL) does not replay to the quote's %s: the log was altered or belongs to another boot", strings.Join(sorted(bad), ", "))
	}
	return events, nil
}

// ReplayRuntime parses the RTMR3 runtime log (TCG CEL) and replays it
// against the quote's RTMR3. Events are returned whenever the log parses.
func ReplayRuntime(raw []byte, rtmr3 [48]byte) ([]LogEvent, error) {
	l, err := event.ParseLog(raw)
	if err != nil {
		return nil, err
	}
	evs := l.Events()
	out := make([]LogEvent, 0, len(evs))
	for i, e := range evs {
		m, err := e.Measurement()
		if err != nil {
			return nil, fmt.Errorf("runtime event log: event %d: %w", i, err)
		}
		out = append(out, LogEvent{
			Register: "rtmr3", Index: i, Type: "tdforge-runtime-v1", Description: e.Label(),
			Digest: hex.EncodeToString(m[:]), Content: e.DigestString(),
		})
	}
	if err := l.Replay(rtmr3[:]); err != nil {
		return out, fmt.Errorf("runtime event log does not replay to the quote's RTMR3 (%d events): the log was altered or belongs to another boot", len(out))
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sorted(list []string) []string {
	out := append([]string(nil), list...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// describe renders an event for people: its type and, when the data is
// short printable text (ASCII or UTF-16LE), that text.
func describe(t tcg.EventType, data []byte) string {
	name := t.TCGString()
	if s := printable(data); s != "" {
		return name + " " + strings.TrimSpace(s)
	}
	return name
}

func printable(b []byte) string {
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 || len(b) > 128 {
		return ""
	}
	ok := true
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			ok = false
			break
		}
	}
	if ok {
		return string(b)
	}
	// UTF-16LE text (e.g. variable names, command lines).
	if len(b)%2 == 1 {
		b = append(b, 0)
	}
	var sb strings.Builder
	for i := 0; i+1 < len(b); i += 2 {
		r := rune(binary.LittleEndian.Uint16(b[i:]))
		if b[i+1] != 0 || !unicode.IsPrint(r) {
			return ""
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

// WriteText prints the register table and the event diff.
func (a *Analysis) WriteText(w io.Writer) error {
	var b strings.Builder
	b.WriteString("Registers:\n")
	for _, r := range a.Registers {
		ref := r.Reference
		if ref == "" {
			ref = "(open: " + r.Reason + ")"
		}
		fmt.Fprintf(&b, "  %-6s %-7s quote     %s\n", strings.ToUpper(r.Name), r.Match, r.Quote)
		fmt.Fprintf(&b, "  %-6s %-7s reference %s\n", "", "", ref)
		if r.Replayed != "" && r.Replayed != r.Quote {
			fmt.Fprintf(&b, "  %-6s %-7s log       %s\n", "", "", r.Replayed)
		}
	}
	b.WriteString("Event logs:\n")
	for _, r := range a.Results {
		fmt.Fprintf(&b, "  %-28s %-7s %s\n", r.Name, r.Status, r.Reason)
	}
	if len(a.Mismatches) > 0 {
		b.WriteString("First differing event per register:\n")
		for _, m := range a.Mismatches {
			fmt.Fprintf(&b, "  %s\n", m)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
