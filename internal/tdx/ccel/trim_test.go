package ccel

import (
	"bytes"
	"testing"
)

// The used part of a log area parses to the same events and replays to the
// same registers; the padding after it is all 0xFF.
func TestUsed(t *testing.T) {
	_, encoded, err := Encode(sample())
	if err != nil {
		t.Fatal(err)
	}
	for name, log := range map[string][]byte{
		"encoded":    encoded,
		"GCE (real)": fixture(t, "cos-113-intel-tdx.bin"),
	} {
		n := Used(log)
		if n <= 0 || n >= len(log) {
			t.Fatalf("%s: used %d of %d bytes", name, n, len(log))
		}
		if rest := bytes.Trim(log[n:], "\xff"); len(rest) != 0 {
			t.Errorf("%s: %d non-padding bytes after the used part", name, len(rest))
		}
		full, _, err := Parse(log)
		if err != nil {
			t.Fatal(err)
		}
		trimmed, _, err := Parse(log[:n])
		if err != nil {
			t.Fatalf("%s: trimmed log: %v", name, err)
		}
		if len(full) != len(trimmed) {
			t.Fatalf("%s: %d events trimmed, %d in full", name, len(trimmed), len(full))
		}
		if quoteOf(full) != quoteOf(trimmed) {
			t.Errorf("%s: trimmed log replays differently", name)
		}
		// Already trimmed: unchanged. Cut mid-event: the cut event is dropped.
		if Used(log[:n]) != n {
			t.Errorf("%s: trimming twice changed the length", name)
		}
		if m := Used(log[:n-1]); m >= n-1 {
			t.Errorf("%s: a truncated last event was kept (%d)", name, m)
		}
	}
	for _, junk := range [][]byte{nil, []byte("short"), bytes.Repeat([]byte{0xff}, 100)} {
		if Used(junk) != len(junk) {
			t.Errorf("unreadable log %q trimmed to %d", junk, Used(junk))
		}
	}
}
