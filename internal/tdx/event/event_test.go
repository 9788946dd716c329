package event

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

func ev(kind, name string, seed byte) Event {
	d := sha256.Sum256([]byte{seed})
	alg := AlgVerity
	if kind == KindConfig {
		alg = AlgSHA256
	}
	return Event{Version: Version, Kind: kind, Name: name, Alg: alg, Digest: d[:]}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	e := ev(KindPayload, "model", 1)
	enc, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(enc, []byte(Domain)) {
		t.Fatalf("encoding lacks the domain prefix")
	}
	got, err := Decode(enc)
	if err != nil {
		t.Fatal(err)
	}
	if got.Label() != "payload:model" || !bytes.Equal(got.Digest, e.Digest) || got.Alg != e.Alg {
		t.Fatalf("round trip: got %+v", got)
	}
	if _, err := Decode(append(enc, 0)); err == nil || !strings.Contains(err.Error(), "trailing") {
		t.Fatalf("trailing byte accepted: %v", err)
	}
	if _, err := Decode(enc[:len(enc)-1]); err == nil {
		t.Fatal("truncated encoding accepted")
	}
}

// The encoding is fixed: a change breaks every published RTMR3.
func TestEncodingIsStable(t *testing.T) {
	e := Event{Version: 1, Kind: KindPayload, Name: "m", Alg: AlgVerity, Digest: make([]byte, 32)}
	enc, _ := e.Encode()
	want := hex.EncodeToString([]byte(Domain)) + "01" + "0007" + hex.EncodeToString([]byte("payload")) + "0001" + "6d" +
		"000d" + hex.EncodeToString([]byte("verity-sha256")) + "0020" + strings.Repeat("00", 32)
	if hex.EncodeToString(enc) != want {
		t.Fatalf("encoding changed:\n got %x\nwant %s", enc, want)
	}
}

func TestValidateRejects(t *testing.T) {
	bad := []Event{
		{Version: 2, Kind: KindPayload, Name: "a", Alg: AlgVerity, Digest: make([]byte, 32)},
		{Version: 1, Kind: "other", Name: "a", Alg: AlgVerity, Digest: make([]byte, 32)},
		{Version: 1, Kind: KindPayload, Name: "", Alg: AlgVerity, Digest: make([]byte, 32)},
		{Version: 1, Kind: KindPayload, Name: "a", Alg: "md5", Digest: make([]byte, 32)},
		{Version: 1, Kind: KindPayload, Name: "a", Alg: AlgVerity, Digest: make([]byte, 31)},
	}
	for i, e := range bad {
		if _, err := e.Encode(); err == nil {
			t.Errorf("case %d: %+v encoded", i, e)
		}
	}
}

