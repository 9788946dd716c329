package simtd

import (
	"context"
	"crypto/sha256"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/verifier/record"
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

// A Logged TD's logs replay to the registers it quotes: a reference
// recorded from them verifies its quotes with the logs checked.
func TestLoggedReplays(t *testing.T) {
	d := sha256.Sum256([]byte("root hash of x"))
	td := NewLogged(t, "seed", "0000000000000000", []event.Event{{Version: event.Version, Kind: event.KindPayload, Name: "x", Alg: event.AlgVerity, Digest: d[:]}})
	q, err := td.Quote([64]byte{})
	if err != nil {
		t.Fatal(err)
	}
	ev := verify.Evidence{Quote: q, CCEL: td.CCEL, CCELTable: td.CCELTable, RuntimeLog: td.RuntimeLog}
	doc, err := record.Reference(ev, refvalues.Image{Name: "logged", Dev: true, Simulated: true})
	if err != nil {
		t.Fatal(err)
	}
	if *doc.Registers.RTMR0 != COSRTMR[0] || len(doc.Events["rtmr3"]) != 1 {
		t.Fatalf("recorded %+v", doc.Registers)
	}
	r := verify.Verify(context.Background(), ev, verify.Options{Reference: doc, AllowSimulated: true, SimRoots: sim.RootPool(td.PKI)})
	if !r.Trusted {
		t.Fatalf("%s %+v", r.Verdict, r.Checks)
	}
}
