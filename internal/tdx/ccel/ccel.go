// Package ccel encodes and parses the TDX firmware event log (CCEL): a TCG
// crypto-agile event log with SHA-384 digests whose register numbers are CC
// measurement register indexes (RTMRn = n+1), and the 56-byte CCEL ACPI
// table that describes it. Parsing and replay use go-eventlog's tcg package.
//
// Event is the one event model of TDX measurement logs: the builder's
// prediction (internal/tdx/measure), the simulated firmware, the verifier's
// parsed logs and the RTMR3 runtime events (FromRuntime) all use it, and
// Event.Reference converts it to the published reference-values event.
package ccel

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"unicode"

	"github.com/google/go-eventlog/tcg"

	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/register"
)

// Event is one measured event: the register it extends, its TCG type, the
// SHA-384 digest extended and the data the log records.
type Event struct {
	Register register.Register
	Type     tcg.EventType // TCG event type; 0 for runtime events
	Digest   *[48]byte     // SHA-384 extended; nil = unknown (predictions only)
	Data     []byte        // event data as logged
	// Description names the event for people.
	Description string
	// Component is what the event measures (firmware, kernel, acpi,
	// payload:<name>, config...); empty for events parsed from a log.
	Component string
	// Content is the content digest "alg:hex" of runtime events.
	Content string
}

// TypeName is the event's type as reference values and reports spell it:
// the TCG name ("EV_SEPARATOR") or, for RTMR3, event.TypeRuntime.
func (e Event) TypeName() string {
	if e.Register == register.RTMR3 {
		return event.TypeRuntime
	}
	return e.Type.TCGString()
}

// maxRefData is the longest event data a reference-values event carries.
const maxRefData = 64

// Reference converts e to the published reference-values event: the digest
// in lowercase hex (empty when unknown) and, for firmware events, the data
// when it is short.
func (e Event) Reference() refvalues.Event {
	re := refvalues.Event{Type: e.TypeName(), Description: e.Description, Component: e.Component, Content: e.Content}
	if e.Digest != nil {
		re.Digest = hex.EncodeToString(e.Digest[:])
	}
	if len(e.Data) <= maxRefData && e.Register != register.RTMR3 {
		re.Data = hex.EncodeToString(e.Data)
	}
	return re
}

// FromRuntime converts an RTMR3 runtime event: its measurement is the
// digest, its canonical encoding the data.
func FromRuntime(e event.Event) (Event, error) {
	m, err := e.Measurement()
	if err != nil {
		return Event{}, err
	}
	enc, err := e.Encode()
	if err != nil {
		return Event{}, err
	}
	comp := "config"
	if e.Kind != event.KindConfig {
		comp = "payload:" + e.Name
	}
	return Event{Register: register.RTMR3, Digest: &m, Data: enc, Description: e.Label(), Component: comp, Content: e.DigestString()}, nil
}

// Replay returns the value of r after extending, in order, the digests of
// the events of r; known is false when one of them is unknown.
func Replay(events []Event, r register.Register) (v register.Value, known bool) {
	known = true
	for _, e := range events {
		if e.Register != r {
			continue
		}
		if e.Digest == nil {
			known = false
			continue
		}
		v = register.Extend(v, *e.Digest)
	}
	return v, known
}

// Of returns the events of r, in order.
func Of(events []Event, r register.Register) []Event {
	var out []Event
	for _, e := range events {
		if e.Register == r {
			out = append(out, e)
		}
	}
	return out
}

// ACPI: TDVF measures the blobs QEMU hands over through fw_cfg into RTMR0,
// one EV_PLATFORM_CONFIG_FLAGS event per blob whose data is ACPIEventData.
var ACPIBlobs = []string{"etc/table-loader", "etc/acpi/rsdp", "etc/acpi/tables"}

// ACPIEventData is the data of the ACPI blob events.
const ACPIEventData = "ACPI DATA"

// IsACPI reports whether e is an ACPI blob event.
func (e Event) IsACPI() bool {
	return e.Register == register.RTMR0 && e.Type == tcg.PlatformConfigFlags && bytes.HasPrefix(e.Data, []byte(ACPIEventData))
}

// describe renders a parsed event for people: its type and, when the data
// is short printable text (ASCII or UTF-16LE), that text.
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
