package simtd

import (
	"context"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/verifier/verify"
)

// The TD's answer verifies against its own reference (registers pinned,
// REPORTDATA bound to the nonce and key), and fails against another TD's.
func TestAttestVerifies(t *testing.T) {
	td := New(t, nil, Registers(0x11, 0x22))
	nonce := []byte("a nonce of thirty-two bytes ....")
	spki := attestation.SPKIHash(SelfSigned(t).Leaf.RawSubjectPublicKeyInfo)
	resp, err := td.Attest(nonce, spki)
	if err != nil {
		t.Fatal(err)
	}
	opts := verify.Options{Reference: td.Reference(t, refvalues.Image{Name: "dev", Dev: true, Simulated: true}),
		AllowSimulated: true, SimRoots: sim.RootPool(td.PKI), Nonce: nonce, SPKIHash: &spki}
	ev := verify.Evidence{Quote: resp.Quote, Claimed: &resp.ReportData}
	if r := verify.Verify(context.Background(), ev, opts); !r.Trusted || !r.Simulated {
		t.Fatalf("own reference: %s %+v", r.Verdict, r.Checks)
	}
	other := New(t, td.PKI, Registers(0x99, 0x22))
	opts.Reference = other.Reference(t, refvalues.Image{Name: "other", Dev: true, Simulated: true})
	if r := verify.Verify(context.Background(), ev, opts); r.Trusted || !r.Failed("MRTD") {
		t.Fatalf("another TD's reference: %s %+v", r.Verdict, r.Checks)
	}
}
