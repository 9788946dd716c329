package verify_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	tt "github.com/google/go-tdx-guest/testing"
	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	tdxreg "github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/verifier/collateral"
	"github.com/tdforge/tdforge/verifier/record"
	"github.com/tdforge/tdforge/verifier/verify"
)

// sampleTime is when go-tdx-guest's sample collateral is valid.
var sampleTime = time.Date(2023, 7, 1, 1, 0, 0, 0, time.UTC)

// sampleReference pins the registers of go-tdx-guest's sample quote.
func sampleReference(t testing.TB) *refvalues.Document {
	t.Helper()
	doc, err := record.Reference(verify.Evidence{Quote: testdata.RawQuote}, refvalues.Image{Name: "sample"})
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func sampleBundle(t testing.TB) *collateral.Bundle {
	t.Helper()
	dir := t.TempDir()
	if _, err := collateral.Fetch(testdata.RawQuote, tt.TestGetter, dir, sampleTime); err != nil {
		t.Fatal(err)
	}
	b, err := collateral.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func status(t *testing.T, r *verify.Report, name string) verify.Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	var buf bytes.Buffer
	r.WriteText(&buf)
	t.Fatalf("no check %q in report:\n%s", name, buf.String())
	return verify.Check{}
}

func want(t *testing.T, r *verify.Report, name string, st verify.Status, reason string) {
	t.Helper()
	c := status(t, r, name)
	if c.Status != st || !strings.Contains(c.Reason, reason) {
		var buf bytes.Buffer
		r.WriteText(&buf)
		t.Fatalf("check %q = %s %q, want %s containing %q\n%s", name, c.Status, c.Reason, st, reason, buf.String())
	}
}

// wantCause checks that check name rests on the fact cause and that its
// reason names no command-line flag (commands add those as hints).
func wantCause(t *testing.T, r *verify.Report, name string, cause error) {
	t.Helper()
	c := status(t, r, name)
	if !errors.Is(c.Cause, cause) || strings.Contains(c.Reason, "--") {
		t.Fatalf("check %q: cause %v, reason %q; want cause %v and no flag", name, c.Cause, c.Reason, cause)
	}
}

// The real production sample quote verifies offline against its collateral
// bundle: chain, CRLs, collateral and quote signatures pass; its TCB is
// older than every level of the (newer) sample TCB info, so it is NOT
// TRUSTED for that reason alone. Registers match a recorded reference.
func TestSampleQuoteOffline(t *testing.T) {
	doc := sampleReference(t)
	r := verify.Verify(context.Background(), verify.Evidence{Quote: testdata.RawQuote}, verify.Options{Reference: doc, Getter: sampleBundle(t), Now: sampleTime})
	want(t, r, verify.CheckAuthenticity, verify.Pass, "Intel SGX Root CA")
	want(t, r, verify.CheckTCB, verify.Fail, "no matching TCB level")
	for _, n := range []string{"MRTD", "RTMR0", "RTMR1", "RTMR2", "RTMR3"} {
		want(t, r, n, verify.Pass, "matches the reference")
	}
	want(t, r, verify.CheckDebug, verify.Pass, "DEBUG clear")
	want(t, r, verify.CheckXFAM, verify.Pass, "e71a060000000000")
	want(t, r, verify.CheckMRSEAM, verify.Pass, "")
	want(t, r, verify.CheckTCBSVN, verify.Pass, "")
	want(t, r, verify.CheckBinding, verify.Skipped, "no nonce")
	if r.Trusted || r.Verdict != verify.VerdictNotTrusted || r.ExitCode() != 1 || r.Simulated {
		t.Fatalf("verdict %s exit %d", r.Verdict, r.ExitCode())
	}
}

func TestSampleQuoteChangedRTMR(t *testing.T) {
	doc := sampleReference(t)
	orig := *doc.Registers.RTMR1
	changed := strings.Repeat("ab", 48)
	doc.Registers.RTMR1 = &changed
	r := verify.Verify(context.Background(), verify.Evidence{Quote: testdata.RawQuote}, verify.Options{Reference: doc, Getter: sampleBundle(t), Now: sampleTime})
	want(t, r, "RTMR1", verify.Fail, "the quote's RTMR1 is "+orig+", the reference expects "+changed)
	want(t, r, "RTMR2", verify.Pass, "")
	var buf bytes.Buffer
	r.WriteText(&buf)
	if !strings.Contains(buf.String(), "NOT TRUSTED") || !strings.Contains(buf.String(), "RTMR1") {
		t.Fatal(buf.String())
	}
	// A null register FAILS with the document's reason unless accepted;
	// accepted it is SKIPPED and listed.
	doc.Registers.RTMR1 = nil
	doc.Reasons = map[string]string{"rtmr1": "kernel built elsewhere"}
	r = verify.Verify(context.Background(), verify.Evidence{Quote: testdata.RawQuote}, verify.Options{Reference: doc, Getter: sampleBundle(t), Now: sampleTime})
	want(t, r, "RTMR1", verify.Fail, "NOT PINNED: the reference value is null (kernel built elsewhere), so kernel unchecked")
	wantCause(t, r, "RTMR1", verify.ErrUnpinned)
	r = verify.Verify(context.Background(), verify.Evidence{Quote: testdata.RawQuote}, verify.Options{Reference: doc, Getter: sampleBundle(t), Now: sampleTime, AcceptUnpinned: []tdxreg.Register{tdxreg.RTMR1}})
	want(t, r, "RTMR1", verify.Skipped, "accepted by the options: kernel unchecked (kernel built elsewhere)")
	if len(r.Unpinned) != 1 || r.Unpinned[0] != "rtmr1" {
		t.Fatalf("accepted unpinned %v", r.Unpinned)
	}
}

func TestBadQuotes(t *testing.T) {
	doc := sampleReference(t)
	garbage := make([]byte, 5000)
	rand.Read(garbage)
	flipped := bytes.Clone(testdata.RawQuote)
	flipped[0x30+0x88] ^= 1 // MRTD byte: the signature no longer matches
	for _, tc := range []struct {
		name  string
		quote []byte
		check string
		exit  int
		msg   string
	}{
		{"empty", nil, verify.CheckFormat, 2, "no quote"},
		{"truncated header", testdata.RawQuote[:40], verify.CheckFormat, 2, "not a TDX quote v4"},
		{"truncated", testdata.RawQuote[:len(testdata.RawQuote)-100], verify.CheckFormat, 2, "not a TDX quote v4"},
		{"garbage", garbage, verify.CheckFormat, 2, "not a TDX quote v4"},
		{"tampered body", flipped, verify.CheckAuthenticity, 1, "unable to verify message digest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := verify.Verify(context.Background(), verify.Evidence{Quote: tc.quote}, verify.Options{Reference: doc, Getter: sampleBundle(t), Now: sampleTime})
			want(t, r, tc.check, verify.Fail, tc.msg)
			if r.Trusted || r.ExitCode() != tc.exit {
				t.Fatalf("exit %d, want %d", r.ExitCode(), tc.exit)
			}
		})
	}
}

