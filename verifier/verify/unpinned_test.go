package verify_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	tdxreg "github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/verifier/verify"
)

// realPlatformReference turns a recorded reference into what the builder
// writes for a real-TDX platform profile: RTMR0 null with a reason, and the
// digests of the RTMR0 events it cannot predict (here the first two and the
// last) not pinned.
func realPlatformReference(t *testing.T, td *simTD) *refvalues.Document {
	t.Helper()
	doc := td.reference(t)
	doc.Registers.RTMR0 = nil
	doc.Reasons = map[string]string{"rtmr0": "platform real-tdx has no ACPI digests"}
	evs := doc.Events["rtmr0"]
	for _, i := range []int{0, 1, len(evs) - 1} {
		evs[i].Digest = refvalues.NotPinned
	}
	return doc
}

func text(r *verify.Report) string {
	var buf bytes.Buffer
	r.WriteText(&buf)
	return buf.String()
}

// Issue 12 section 1: an honest CCEL compared with a reference whose RTMR0
// events are partly unpredictable. Before the fix "events RTMR0" failed on
// the first unpredictable event (expected sha384: got sha384:…), which the
// builder wrote as "". Also a null RTMR0 gave TRUSTED; now it is NOT
// TRUSTED unless accepted, and then the verdict says what goes unchecked.
func TestUnknownDigestsHonestCCEL(t *testing.T) {
	td := newSimTD(t, "0000001000000000")
	doc := realPlatformReference(t, td)
	q := td.quote(t, make([]byte, 32), [32]byte{})
	opts := verify.Options{Reference: doc, AllowSimulated: true, SimRoots: sim.RootPool(td.pki)}
	r := verify.Verify(context.Background(), td.evidence(q), opts)
	want(t, r, "events RTMR0", verify.Pass, "3 not pinned")
	want(t, r, "RTMR0", verify.Fail, "NOT PINNED: the reference value is null (platform real-tdx has no ACPI digests), so ACPI tables, TD HOB and boot variables unchecked")
	if r.Trusted || r.ExitCode() != 1 {
		t.Fatalf("null RTMR0 trusted:\n%s", text(r))
	}

	opts.AcceptUnpinned = []tdxreg.Register{tdxreg.RTMR0}
	r = verify.Verify(context.Background(), td.evidence(q), opts)
	want(t, r, "RTMR0", verify.Skipped, "NOT PINNED, accepted by the options")
	out := text(r)
	if !r.Trusted || !strings.HasPrefix(out, "Verdict: TRUSTED (SIMULATED), RTMR0 NOT PINNED: ACPI tables, TD HOB and boot variables unchecked\n") || len(r.Unpinned) != 1 {
		t.Fatalf("accepted null RTMR0:\n%s", out)
	}
	// Accepting RTMR0 does not accept another unpinned register.
	doc.Registers.RTMR2 = nil
	r = verify.Verify(context.Background(), td.evidence(q), opts)
	want(t, r, "RTMR2", verify.Fail, "NOT PINNED")
	if r.Trusted {
		t.Fatal("unaccepted RTMR2 trusted")
	}
}

// A TD that omits its CCEL does not pass on a null RTMR0 either, and the
// agent's reason for the missing CCEL is reported.
func TestNullRTMR0WithoutCCEL(t *testing.T) {
	td := newSimTD(t, "0000001000000000")
	doc := realPlatformReference(t, td)
	q := td.quote(t, make([]byte, 32), [32]byte{})
	ev := td.evidence(q)
	ev.CCEL, ev.CCELTable = nil, nil
	ev.CCELAbsent = "no CCEL ACPI table: /sys/firmware/acpi/tables/CCEL does not exist"
	r := verify.Verify(context.Background(), ev, verify.Options{Reference: doc, AllowSimulated: true, SimRoots: sim.RootPool(td.pki)})
	want(t, r, "RTMR0", verify.Fail, "NOT PINNED")
	want(t, r, "CCEL replay (RTMR0..2)", verify.Skipped, "the agent says: no CCEL ACPI table")
	if r.Trusted {
		t.Fatalf("null RTMR0 without CCEL trusted:\n%s", text(r))
	}
	// Accepting RTMR0 unpinned does not accept its known events unchecked.
	r = verify.Verify(context.Background(), ev, verify.Options{Reference: doc, AllowSimulated: true, SimRoots: sim.RootPool(td.pki), AcceptUnpinned: []tdxreg.Register{tdxreg.RTMR0}})
	want(t, r, "RTMR0", verify.Skipped, "accepted by the options")
	want(t, r, "events RTMR0", verify.Fail, "RTMR0 is not pinned, so its known events can only be checked in the firmware event log (CCEL), and there is none (the agent says: no CCEL ACPI table")
	if r.Trusted {
		t.Fatalf("accepted null RTMR0 without CCEL trusted:\n%s", text(r))
	}
}

