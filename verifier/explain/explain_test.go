package explain

import (
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/ccel"
	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
)

// Issue 12 section 7: a digest that differs past the 8th hex digit must
// still show the difference, both sides with the same number of digits.
func TestMismatchShowsFirstDifference(t *testing.T) {
	base := "0a2e01c8" + strings.Repeat("5", 40) + strings.Repeat("7", 48)
	changed := []byte(base)
	changed[20] = 'f'
	m := Mismatch{Register: "RTMR1", EventIndex: 2, Description: "kernel", Expected: "sha384:" + base, Got: "sha384:" + string(changed)}
	want := `RTMR1: event 2 "kernel" expected sha384:` + base[:21] + "… got sha384:" + string(changed[:21]) + "…"
	if got := m.String(); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	// A difference within the first 8 digits keeps the short form.
	m.Got = "sha384:1" + base[1:]
	if got := m.String(); !strings.HasSuffix(got, "expected sha384:0a2e01c8… got sha384:1a2e01c8…") {
		t.Fatalf("got %s", got)
	}
	// Labelled content digests and "missing" are handled too.
	exp, got := Abbreviate("payload:a verity-sha256:"+strings.Repeat("ab", 32), "missing")
	if exp != "payload:a verity-sha256:abababab…" || got != "missing" {
		t.Fatalf("got %q %q", exp, got)
	}
}

// A locked payload's extra event is named with its measured reason.
func TestCompareNamesLockedPayload(t *testing.T) {
	var got []LogEvent
	for i, e := range []event.Event{
		{Version: event.Version, Kind: event.KindPayload, Name: "model", Alg: event.AlgVerity, Digest: make([]byte, 32)},
		event.Locked("model", "broker refused: RTMR2 mismatch"),
	} {
		ce, err := ccel.FromRuntime(e)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, LogEvent{Register: "rtmr3", Index: i, Event: ce.Reference()})
	}
	m := Compare("rtmr3", []refvalues.Event{got[0].Event}, got)
	if m == nil || m.String() != `RTMR3: event 1 "payload-locked:model" expected missing got model: locked (broker refused: RTMR2 mismatch)` {
		t.Fatalf("mismatch %v", m)
	}
}
