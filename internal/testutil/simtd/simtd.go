// Package simtd is a simulated TD for tests: the TDX simulator quoting a
// fixed register file under a simulator PKI, the agent's attestation
// answer (internal/tdx/attestation) it gives for a nonce and TLS key, the
// reference values that pin exactly its registers, and a TLS certificate
// for the agent to present. Logged adds event logs that replay to its
// registers: a real firmware log and a tdforge runtime log.
package simtd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/internal/testutil/testdeps"
	"github.com/tdforge/tdforge/verifier/record"
	"github.com/tdforge/tdforge/verifier/verify"
)

// TD is a simulated TD whose registers never change.
type TD struct {
	*sim.Simulator
	PKI *sim.PKI
}

// Registers is the register file of a plain simulated dev TD
// (sim.PlainRegisters): MRTD is the byte mrtd and RTMR0 the byte rtmr0,
// each repeated 48 times; the rest is zero but for the TD attributes
// (SEPT_VE_DISABLE) and XFAM.
func Registers(mrtd, rtmr0 byte) *sim.Registers { return sim.PlainRegisters(mrtd, rtmr0) }

// New returns a TD quoting regs under pki, or under a fresh PKI when pki
// is nil. It fails t when the simulator does not start.
func New(t testing.TB, pki *sim.PKI, regs *sim.Registers) *TD {
	t.Helper()
	if pki == nil {
		var err error
		if pki, err = sim.NewPKI(); err != nil {
			t.Fatal(err)
		}
	}
	s, err := sim.New(pki, func() (*sim.Registers, error) { return regs, nil })
	if err != nil {
		t.Fatal(err)
	}
	return &TD{Simulator: s, PKI: pki}
}

// Attest is the agent's answer at attestation.PathAttestation to nonce,
// when the TLS key it presents has SPKI hash spki: a simulated quote over
// attestation.ReportData(nonce, spki). Callers add the image and the other
// optional fields they test.
func (td *TD) Attest(nonce []byte, spki [32]byte) (*attestation.Response, error) {
	rd, err := attestation.ReportData(nonce, spki)
	if err != nil {
		return nil, err
	}
	q, err := td.Quote(rd)
	if err != nil {
		return nil, err
	}
	return &attestation.Response{Version: 1, Quote: q, QuoteProvider: sim.Name, Simulated: true,
		ReportData: attestation.ReportDataInfo{Scheme: attestation.Scheme, Nonce: hex.EncodeToString(nonce),
			SPKIHash: hex.EncodeToString(spki[:]), Value: hex.EncodeToString(rd[:])}}, nil
}

// Reference records the reference values of img from a quote of td: they
// pin exactly the registers td quotes.
func (td *TD) Reference(t testing.TB, img refvalues.Image) *refvalues.Document {
	t.Helper()
	q, err := td.Quote([64]byte{})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := record.Reference(verify.Evidence{Quote: q}, img)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// SelfSigned is a fresh P-256 TLS certificate for localhost, valid for an
// hour either side of now, with its Leaf set.
func SelfSigned(t testing.TB) tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k, Leaf: leaf}
}

// COSRTMR is what go-eventlog's COS TDX firmware log fixture
// (cos-113-intel-tdx.bin) replays RTMR0..2 to, as its ccel/replay_test.go
// publishes them.
var COSRTMR = [3]string{
	"3fa2f61f395b7f5feefb4ec2df61297f109ad8abcd6410c1b7df60f21f37b19297fc35e544039c7e1edece752afd17f6",
	"f62dbc072bd5d3f3438b7b35c39a727f5aea2ffc2473f43723953f530daf62504f0a7944aa62c41a86e8a878c2b122c1",
	"4969684dc87381fc3b3134176c8d8806eaf0a901859f5f70cfae8d17714b46c10a8de219048c9fc09f11f381a6fbe7c1",
}

// Logged is a simulated TD that presents its event logs: go-eventlog's COS
// firmware log (the CCEL and its ACPI table) covers RTMR0..2, and a
// tdforge runtime log RTMR3.
type Logged struct {
	*TD
	CCEL, CCELTable, RuntimeLog []byte
}

// NewLogged returns a Logged TD under a fresh PKI whose runtime log holds
// events. Its MRTD derives from seed (another seed: another firmware),
// attrs are its TD attributes (16 hex digits); XFAM, MRSEAM and
// TEE_TCB_SVN are fixed.
func NewLogged(t testing.TB, seed, attrs string, events []event.Event) *Logged {
	t.Helper()
	l := event.NewLog()
	var rtmr3 [48]byte
	for _, e := range events {
		if err := l.Append(e, func(m [48]byte) error { rtmr3 = event.Extend(rtmr3, m); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	rtlog, err := l.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	mrtd := sha256.Sum256([]byte(seed))
	regs := &sim.Registers{Platform: sim.Platform{
		MRTD: hex.EncodeToString(append(mrtd[:], mrtd[:16]...)), RTMR: COSRTMR, TDAttributes: attrs,
		XFAM: "e71a060000000000", MRSEAM: strings.Repeat("00", 48), TEETCBSVN: "03000400000000000000000000000000",
	}, RTMR3: hex.EncodeToString(rtmr3[:])}
	return &Logged{TD: New(t, nil, regs), CCEL: testdeps.EventlogFixture(t, "cos-113-intel-tdx.bin"),
		CCELTable: testdeps.EventlogFixture(t, "cos-113-intel-tdx.table.bin"), RuntimeLog: rtlog}
}