// An accepted-value set pins a null RTMR0: any member matches and is named,
// and RTMR0's events are compared with that member's events; no member
// fails with the set's size.
func TestAcceptedRTMR0(t *testing.T) {
	td := newSimTD(t, "0000001000000000")
	rec := td.reference(t)
	doc := realPlatformReference(t, td)
	other := strings.Repeat("ee", 48)
	doc.Accepted = &refvalues.Accepted{RTMR0: []refvalues.AcceptedValue{
		{Name: "tdx-16G-4cpu", Platform: "real", Memory: "16G", CPUs: 4, Value: other, Events: rec.Events["rtmr0"][:2], Source: "recorded"},
		{Name: "tcg-2G-2cpu", Platform: "qemu-7.2-tcg-sim", Memory: "2G", CPUs: 2, Value: *rec.Registers.RTMR0, Events: rec.Events["rtmr0"], Source: "recorded"},
	}}
	q := td.quote(t, make([]byte, 32), [32]byte{})
	opts := verify.Options{Reference: doc, AllowSimulated: true, SimRoots: sim.RootPool(td.pki)}
	r := verify.Verify(context.Background(), td.evidence(q), opts)
	want(t, r, "RTMR0", verify.Pass, "RTMR0 matches accepted value 'tcg-2G-2cpu' recorded on platform qemu-7.2-tcg-sim (2G, 2 CPUs)")
	want(t, r, "events RTMR0", verify.Pass, "events match the reference")
	if !r.Trusted || len(r.Unpinned) != 0 {
		t.Fatalf("accepted RTMR0 not trusted:\n%s", text(r))
	}
	// The member's events are what RTMR0's log is compared with.
	evs := append([]refvalues.Event(nil), rec.Events["rtmr0"]...)
	evs[3].Digest = strings.Repeat("00", 48)
	doc.Accepted.RTMR0[1].Events = evs
	r = verify.Verify(context.Background(), td.evidence(q), opts)
	want(t, r, "events RTMR0", verify.Fail, "RTMR0: event 3")
	// No member matches.
	doc.Accepted.RTMR0 = doc.Accepted.RTMR0[:1]
	r = verify.Verify(context.Background(), td.evidence(q), opts)
	want(t, r, "RTMR0", verify.Fail, `none of the 1 accepted values of the reference ("tdx-16G-4cpu")`)
	if r.Trusted {
		t.Fatal("unmatched RTMR0 trusted")
	}
}

// offMRConfigID is MRCONFIGID's offset in a quote v4 (48-byte header, then
// TEE_TCB_SVN 16, MRSEAM 48, MRSIGNERSEAM 48, SEAMATTRIBUTES 8,
// TDATTRIBUTES 8, XFAM 8, MRTD 48).
const offMRConfigID = 48 + 16 + 48 + 48 + 8 + 8 + 8 + 48

// withMRConfigID returns the simulated quote q with MRCONFIGID set to v,
// re-signed with the simulator's attestation key (the simulator itself
// always reports zero owner fields).
func withMRConfigID(t *testing.T, td *simTD, q []byte, v []byte) []byte {
	t.Helper()
	out := bytes.Clone(q)
	copy(out[offMRConfigID:], v)
	b, _ := pem.Decode([]byte(td.pki.AttestationKey))
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	const signed = 48 + sim.BodySize
	h := sha256.Sum256(out[:signed])
	rr, ss, err := ecdsa.Sign(rand.Reader, k.(*ecdsa.PrivateKey), h[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := out[signed+4 : signed+4+64]
	rr.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	return out
}

// Issue 12 section 1: the owner fields are checked, all zero unless the
// reference pins them. Before the fix a host-set MRCONFIGID went unchecked.
func TestOwnerFields(t *testing.T) {
	td := newSimTD(t, "0000001000000000")
	doc := td.reference(t)
	opts := verify.Options{Reference: doc, AllowSimulated: true, SimRoots: sim.RootPool(td.pki)}
	q := td.quote(t, make([]byte, 32), [32]byte{})
	r := verify.Verify(context.Background(), td.evidence(q), opts)
	for _, n := range []string{verify.CheckMRConfigID, verify.CheckMROwner, verify.CheckMROwnerCfg} {
		want(t, r, n, verify.Pass, "all zero")
	}
	cfg := bytes.Repeat([]byte{0x5a}, 48)
	bad := withMRConfigID(t, td, q, cfg)
	r = verify.Verify(context.Background(), td.evidence(bad), opts)
	want(t, r, verify.CheckAuthenticity, verify.Pass, "")
	want(t, r, verify.CheckMRConfigID, verify.Fail, "the quote's MRCONFIGID is "+hex.EncodeToString(cfg)+", the reference expects "+strings.Repeat("00", 48))
	if r.Trusted {
		t.Fatalf("MRCONFIGID set but trusted:\n%s", text(r))
	}
	doc.TD.MRConfigID = hex.EncodeToString(cfg)
	r = verify.Verify(context.Background(), td.evidence(bad), opts)
	want(t, r, verify.CheckMRConfigID, verify.Pass, "equal to the reference 5a5a")
	if !r.Trusted {
		t.Fatalf("pinned MRCONFIGID not trusted:\n%s", text(r))
	}
}
