// Package explain replays a TD's event logs against the registers of its
// quote and compares registers and events with a reference-values document,
// naming the first differing event (and its component) of every register.
//
// The firmware log (CCEL, parsed and replayed by internal/tdx/ccel) covers
// RTMR0..2; the runtime log (a TCG canonical event log of tdforge events, see
// internal/tdx/event) covers RTMR3.
package explain

import (
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"strconv"
	"strings"

	"github.com/tdforge/tdforge/internal/tdx/ccel"
	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/register"
)

// Status of one comparison.
type Status string

// Statuses.
const (
	Pass    Status = "PASS"
	Fail    Status = "FAIL"
	Skipped Status = "SKIPPED"
)

// Quote holds the measurement registers read from a quote, indexed by
// register.Register (MRTD, RTMR0..3).
type Quote = register.Quote

// LogEvent is one measured event from the firmware or runtime log, as the
// reference-values document spells events (ccel.Event.Reference).
type LogEvent struct {
	Register string `json:"register"` // "rtmr0".."rtmr3"
	Index    int    `json:"index"`    // position among this register's events
	refvalues.Event
}

// logEvents converts parsed events, numbering them per register.
func logEvents(evs []ccel.Event) []LogEvent {
	out := make([]LogEvent, 0, len(evs))
	counts := map[register.Register]int{}
	for _, e := range evs {
		out = append(out, LogEvent{Register: e.Register.Key(), Index: counts[e.Register], Event: e.Reference()})
		counts[e.Register]++
	}
	return out
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
// expected sha256:ab12… got sha256:cd34…`, each digest shown up to its
// first differing character.
func (m Mismatch) String() string {
	comp := ""
	if m.Component != "" && m.Component != m.Description {
		comp = " (" + m.Component + ")"
	}
	exp, got := Abbreviate(m.Expected, m.Got)
	return fmt.Sprintf("%s: event %d %q%s expected %s got %s", m.Register, m.EventIndex, m.Description, comp, exp, got)
}

// minShown is how many hex digits an abbreviated digest shows at least.
const minShown = 8

// Abbreviate shortens two "[label ]alg:hex" digests for people: both keep
// the same number of hex digits, at least minShown and up to and including
// the first digit where they differ, so a difference is always visible.
// Anything else is returned as is.
func Abbreviate(a, b string) (string, string) {
	pa, alga, ha := splitDigest(a)
	pb, algb, hb := splitDigest(b)
	n := minShown
	if ha != "" && hb != "" && pa+alga == pb+algb {
		i := 0
		for i < len(ha) && i < len(hb) && ha[i] == hb[i] {
			i++
		}
		n = max(n, i+1)
	}
	cut := func(s, prefix, alg, h string) string {
		if h == "" || len(h) <= n+4 {
			return s
		}
		return prefix + alg + ":" + h[:n] + "…"
	}
	return cut(a, pa, alga, ha), cut(b, pb, algb, hb)
}

// splitDigest splits "[label ]alg:hex" into "label ", alg and hex; hex is
// "" when s is not of that form.
func splitDigest(s string) (prefix, alg, h string) {
	if i := strings.LastIndexByte(s, ' '); i >= 0 {
		prefix, s = s[:i+1], s[i+1:]
	}
	alg, h, ok := strings.Cut(s, ":")
	if !ok {
		return "", "", ""
	}
	if h == "" || strings.Trim(strings.ToLower(h), "0123456789abcdef") != "" {
		return "", "", ""
	}
	return prefix, alg, h
}

// RegisterState compares one register across quote, reference and log.
type RegisterState struct {
	Name      string `json:"name"`                // "mrtd", "rtmr0".."rtmr3"
	Quote     string `json:"quote"`               // hex
	Reference string `json:"reference,omitempty"` // hex; empty when the reference leaves it open
	Reason    string `json:"reason,omitempty"`    // why the reference leaves it open
	Replayed  string `json:"replayed,omitempty"`  // hex value the event log replays to
	Match     Status `json:"match"`               // quote vs reference
	// Accepted describes the member of the reference's accepted-value set
	// the quote matched (Match PASS), e.g. "'tcg-2G-2cpu' recorded on
	// platform qemu-7.2-tcg-sim (2G, 2 CPUs)"; AcceptedSet is the set's size.
	Accepted    string `json:"accepted,omitempty"`
	AcceptedSet int    `json:"accepted_set,omitempty"`
}

// Unpinned reports whether the reference leaves the register open with
// nothing to compare it against (no value, no accepted set).
func (s RegisterState) Unpinned() bool {
	return s.Match == Skipped
}

// Result is the register's comparison (quote against reference) as one
// named outcome, e.g. "RTMR1 FAIL ...": the only comparison of a register
// with its reference value (verify reports it as is).
func (s RegisterState) Result() Result {
	name := strings.ToUpper(s.Name)
	switch s.Match {
	case Pass:
		if s.Accepted != "" {
			return Result{name, Pass, fmt.Sprintf("%s matches accepted value %s", name, s.Accepted)}
		}
		return Result{name, Pass, "matches the reference " + Abbrev(s.Reference)}
	case Fail:
		if s.AcceptedSet > 0 {
			return Result{name, Fail, fmt.Sprintf("the quote's %s is %s, none of the %d accepted values of the reference (%s)", name, s.Quote, s.AcceptedSet, s.Reason)}
		}
		return Result{name, Fail, fmt.Sprintf("the quote's %s is %s, the reference expects %s", name, s.Quote, s.Reference)}
	}
	return Result{name, Skipped, "reference value is null: " + s.Reason}
}

// Abbrev shortens a hex value for people to its first 16 digits and "…".
func Abbrev(h string) string {
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

// CheckCCEL names the firmware log replay.
const CheckCCEL = "CCEL replay (RTMR0..2)"

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

// replayResult is the outcome of replaying one log (named log) onto the
// quote's registers regs: skipped when the log was not supplied, failed
// with the replay's error, else the number of events that reproduce regs.
func replayResult(name, log, regs string, have bool, events int, err error) Result {
	switch {
	case !have:
		return Result{name, Skipped, "no " + log + " supplied"}
	case err != nil:
		return Result{name, Fail, err.Error()}
	}
	return Result{name, Pass, fmt.Sprintf("%d events replay to the quote's %s", events, regs)}
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
		rt, rtErr = ReplayRuntime(runtimeLog, q[register.RTMR3])
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

	// Events expected per register; an accepted RTMR0 value brings its own.
	want := map[string][]refvalues.Event{}
	if ref != nil {
		want = maps.Clone(ref.Events)
	}
	for _, reg := range register.All {
		name := reg.Key()
		st := RegisterState{Name: name, Quote: hex.EncodeToString(q[reg][:]), Match: Skipped}
		if reg.IsRTMR() && (reg != register.RTMR3 && fw != nil || reg == register.RTMR3 && rt != nil) {
			v := ReplayValue(replayed[name])
			st.Replayed = hex.EncodeToString(v[:])
		}
		switch {
		case ref == nil:
			st.Reason = "no reference values"
		case ref.Registers.Get(reg) == nil && reg == register.RTMR0 && ref.Accepted != nil && len(ref.Accepted.RTMR0) > 0:
			set := ref.Accepted.RTMR0
			st.AcceptedSet = len(set)
			st.Match = Fail
			var names []string
			for _, m := range set {
				names = append(names, strconv.Quote(m.Name))
				if strings.EqualFold(m.Value, st.Quote) {
					st.Match, st.Reference, st.Accepted = Pass, m.Value, describe(m)
					want[name] = m.Events
					break
				}
			}
			if st.Match == Fail {
				st.Reason = strings.Join(names, ", ")
			}
		case ref.Registers.Get(reg) == nil:
			st.Reason = ref.Reasons[name]
			if st.Reason == "" {
				st.Reason = "the reference document leaves this register open and gives no reason"
			}
		default:
			st.Reference = *ref.Registers.Get(reg)
			st.Match = Pass
			if !strings.EqualFold(st.Reference, st.Quote) {
				st.Match = Fail
			}
		}
		a.Registers = append(a.Registers, st)
	}

	// Log replay results.
	a.Results = append(a.Results,
		replayResult(CheckCCEL, "firmware event log (CCEL)", "RTMR0..2", haveFW, len(fw), fwErr),
		replayResult("runtime log replay (RTMR3)", "runtime event log", "RTMR3", haveRT, len(rt), rtErr))

	// Event comparisons.
	for _, reg := range register.RTMRs {
		name := reg.Key()
		label := "events " + reg.Name()
		haveLog := reg != register.RTMR3 && fw != nil || reg == register.RTMR3 && rt != nil
		want := want[name]
		switch {
		case ref == nil || len(want) == 0:
			a.Results = append(a.Results, Result{label, Skipped, "the reference lists no events for " + reg.Name()})
		case !haveLog:
			a.Results = append(a.Results, Result{label, Skipped, "no parsable event log for " + reg.Name() + " supplied"})
		default:
			if m := Compare(name, want, replayed[name]); m != nil {
				a.Mismatches = append(a.Mismatches, *m)
				a.Results = append(a.Results, Result{label, Fail, m.String()})
			} else {
				a.Results = append(a.Results, Result{label, Pass, matchReason(want)})
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
			gs := gotString(g, "")
			// initd's payload-locked event carries its measured reason:
			// "model: locked (broker refused: RTMR2 mismatch)".
			if name, ok := strings.CutPrefix(g.Description, event.KindPayloadLocked+":"); ok {
				if why, ok := strings.CutPrefix(g.Content, event.AlgReason+":"); ok {
					gs = name + ": locked (" + why + ")"
				}
			}
			return &Mismatch{Register: reg, EventIndex: i, Description: g.Description, Expected: "missing", Got: gs}
		case want[i].Pinned() && !strings.EqualFold(want[i].Digest, got[i].Digest):
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

// matchReason is the PASS reason of an event comparison: how many events
// matched and which ones the reference does not pin.
func matchReason(want []refvalues.Event) string {
	var open []string
	for _, e := range want {
		if !e.Pinned() {
			open = append(open, strconv.Quote(e.Description))
		}
	}
	if len(open) == 0 {
		return fmt.Sprintf("%d events match the reference", len(want))
	}
	return fmt.Sprintf("%d events match the reference, %d not pinned (present, digest unchecked: %s)", len(want)-len(open), len(open), strings.Join(open, ", "))
}

// describe names an accepted value for a report line.
func describe(m refvalues.AcceptedValue) string {
	s := fmt.Sprintf("'%s' recorded on platform %s", m.Name, m.Platform)
	var shape []string
	if m.Memory != "" {
		shape = append(shape, m.Memory)
	}
	if m.CPUs > 0 {
		shape = append(shape, fmt.Sprintf("%d CPUs", m.CPUs))
	}
	if len(shape) > 0 {
		s += " (" + strings.Join(shape, ", ") + ")"
	}
	return s
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
	if g.Content != "" && (wantContent != "" || g.Register == register.RTMR3.Key()) {
		return g.Content
	}
	return "sha384:" + g.Digest
}

// ReplayValue extends a zero register with each event's digest in order.
func ReplayValue(events []LogEvent) [48]byte {
	var v register.Value
	for _, e := range events {
		var d register.Value
		b, _ := hex.DecodeString(e.Digest)
		copy(d[:], b)
		v = register.Extend(v, d)
	}
	return v
}

// ReplayCCEL parses the CCEL (checking table when given) and replays it
// against the quote's RTMR0..2 (ccel.Verify). It returns the parsed events
// even when the replay fails (nil only when the log cannot be parsed).
func ReplayCCEL(table, raw []byte, q Quote) ([]LogEvent, error) {
	evs, err := ccel.Verify(table, raw, q)
	if evs == nil {
		return nil, err
	}
	return logEvents(evs), err
}

// ReplayRuntime parses the RTMR3 runtime log (TCG CEL) and replays it
// against the quote's RTMR3. Events are returned whenever the log parses.
func ReplayRuntime(raw []byte, rtmr3 [48]byte) ([]LogEvent, error) {
	l, err := event.ParseLog(raw)
	if err != nil {
		return nil, err
	}
	evs := l.Events()
	parsed := make([]ccel.Event, 0, len(evs))
	for i, e := range evs {
		ce, err := ccel.FromRuntime(e)
		if err != nil {
			return nil, fmt.Errorf("runtime event log: event %d: %w", i, err)
		}
		parsed = append(parsed, ce)
	}
	out := logEvents(parsed)
	if err := l.Replay(rtmr3[:]); err != nil {
		return out, fmt.Errorf("runtime event log does not replay to the quote's RTMR3 (%d events): the log was altered or belongs to another boot", len(out))
	}
	return out, nil
}

// WriteText prints the register table and the event diff.
func (a *Analysis) WriteText(w io.Writer) error {
	var b strings.Builder
	b.WriteString("Registers:\n")
	for _, r := range a.Registers {
		ref := r.Reference
		switch {
		case ref == "" && r.AcceptedSet > 0:
			ref = fmt.Sprintf("(none of the %d accepted values: %s)", r.AcceptedSet, r.Reason)
		case ref == "":
			ref = "(open: " + r.Reason + ")"
		case r.Accepted != "":
			ref += " (accepted value " + r.Accepted + ")"
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
