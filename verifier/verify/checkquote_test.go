package verify_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/verifier/verify"
)

// A quote checked once (CheckQuote) and appraised against several
// references (Against) gives, for each, the report Verify gives; Against
// does not change the checked quote, and the simulated-platform check
// follows each reference's image.
func TestCheckQuoteAgainstEqualsVerify(t *testing.T) {
	td := newSimTD(t, "0000001000000000")
	nonce := make([]byte, 32)
	spki := [32]byte{1}
	q := td.quote(t, nonce, spki)
	good := td.reference(t)
	other := td.reference(t)
	other.Registers.RTMR2 = other.Registers.RTMR1 // another kernel command line
	release := td.reference(t)
	release.Image.Dev, release.Image.Simulated = false, false
	opts := verify.Options{AllowSimulated: true, SimRoots: sim.RootPool(td.pki), Nonce: nonce, SPKIHash: &spki}
	cq := verify.CheckQuote(context.Background(), td.evidence(q), opts)
	js := func(r *verify.Report) string {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for round := 0; round < 2; round++ {
		for _, tc := range []struct {
			name    string
			doc     *refvalues.Document
			trusted bool
		}{{"good", good, true}, {"other", other, false}, {"release", release, false}} {
			o := opts
			o.Reference = tc.doc
			got, want := cq.Against(o), verify.Verify(context.Background(), td.evidence(q), o)
			if js(got) != js(want) {
				t.Fatalf("%s (round %d): Against\n%s\nVerify\n%s", tc.name, round, text(got), text(want))
			}
			if got.Trusted != tc.trusted || (tc.name == "release") != got.Failed(verify.CheckSimulated) {
				t.Fatalf("%s: trusted %v\n%s", tc.name, got.Trusted, text(got))
			}
		}
	}
	// A failed quote check stops every reference's appraisal at it.
	bad := append([]byte(nil), q...)
	bad[48+136+5] ^= 1 // a byte of MRTD
	o := opts
	o.Reference = good
	r := verify.CheckQuote(context.Background(), td.evidence(bad), opts).Against(o)
	if r.Trusted || !r.Failed(verify.CheckAuthenticity) || len(r.Registers) != 0 {
		t.Fatalf("tampered quote:\n%s", text(r))
	}
}