// Without a bundle the collateral is fetched online; with no network that
// is exit 3 with advice.
func TestNetworkFailure(t *testing.T) {
	doc := sampleReference(t)
	r := verify.Verify(context.Background(), verify.Evidence{Quote: testdata.RawQuote}, verify.Options{Reference: doc, Now: sampleTime})
	if r.ExitCode() != 3 {
		t.Skipf("collateral service reachable from here (exit %d); the offline path is covered elsewhere", r.ExitCode())
	}
	c := status(t, r, verify.CheckAuthenticity)
	if ne := new(*collateral.NetworkError); c.Status != verify.Fail || !errors.As(c.Cause, ne) || strings.Contains(c.Reason, "--") {
		t.Fatalf("check %+v: want a FAIL caused by a collateral.NetworkError, with no flag in the reason", c)
	}
}

func TestSimulatedTrusted(t *testing.T) {
	td := newSimTD(t, "0000001000000000")
	doc := td.reference(t)
	nonce := make([]byte, 32)
	rand.Read(nonce)
	spki := attestation.SPKIHash([]byte("the TLS key we connected to"))
	q := td.quote(t, nonce, spki)
	opts := verify.Options{Reference: doc, AllowSimulated: true, SimRoots: sim.RootPool(td.pki), Nonce: nonce, SPKIHash: &spki}
	r := verify.Verify(context.Background(), td.evidence(q), opts)
	if !r.Trusted || r.Verdict != verify.VerdictSimulated || r.ExitCode() != 0 {
		var buf bytes.Buffer
		r.WriteText(&buf)
		t.Fatalf("want TRUSTED (SIMULATED):\n%s", buf.String())
	}
	want(t, r, "CCEL replay (RTMR0..2)", verify.Pass, "")
	want(t, r, "runtime log replay (RTMR3)", verify.Pass, "4 events")
	want(t, r, "events RTMR3", verify.Pass, "")
	want(t, r, "events RTMR0", verify.Pass, "")
	want(t, r, verify.CheckBinding, verify.Pass, "")

	// Rejected without --allow-simulated, with or without the root.
	r = verify.Verify(context.Background(), td.evidence(q), verify.Options{Reference: doc, SimRoots: sim.RootPool(td.pki), Nonce: nonce, SPKIHash: &spki})
	want(t, r, verify.CheckAuthenticity, verify.Fail, "simulator")
	wantCause(t, r, verify.CheckAuthenticity, verify.ErrSimulated)
	r = verify.Verify(context.Background(), td.evidence(q), verify.Options{Reference: doc, Nonce: nonce, SPKIHash: &spki})
	want(t, r, verify.CheckAuthenticity, verify.Fail, "not Intel's SGX Root CA")
	wantCause(t, r, verify.CheckAuthenticity, verify.ErrUnknownRoot)
	if r.Trusted {
		t.Fatal("trusted")
	}
	// A different simulator root is not accepted.
	other, err := sim.NewPKI()
	if err != nil {
		t.Fatal(err)
	}
	r = verify.Verify(context.Background(), td.evidence(q), verify.Options{Reference: doc, AllowSimulated: true, SimRoots: sim.RootPool(other), Nonce: nonce, SPKIHash: &spki})
	want(t, r, verify.CheckAuthenticity, verify.Fail, "neither Intel")
	// The reference must be a dev/simulated image.
	prod := *doc
	prod.Image.Dev, prod.Image.Simulated = false, false
	r = verify.Verify(context.Background(), td.evidence(q), verify.Options{Reference: &prod, AllowSimulated: true, SimRoots: sim.RootPool(td.pki), Nonce: nonce, SPKIHash: &spki})
	want(t, r, verify.CheckSimulated, verify.Fail, "not marked dev and simulated")
	if r.Trusted {
		t.Fatal("trusted with production reference")
	}
}

func TestBinding(t *testing.T) {
	td := newSimTD(t, "0000001000000000")
	doc := td.reference(t)
	roots := sim.RootPool(td.pki)
	nonce := bytes.Repeat([]byte{1}, 32)
	oldNonce := bytes.Repeat([]byte{2}, 32)
	key := attestation.SPKIHash([]byte("agent key"))
	mitm := attestation.SPKIHash([]byte("attacker key"))
	base := verify.Options{Reference: doc, AllowSimulated: true, SimRoots: roots}

	// Replayed: an old response for another nonce.
	old := td.quote(t, oldNonce, key)
	ev := td.evidence(old)
	ev.Claimed = &attestation.ReportDataInfo{Nonce: hex.EncodeToString(oldNonce), SPKIHash: hex.EncodeToString(key[:])}
	o := base
	o.Nonce, o.SPKIHash = nonce, &key
	r := verify.Verify(context.Background(), ev, o)
	want(t, r, verify.CheckBinding, verify.Fail, "replayed")
	if r.Trusted || r.ExitCode() != 1 {
		t.Fatal("replayed attestation trusted")
	}
	// Man in the middle: quote bound to the agent's key, we talk to another.
	good := td.quote(t, nonce, key)
	ev = td.evidence(good)
	ev.Claimed = &attestation.ReportDataInfo{Nonce: hex.EncodeToString(nonce), SPKIHash: hex.EncodeToString(key[:])}
	o.SPKIHash = &mitm
	r = verify.Verify(context.Background(), ev, o)
	want(t, r, verify.CheckBinding, verify.Fail, "man in the middle")
	// Wrong nonce without any claim.
	o.SPKIHash = &key
	o.Nonce = oldNonce
	r = verify.Verify(context.Background(), td.evidence(good), o)
	want(t, r, verify.CheckBinding, verify.Fail, "does not bind our nonce")
	// Half the binding is an input error.
	o.SPKIHash = nil
	r = verify.Verify(context.Background(), td.evidence(good), o)
	if r.ExitCode() != 2 {
		t.Fatalf("exit %d", r.ExitCode())
	}
	wantCause(t, r, verify.CheckBinding, verify.ErrHalfBinding)
}

