package sim

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/pcs"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/verify"
)

func testRegs() *Registers {
	rep := func(b byte, n int) string { return hex.EncodeToString(bytes.Repeat([]byte{b}, n)) }
	return &Registers{
		Platform: Platform{
			MRTD:         rep(0x11, 48),
			RTMR:         [3]string{rep(0x20, 48), rep(0x21, 48), rep(0x22, 48)},
			TDAttributes: "0000001000000000",
			XFAM:         "e702060000000000",
			MRSEAM:       rep(0x5e, 48),
			TEETCBSVN:    "03000500000000000000000000000000",
		},
		RTMR3: rep(0x33, 48),
	}
}

func newSim(t testing.TB) (*Simulator, *PKI) {
	t.Helper()
	pki, err := NewPKI()
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(pki, func() (*Registers, error) { return testRegs(), nil })
	if err != nil {
		t.Fatal(err)
	}
	return s, pki
}

// Every PKI is fresh: no two calls share a key or a root, so nothing
// derivable from public data (as the image name once was) can forge quotes.
func TestNewPKIFresh(t *testing.T) {
	a, err := NewPKI()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewPKI()
	if err != nil {
		t.Fatal(err)
	}
	if a.RootCert == b.RootCert || a.AttestationKey == b.AttestationKey || a.PCKKey == b.PCKKey {
		t.Fatal("two PKIs share a root or a key")
	}
	if _, err := New(a, func() (*Registers, error) { return testRegs(), nil }); err != nil {
		t.Fatalf("fresh PKI is not usable: %v", err)
	}
}

func TestPCKCertificateProfile(t *testing.T) {
	_, pki := newSim(t)
	pck, err := parseCertPEM("pck", pki.PCKCert)
	if err != nil {
		t.Fatal(err)
	}
	exts, err := pcs.PckCertificateExtensions(pck)
	if err != nil {
		t.Fatalf("go-tdx-guest cannot read the PCK extensions: %v", err)
	}
	if exts.FMSPC != hex.EncodeToString(SimFMSPC) || exts.PCEID != hex.EncodeToString(SimPCEID) {
		t.Fatalf("FMSPC/PCEID = %s/%s", exts.FMSPC, exts.PCEID)
	}
	if exts.TCB.PCESvn != SimPCESVN || !bytes.Equal(exts.TCB.CPUSvnComponents, SimCPUSVN) || !bytes.Equal(exts.TCB.CPUSvn, SimCPUSVN) {
		t.Fatalf("TCB = %+v", exts.TCB)
	}
	if len(exts.PPID) != 32 {
		t.Fatalf("PPID %q", exts.PPID)
	}
	root, _ := Root(pki)
	if root.Subject.Organization[0] != SimOrganization {
		t.Fatalf("root organization %v", root.Subject.Organization)
	}
}

func TestSignRaw(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := signRaw(k, []byte("sample"))
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("sample"))
	if !ecdsa.Verify(&k.PublicKey, d[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		t.Fatal("r||s signature does not verify")
	}
}

func TestQuoteVerifiesWithSimRoot(t *testing.T) {
	s, pki := newSim(t)
	var rd [64]byte
	for i := range rd {
		rd[i] = byte(i * 3)
	}
	raw, err := s.Quote(rd)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) < abi.QuoteMinSize {
		t.Fatalf("quote is %d bytes", len(raw))
	}
	q, err := abi.QuoteToProto(raw)
	if err != nil {
		t.Fatalf("go-tdx-guest cannot parse the simulated quote: %v", err)
	}
	qv4 := q.(*pb.QuoteV4)
	body := qv4.GetTdQuoteBody()
	if !bytes.Equal(body.GetReportData(), rd[:]) {
		t.Fatal("REPORTDATA not carried")
	}
	if !bytes.Equal(body.GetMrTd(), bytes.Repeat([]byte{0x11}, 48)) || !bytes.Equal(body.GetRtmrs()[3], bytes.Repeat([]byte{0x33}, 48)) ||
		!bytes.Equal(body.GetRtmrs()[1], bytes.Repeat([]byte{0x21}, 48)) || !bytes.Equal(body.GetMrSeam(), bytes.Repeat([]byte{0x5e}, 48)) {
		t.Fatal("registers not carried")
	}
	if hex.EncodeToString(body.GetTdAttributes()) != "0000001000000000" || hex.EncodeToString(body.GetXfam()) != "e702060000000000" {
		t.Fatal("attributes/xfam not carried")
	}
	got, err := ReportData(raw)
	if err != nil || got != rd {
		t.Fatalf("ReportData: %v", err)
	}

	opts := &verify.Options{TrustedRoots: RootPool(pki), CheckRevocations: false, GetCollateral: false}
	if err := verify.TdxQuote(q, opts); err != nil {
		t.Fatalf("verify with the simulator root: %v", err)
	}
	if err := verify.RawTdxQuote(raw, &verify.Options{TrustedRoots: RootPool(pki), Now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatalf("verify raw in 2030: %v", err)
	}
	// Intel's default root must reject it.
	if err := verify.RawTdxQuote(raw, &verify.Options{}); err == nil {
		t.Fatal("simulated quote verified against Intel's root")
	}
	// Another launch's simulator root must reject it.
	other, _ := NewPKI()
	if err := verify.RawTdxQuote(raw, &verify.Options{TrustedRoots: RootPool(other)}); err == nil {
		t.Fatal("quote verified against another simulator root")
	}
	// Tampering with the body breaks the attestation-key signature.
	bad := append([]byte(nil), raw...)
	bad[BodyOffset+offRTMR0+3*48] ^= 1
	if err := verify.RawTdxQuote(bad, &verify.Options{TrustedRoots: RootPool(pki)}); err == nil {
		t.Fatal("tampered quote verified")
	}
}

func TestQuoteRegisterErrors(t *testing.T) {
	var rd [64]byte
	pki, _ := NewPKI()
	broken := testRegs()
	broken.RTMR3 = "abc"
	s2, _ := New(pki, func() (*Registers, error) { return broken, nil })
	if _, err := s2.Quote(rd); err == nil || !strings.Contains(err.Error(), "rtmr3") {
		t.Fatalf("bad register: %v", err)
	}
}

func TestNewRejectsMismatchedPKI(t *testing.T) {
	a, _ := NewPKI()
	b, _ := NewPKI()
	regs := func() (*Registers, error) { return testRegs(), nil }
	mixed := *a
	mixed.PCKKey = b.PCKKey
	if _, err := New(&mixed, regs); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("mismatched PCK key: %v", err)
	}
	mixed = *a
	mixed.IntermediateCert = b.IntermediateCert
	if _, err := New(&mixed, regs); err == nil {
		t.Fatal("foreign intermediate accepted")
	}
	mixed = *a
	mixed.AttestationKey = "garbage"
	if _, err := New(&mixed, regs); err == nil {
		t.Fatal("garbage attestation key accepted")
	}
}

func BenchmarkQuote(b *testing.B) {
	s, _ := newSim(b)
	var rd [64]byte
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Quote(rd); err != nil {
			b.Fatal(err)
		}
	}
}
