package event

import (
	"testing"
)

// FuzzParseLog feeds arbitrary bytes to the runtime-log parser: it must
// never panic, and a log it accepts must re-encode and replay consistently.
func FuzzParseLog(f *testing.F) {
	l := NewLog()
	l.Append(ev(KindPayload, "model", 1), nil)
	l.Append(ev(KindConfig, "runtime", 2), nil)
	raw, _ := l.MarshalBinary()
	f.Add(raw)
	one := NewLog()
	one.Append(ev(KindPayloadFailed, "webui", 3), nil)
	raw1, _ := one.MarshalBinary()
	f.Add(raw1)
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseLog(b)
		if err != nil {
			return
		}
		v := p.Value()
		if err := p.Replay(v[:]); err != nil {
			t.Fatalf("accepted log does not replay to its own value: %v", err)
		}
		want, err := Replay(p.Events())
		if err != nil || want != v {
			t.Fatalf("events replay to %x, records to %x (%v)", want, v, err)
		}
	})
}

// FuzzDecode checks the canonical event decoder.
func FuzzDecode(f *testing.F) {
	enc, _ := ev(KindPayload, "model", 1).Encode()
	f.Add(enc)
	f.Add([]byte(Domain))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			return
		}
		again, err := e.Encode()
		if err != nil || string(again) != string(b) {
			t.Fatalf("decode/encode not canonical: %v", err)
		}
	})
}
