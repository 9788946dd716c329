package verify

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	tt "github.com/google/go-tdx-guest/testing"
	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/verifier/collateral"
)

// sampleTime is when go-tdx-guest's sample collateral is valid.
var sampleTime = time.Date(2023, 7, 1, 1, 0, 0, 0, time.UTC)

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

func status(t *testing.T, r *Report, name string) Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	var buf bytes.Buffer
	r.WriteText(&buf)
	t.Fatalf("no check %q in report:\n%s", name, buf.String())
	return Check{}
}

func want(t *testing.T, r *Report, name string, st Status, reason string) {
	t.Helper()
	c := status(t, r, name)
	if c.Status != st || !strings.Contains(c.Reason, reason) {
		var buf bytes.Buffer
		r.WriteText(&buf)
		t.Fatalf("check %q = %s %q, want %s containing %q\n%s", name, c.Status, c.Reason, st, reason, buf.String())
	}
}

// The real production sample quote verifies offline against its collateral
// bundle: chain, CRLs, collateral and quote signatures pass; its TCB is
// older than every level of the (newer) sample TCB info, so it is NOT
// TRUSTED for that reason alone. Registers match a recorded reference.
func TestSampleQuoteOffline(t *testing.T) {
	doc, err := Record(Evidence{Quote: testdata.RawQuote}, refvalues.Image{Name: "sample"})
	if err != nil {
		t.Fatal(err)
	}
	r := Verify(context.Background(), Evidence{Quote: testdata.RawQuote}, Options{Reference: doc, Getter: sampleBundle(t), Now: sampleTime})
	want(t, r, CheckAuthenticity, Pass, "Intel SGX Root CA")
	want(t, r, CheckTCB, Fail, "no matching TCB level")
	for _, n := range []string{"MRTD", "RTMR0", "RTMR1", "RTMR2", "RTMR3"} {
		want(t, r, n, Pass, "matches the reference")
	}
	want(t, r, CheckDebug, Pass, "DEBUG clear")
	want(t, r, CheckXFAM, Pass, "e71a060000000000")
	want(t, r, CheckMRSEAM, Pass, "")
	want(t, r, CheckTCBSVN, Pass, "")
	want(t, r, CheckBinding, Skipped, "no nonce")
	if r.Trusted || r.Verdict != VerdictNotTrusted || r.ExitCode() != 1 || r.Simulated {
		t.Fatalf("verdict %s exit %d", r.Verdict, r.ExitCode())
	}
}

func TestSampleQuoteChangedRTMR(t *testing.T) {
	doc, _ := Record(Evidence{Quote: testdata.RawQuote}, refvalues.Image{Name: "sample"})
	orig := *doc.Registers.RTMR1
	changed := strings.Repeat("ab", 48)
	doc.Registers.RTMR1 = &changed
	r := Verify(context.Background(), Evidence{Quote: testdata.RawQuote}, Options{Reference: doc, Getter: sampleBundle(t), Now: sampleTime})
	want(t, r, "RTMR1", Fail, "RTMR[1] is "+orig+". Expect "+changed)
	want(t, r, "RTMR2", Pass, "")
	var buf bytes.Buffer
	r.WriteText(&buf)
	if !strings.Contains(buf.String(), "NOT TRUSTED") || !strings.Contains(buf.String(), "RTMR1") {
		t.Fatal(buf.String())
	}
	// A null register is SKIPPED with the document's reason.
	doc.Registers.RTMR1 = nil
	doc.Reasons = map[string]string{"rtmr1": "kernel built elsewhere"}
	r = Verify(context.Background(), Evidence{Quote: testdata.RawQuote}, Options{Reference: doc, Getter: sampleBundle(t), Now: sampleTime})
	want(t, r, "RTMR1", Skipped, "kernel built elsewhere")
}

func TestBadQuotes(t *testing.T) {
	doc, _ := Record(Evidence{Quote: testdata.RawQuote}, refvalues.Image{Name: "sample"})
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
		{"empty", nil, CheckFormat, 2, "no quote"},
		{"truncated header", testdata.RawQuote[:40], CheckFormat, 2, "not a TDX quote v4"},
		{"truncated", testdata.RawQuote[:len(testdata.RawQuote)-100], CheckFormat, 2, "not a TDX quote v4"},
		{"garbage", garbage, CheckFormat, 2, "not a TDX quote v4"},
		{"tampered body", flipped, CheckAuthenticity, 1, "unable to verify message digest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Verify(context.Background(), Evidence{Quote: tc.quote}, Options{Reference: doc, Getter: sampleBundle(t), Now: sampleTime})
			want(t, r, tc.check, Fail, tc.msg)
			if r.Trusted || r.ExitCode() != tc.exit {
				t.Fatalf("exit %d, want %d", r.ExitCode(), tc.exit)
			}
		})
	}
}

// Without a bundle the collateral is fetched online; with no network that
// is exit 3 with advice.
func TestNetworkFailure(t *testing.T) {
	doc, _ := Record(Evidence{Quote: testdata.RawQuote}, refvalues.Image{Name: "sample"})
	r := Verify(context.Background(), Evidence{Quote: testdata.RawQuote}, Options{Reference: doc, Now: sampleTime})
	if r.ExitCode() != 3 {
		t.Skipf("collateral service reachable from here (exit %d); the offline path is covered elsewhere", r.ExitCode())
	}
	want(t, r, CheckAuthenticity, Fail, "verifier collateral fetch")
}

func TestSimulatedTrusted(t *testing.T) {
	td := newSimTD(t, "0000001000000000")
	doc := td.reference(t)
	nonce := make([]byte, 32)
	rand.Read(nonce)
	spki := attestation.SPKIHash([]byte("the TLS key we connected to"))
	q := td.quote(t, nonce, spki)
	opts := Options{Reference: doc, AllowSimulated: true, SimRoots: sim.RootPool(td.pki), Nonce: nonce, SPKIHash: &spki}
	r := Verify(context.Background(), td.evidence(q), opts)
	if !r.Trusted || r.Verdict != VerdictSimulated || r.ExitCode() != 0 {
		var buf bytes.Buffer
		r.WriteText(&buf)
		t.Fatalf("want TRUSTED (SIMULATED):\n%s", buf.String())
	}
	want(t, r, "CCEL replay (RTMR0..2)", Pass, "")
	want(t, r, "runtime log replay (RTMR3)", Pass, "4 events")
	want(t, r, "events RTMR3", Pass, "")
	want(t, r, "events RTMR0", Pass, "")
	want(t, r, CheckBinding, Pass, "")

	// Rejected without --allow-simulated, with or without the root.
	r = Verify(context.Background(), td.evidence(q), Options{Reference: doc, SimRoots: sim.RootPool(td.pki), Nonce: nonce, SPKIHash: &spki})
	want(t, r, CheckAuthenticity, Fail, "simulator")
	r = Verify(context.Background(), td.evidence(q), Options{Reference: doc, Nonce: nonce, SPKIHash: &spki})
	want(t, r, CheckAuthenticity, Fail, "--allow-simulated --sim-root")
	if r.Trusted {
		t.Fatal("trusted")
	}
	// A different simulator root is not accepted.
	other, err := sim.GeneratePKI([]byte("another simulator seed, 32 bytes"))
	if err != nil {
		t.Fatal(err)
	}
	r = Verify(context.Background(), td.evidence(q), Options{Reference: doc, AllowSimulated: true, SimRoots: sim.RootPool(other), Nonce: nonce, SPKIHash: &spki})
	want(t, r, CheckAuthenticity, Fail, "neither Intel")
	// The reference must be a dev/simulated image.
	prod := *doc
	prod.Image.Dev, prod.Image.Simulated = false, false
	r = Verify(context.Background(), td.evidence(q), Options{Reference: &prod, AllowSimulated: true, SimRoots: sim.RootPool(td.pki), Nonce: nonce, SPKIHash: &spki})
	want(t, r, CheckSimulated, Fail, "not marked dev and simulated")
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
	base := Options{Reference: doc, AllowSimulated: true, SimRoots: roots}

	// Replayed: an old response for another nonce.
	old := td.quote(t, oldNonce, key)
	ev := td.evidence(old)
	ev.Claimed = &attestation.ReportDataInfo{Nonce: hex.EncodeToString(oldNonce), SPKIHash: hex.EncodeToString(key[:])}
	o := base
	o.Nonce, o.SPKIHash = nonce, &key
	r := Verify(context.Background(), ev, o)
	want(t, r, CheckBinding, Fail, "replayed")
	if r.Trusted || r.ExitCode() != 1 {
		t.Fatal("replayed attestation trusted")
	}
	// Man in the middle: quote bound to the agent's key, we talk to another.
	good := td.quote(t, nonce, key)
	ev = td.evidence(good)
	ev.Claimed = &attestation.ReportDataInfo{Nonce: hex.EncodeToString(nonce), SPKIHash: hex.EncodeToString(key[:])}
	o.SPKIHash = &mitm
	r = Verify(context.Background(), ev, o)
	want(t, r, CheckBinding, Fail, "man in the middle")
	// Wrong nonce without any claim.
	o.SPKIHash = &key
	o.Nonce = oldNonce
	r = Verify(context.Background(), td.evidence(good), o)
	want(t, r, CheckBinding, Fail, "does not bind our nonce")
	// Half the binding is an input error.
	o.SPKIHash = nil
	r = Verify(context.Background(), td.evidence(good), o)
	if r.ExitCode() != 2 {
		t.Fatalf("exit %d", r.ExitCode())
	}
}

func TestDebugRejected(t *testing.T) {
	td := newSimTD(t, "0100001000000000") // DEBUG | SEPT_VE_DISABLE
	doc := td.reference(t)
	q := td.quote(t, make([]byte, 32), [32]byte{})
	o := Options{Reference: doc, AllowSimulated: true, SimRoots: sim.RootPool(td.pki)}
	r := Verify(context.Background(), td.evidence(q), o)
	want(t, r, CheckDebug, Fail, "DEBUG attribute set")
	if r.Trusted {
		t.Fatal("debug TD trusted")
	}
	o.AllowDebug = true
	r = Verify(context.Background(), td.evidence(q), o)
	want(t, r, CheckDebug, Pass, "allowed by --allow-debug")
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
	o := Options{Reference: doc, AllowSimulated: true, SimRoots: sim.RootPool(td.pki)}

	ev := td.evidence(q)
	ev.CCEL = flipCCELDigest(t, td.ccel, 1, 2)
	r := Verify(context.Background(), ev, o)
	want(t, r, "CCEL replay (RTMR0..2)", Fail, "does not replay to the quote's RTMR1")
	want(t, r, "events RTMR1", Fail, "RTMR1: event 2 ")
	want(t, r, "events RTMR0", Pass, "")
	if len(r.Mismatches) != 1 || r.Mismatches[0].Register != "RTMR1" || r.Mismatches[0].EventIndex != 2 {
		t.Fatalf("mismatches %+v", r.Mismatches)
	}

	// Runtime log: the reference expects another model.
	doc2 := td.reference(t)
	doc2.Events["rtmr3"][1].Digest = strings.Repeat("00", 48)
	doc2.Events["rtmr3"][1].Content = "verity-sha256:" + strings.Repeat("ab12", 16)
	o.Reference = doc2
	r = Verify(context.Background(), td.evidence(q), o)
	m := status(t, r, "events RTMR3")
	if m.Status != Fail || !strings.HasPrefix(m.Reason, `RTMR3: event 1 "payload:model" expected verity-sha256:ab12ab12… got verity-sha256:`) {
		t.Fatalf("got %s %q", m.Status, m.Reason)
	}
	// Missing events.
	doc3 := td.reference(t)
	doc3.Events["rtmr3"] = append(doc3.Events["rtmr3"], refvalues.Event{Description: "payload:extra", Component: "payload:extra", Digest: strings.Repeat("11", 48)})
	o.Reference = doc3
	r = Verify(context.Background(), td.evidence(q), o)
	want(t, r, "events RTMR3", Fail, `event 4 "payload:extra" expected sha384:11111111… got missing`)
}

func TestRecordRefusesForeignLogs(t *testing.T) {
	td := newSimTD(t, "0000001000000000")
	q := td.quote(t, make([]byte, 32), [32]byte{})
	ev := td.evidence(q)
	ev.CCEL = flipCCELDigest(t, td.ccel, 0, 0)
	if _, err := Record(ev, refvalues.Image{Name: "x"}); err == nil || !strings.Contains(err.Error(), "RTMR0") {
		t.Fatalf("err = %v", err)
	}
	if _, err := Record(Evidence{Quote: []byte("junk")}, refvalues.Image{}); err == nil {
		t.Fatal("junk quote recorded")
	}
}
