package explain

import (
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/testutil/testdeps"
)

func fixture(t testing.TB, name string) []byte { return testdeps.EventlogFixture(t, name) }

// FuzzAnalyze feeds arbitrary firmware and runtime logs to the replay and
// diff: no panics, and garbage never replays to a non-zero register.
func FuzzAnalyze(f *testing.F) {
	f.Add(fixture(f, "cos-113-intel-tdx.bin"), fixture(f, "cos-113-intel-tdx.table.bin"), []byte{})
	f.Add([]byte{}, []byte{}, []byte{0x00, 0x00, 0x00, 0x04})
	doc := &refvalues.Document{Events: map[string][]refvalues.Event{"rtmr1": {{Digest: "00"}}, "rtmr3": {{Description: "payload:model", Digest: "11"}}}}
	var q Quote
	q[2][0], q[4][0] = 1, 1
	f.Fuzz(func(t *testing.T, ccel, table, runtime []byte) {
		a := Analyze(doc, q, ccel, table, runtime)
		for _, r := range a.Results {
			if r.Name != "CCEL replay (RTMR0..2)" && r.Name != "runtime log replay (RTMR3)" {
				continue
			}
			if r.Status == Pass {
				t.Fatalf("%s passed for fuzzed input against non-zero registers", r.Name)
			}
		}
		var sb nopWriter
		a.WriteText(sb)
	})
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }
