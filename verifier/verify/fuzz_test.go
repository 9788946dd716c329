package verify_test

import (
	"context"
	"testing"

	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/tdforge/tdforge/verifier/verify"
)

// FuzzVerifyQuote feeds arbitrary quote bytes to the full verification:
// it must never panic, and only the untouched sample may pass authenticity.
func FuzzVerifyQuote(f *testing.F) {
	f.Add(testdata.RawQuote)
	f.Add(testdata.RawQuote[:0x30+0x248])
	f.Add([]byte{4, 0, 2, 0, 0x81, 0, 0, 0})
	doc := sampleReference(f)
	bundle := sampleBundle(f)
	f.Fuzz(func(t *testing.T, q []byte) {
		r := verify.Verify(context.Background(), verify.Evidence{Quote: q}, verify.Options{Reference: doc, Getter: bundle, Now: sampleTime})
		if r == nil || r.Verdict == "" {
			t.Fatal("no verdict")
		}
		if r.Trusted {
			t.Fatalf("fuzzed quote trusted (%d bytes)", len(q))
		}
	})
}
