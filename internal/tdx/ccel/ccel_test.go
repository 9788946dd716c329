package ccel

import (
	"bytes"
	"crypto/sha512"
	"strings"
	"testing"

	"github.com/google/go-eventlog/tcg"

	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/internal/testutil/testdeps"
)

func digest(s string) *[48]byte {
	d := sha512.Sum384([]byte(s))
	return &d
}

func sample() []Event {
	return []Event{
		{Register: register.RTMR0, Type: tcg.EFIHandoffTables2, Digest: digest("hob"), Data: []byte("TdxTable")},
		{Register: register.RTMR0, Type: tcg.PlatformConfigFlags, Digest: digest("acpi"), Data: []byte(ACPIEventData)},
		{Register: register.RTMR1, Type: tcg.EFIAction, Digest: digest("calling"), Data: []byte("Calling EFI Application from Boot Option")},
		{Register: register.RTMR2, Type: tcg.EventTag, Digest: digest("cmdline"), Data: []byte("LOADED_IMAGE::LoadOptions\x00")},
	}
}

// quoteOf returns the registers the events replay to.
func quoteOf(events []Event) register.Quote {
	var q register.Quote
	for _, r := range register.Firmware {
		q[r], _ = Replay(events, r)
	}
	return q
}

func TestEncodeParseRoundTrip(t *testing.T) {
	in := sample()
	table, log, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(table) != TableSize || len(log)%LogArea != 0 || log[len(log)-1] != 0xff {
		t.Fatalf("table %d bytes, log %d bytes", len(table), len(log))
	}
	if err := CheckTable(table); err != nil {
		t.Fatal(err)
	}
	out, _, err := Parse(log)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatalf("%d events back, want %d", len(out), len(in))
	}
	for i := range in {
		a, b := in[i], out[i]
		if a.Register != b.Register || a.Type != b.Type || *a.Digest != *b.Digest || !bytes.Equal(a.Data, b.Data) {
			t.Errorf("event %d: %+v, want %+v", i, b, a)
		}
	}
	if out[2].Description != "EV_EFI_ACTION Calling EFI Application from Boot Option" {
		t.Errorf("description %q", out[2].Description)
	}
	// Re-encoding the parsed events gives the same bytes.
	if _, again, err := Encode(out); err != nil || !bytes.Equal(again, log) {
		t.Fatalf("re-encoding differs: %v", err)
	}
	// The register numbering is the CC MR index: RTMRn is n+1.
	off := bytes.Index(log, in[0].Digest[:]) - 14
	if off < 0 || log[off] != byte(register.RTMR0.CCMRIndex()) || log[off] != 1 {
		t.Fatalf("RTMR0 event is not logged as CC MR 1")
	}
}

func TestVerify(t *testing.T) {
	in := sample()
	table, log, _ := Encode(in)
	q := quoteOf(in)
	if evs, err := Verify(table, log, q); err != nil || len(evs) != len(in) {
		t.Fatalf("Verify: %d events, %v", len(evs), err)
	}
	bad := q
	bad[register.RTMR1][0] ^= 1
	evs, err := Verify(table, log, bad)
	if err == nil || !strings.Contains(err.Error(), "RTMR1") || strings.Contains(err.Error(), "RTMR0") || len(evs) != len(in) {
		t.Fatalf("wrong RTMR1: %d events, %v", len(evs), err)
	}
	table[20] ^= 1
	if _, err := Verify(table, log, q); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("bad table: %v", err)
	}
	if _, err := Verify(nil, []byte("garbage"), q); err == nil {
		t.Fatal("garbage log accepted")
	}
}

func TestEncodeRefuses(t *testing.T) {
	if _, _, err := Encode([]Event{{Register: register.RTMR0, Type: tcg.Separator}}); err == nil || !strings.Contains(err.Error(), "unknown digest") {
		t.Errorf("unknown digest: %v", err)
	}
	if _, _, err := Encode([]Event{{Register: register.MRTD, Digest: digest("x")}}); err == nil || !strings.Contains(err.Error(), "MRTD") {
		t.Errorf("MRTD event: %v", err)
	}
}

func TestReference(t *testing.T) {
	fw := sample()[1].Reference()
	if fw.Type != "EV_PLATFORM_CONFIG_FLAGS" || fw.Data != "414350492044415441" || len(fw.Digest) != 96 {
		t.Errorf("firmware event %+v", fw)
	}
	long := Event{Register: register.RTMR1, Type: tcg.EFIAction, Data: bytes.Repeat([]byte("x"), 65)}.Reference()
	if long.Data != "" || long.Digest != "" {
		t.Errorf("long data or unknown digest rendered: %+v", long)
	}
	e := event.Event{Version: event.Version, Kind: event.KindPayload, Name: "model", Alg: event.AlgVerity, Digest: bytes.Repeat([]byte{0xab}, 32)}
	ce, err := FromRuntime(e)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := e.Measurement()
	if ce.Register != register.RTMR3 || *ce.Digest != m {
		t.Fatalf("runtime event %+v", ce)
	}
	re := ce.Reference()
	if re.Type != event.TypeRuntime || re.Description != "payload:model" || re.Component != "payload:model" || re.Content != e.DigestString() || re.Data != "" {
		t.Errorf("runtime reference %+v", re)
	}
	if _, err := FromRuntime(event.Event{}); err == nil {
		t.Error("invalid runtime event converted")
	}
}

// fixture reads a CCEL from go-eventlog's test data.
func fixture(t *testing.T, name string) []byte { return testdeps.EventlogFixture(t, name) }

// A real CCEL (GCE TDX, from go-eventlog's test data) parses, replays with
// go-eventlog to what Replay computes, and names its registers.
func TestRealCCEL(t *testing.T) {
	log, table := fixture(t, "cos-113-intel-tdx.bin"), fixture(t, "cos-113-intel-tdx.table.bin")
	if err := CheckTable(table); err != nil {
		t.Fatal(err)
	}
	events, _, err := Parse(log)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[register.Register]int{}
	for _, e := range events {
		seen[e.Register]++
		if !strings.HasPrefix(e.Description, "EV_") {
			t.Errorf("description %q", e.Description)
		}
	}
	for _, r := range register.Firmware {
		if seen[r] == 0 {
			t.Errorf("no %s events", r)
		}
	}
	q := quoteOf(events)
	if _, err := Verify(table, log, q); err != nil {
		t.Fatalf("real CCEL does not replay to its own registers: %v", err)
	}
	q[register.RTMR2][47] ^= 1
	if _, err := Verify(table, log, q); err == nil || !strings.Contains(err.Error(), "RTMR2") {
		t.Fatalf("tampered RTMR2: %v", err)
	}
}