func TestDebugRejected(t *testing.T) {
	td := newSimTD(t, "0100001000000000") // DEBUG | SEPT_VE_DISABLE
	doc := td.reference(t)
	q := td.quote(t, make([]byte, 32), [32]byte{})
	o := verify.Options{Reference: doc, AllowSimulated: true, SimRoots: sim.RootPool(td.pki)}
	r := verify.Verify(context.Background(), td.evidence(q), o)
	want(t, r, verify.CheckDebug, verify.Fail, "DEBUG attribute set")
	wantCause(t, r, verify.CheckDebug, verify.ErrDebug)
	if r.Trusted {
		t.Fatal("debug TD trusted")
	}
	o.AllowDebug = true
	r = verify.Verify(context.Background(), td.evidence(q), o)
	want(t, r, verify.CheckDebug, verify.Pass, "allowed by the options")
	if !r.Trusted {
		t.Fatal("debug TD with --allow-debug not trusted")
	}
}

// flipCCELDigest flips a byte of the SHA-384 digest of the n-th RTMR1
// event inside the raw CCEL.
func flipCCELDigest(t *testing.T, raw []byte, reg, n int) []byte {
	el, err := tcg.ParseEventLog(raw, tcg.ParseOpts{AllowPadding: true})
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for _, e := range el.Events(register.HashSHA384) {
		if e.Index != reg+1 || e.Type == tcg.NoAction {
			continue
		}
		if i == n {
			at := bytes.Index(raw, e.Digest)
			if at < 0 {
				t.Fatal("digest not found")
			}
			out := bytes.Clone(raw)
			out[at+5] ^= 0xff
			return out
		}
		i++
	}
	t.Fatalf("no event %d in RTMR%d", n, reg)
	return nil
}

func TestEventLogDiff(t *testing.T) {
	td := newSimTD(t, "0000001000000000")
	doc := td.reference(t)
	q := td.quote(t, make([]byte, 32), [32]byte{})
	o := verify.Options{Reference: doc, AllowSimulated: true, SimRoots: sim.RootPool(td.pki)}

	ev := td.evidence(q)
	ev.CCEL = flipCCELDigest(t, td.ccel, 1, 2)
	r := verify.Verify(context.Background(), ev, o)
	want(t, r, "CCEL replay (RTMR0..2)", verify.Fail, "does not replay to the quote's RTMR1")
	want(t, r, "events RTMR1", verify.Fail, "RTMR1: event 2 ")
	want(t, r, "events RTMR0", verify.Pass, "")
	if len(r.Mismatches) != 1 || r.Mismatches[0].Register != "RTMR1" || r.Mismatches[0].EventIndex != 2 {
		t.Fatalf("mismatches %+v", r.Mismatches)
	}

	// Runtime log: the reference expects another model.
	doc2 := td.reference(t)
	doc2.Events["rtmr3"][1].Digest = strings.Repeat("00", 48)
	doc2.Events["rtmr3"][1].Content = "verity-sha256:" + strings.Repeat("ab12", 16)
	o.Reference = doc2
	r = verify.Verify(context.Background(), td.evidence(q), o)
	m := status(t, r, "events RTMR3")
	if m.Status != verify.Fail || !strings.HasPrefix(m.Reason, `RTMR3: event 1 "payload:model" expected verity-sha256:ab12ab12… got verity-sha256:`) {
		t.Fatalf("got %s %q", m.Status, m.Reason)
	}
	// Missing events.
	doc3 := td.reference(t)
	doc3.Events["rtmr3"] = append(doc3.Events["rtmr3"], refvalues.Event{Description: "payload:extra", Component: "payload:extra", Digest: strings.Repeat("11", 48)})
	o.Reference = doc3
	r = verify.Verify(context.Background(), td.evidence(q), o)
	want(t, r, "events RTMR3", verify.Fail, `event 4 "payload:extra" expected sha384:11111111… got missing`)
}