func TestLogReplayMatchesRegister(t *testing.T) {
	for _, n := range []int{0, 1, 2, 4} {
		events := []Event{ev(KindPayload, "ollama", 1), ev(KindPayload, "model", 2), ev(KindPayloadFailed, "webui", 3), ev(KindConfig, "runtime", 4)}[:n]
		var reg [48]byte
		l := NewLog()
		for _, e := range events {
			if err := l.Append(e, func(m [48]byte) error { reg = Extend(reg, m); return nil }); err != nil {
				t.Fatal(err)
			}
		}
		want, err := Replay(events)
		if err != nil {
			t.Fatal(err)
		}
		if reg != want || l.Value() != want {
			t.Fatalf("%d events: register %x, log value %x, replay %x", n, reg, l.Value(), want)
		}
		raw, err := l.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := ParseLog(raw)
		if err != nil {
			t.Fatalf("%d events: ParseLog: %v", n, err)
		}
		if err := parsed.Replay(want[:]); err != nil {
			t.Fatalf("%d events: replay: %v", n, err)
		}
		if len(parsed.Events()) != n {
			t.Fatalf("%d events: parsed %d", n, len(parsed.Events()))
		}
		if n > 0 {
			wrong := want
			wrong[0] ^= 1
			if err := parsed.Replay(wrong[:]); err == nil {
				t.Fatalf("%d events: replay against a wrong register passed", n)
			}
		}
		if _, err := parsed.MarshalJSON(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestParseLogRejectsTamperedDigest(t *testing.T) {
	l := NewLog()
	l.Append(ev(KindPayload, "model", 1), nil)
	l.Append(ev(KindConfig, "runtime", 2), nil)
	raw, _ := l.MarshalBinary()
	// Flip one byte of the first record's content (inside the event's digest).
	i := bytes.Index(raw, []byte(AlgVerity))
	raw[i+len(AlgVerity)+4] ^= 0xff
	if _, err := ParseLog(raw); err == nil {
		t.Fatal("tampered content accepted")
	}
}

// A log declaring huge TLV lengths is refused before anything allocates
// them (go-eventlog would allocate whatever length the log declares).
func TestParseLogRefusesOversizedTLVs(t *testing.T) {
	top := []byte{0, 0xff, 0xff, 0xff, 0xf0, 1, 2, 3}
	nested := []byte{0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 5, 0x0c, 0x5c, 0, 0, 0}
	for _, raw := range [][]byte{top, nested} {
		if _, err := ParseLog(raw); err == nil || !strings.Contains(err.Error(), "declares") {
			t.Fatalf("oversized TLV accepted or wrong error: %v", err)
		}
	}
}

func TestLockedEvent(t *testing.T) {
	e := Locked("model", "broker refused: RTMR2 mismatch")
	enc, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(enc)
	if err != nil || got.Kind != KindPayloadLocked || string(got.Digest) != "broker refused: RTMR2 mismatch" {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if s := got.String(); s != "payload-locked:model reason:broker refused: RTMR2 mismatch" {
		t.Errorf("String() = %q", s)
	}
	long := Locked("model", strings.Repeat("é", MaxReason)+"\n\x00")
	if len(long.Digest) > MaxReason || long.Validate() != nil {
		t.Errorf("long reason not cut: %d bytes, %v", len(long.Digest), long.Validate())
	}
	if err := Locked("model", "a\nb").Validate(); err != nil {
		t.Errorf("control characters not stripped: %v", err)
	}
	// A reason is only valid on a payload-locked event, and never empty or
	// with control characters.
	for _, bad := range []Event{
		{Version: Version, Kind: KindPayload, Name: "m", Alg: AlgReason, Digest: []byte("x")},
		{Version: Version, Kind: KindPayloadLocked, Name: "m", Alg: AlgReason},
		{Version: Version, Kind: KindPayloadLocked, Name: "m", Alg: AlgReason, Digest: []byte("a\nb")},
		{Version: Version, Kind: KindPayloadLocked, Name: "m", Alg: AlgReason, Digest: []byte{0xff}},
	} {
		if bad.Validate() == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

// Volume events carry a reason, round-trip, and change the register.
func TestVolumeEvents(t *testing.T) {
	for _, kind := range []string{KindVolumeLocked, KindVolumeFailed} {
		e := Reasoned(kind, "state", "integrity error reading the filesystem header")
		b, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(b)
		if err != nil || got.Kind != kind || got.Name != "state" || string(got.Digest) != "integrity error reading the filesystem header" {
			t.Fatalf("round trip: %+v, %v", got, err)
		}
		if s := got.String(); s != kind+":state reason:integrity error reading the filesystem header" {
			t.Errorf("String() = %q", s)
		}
		if bad := (Event{Version: Version, Kind: kind, Name: "state", Alg: AlgReason}); bad.Validate() == nil {
			t.Errorf("%s with an empty reason accepted", kind)
		}
	}
	r1, _ := Replay([]Event{Reasoned(KindVolumeLocked, "state", "x")})
	r2, _ := Replay([]Event{Reasoned(KindVolumeFailed, "state", "x")})
	if r1 == r2 {
		t.Error("volume-locked and volume-failed measure the same")
	}
}
