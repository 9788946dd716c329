// Package simtd is a simulated TD for tests: the TDX simulator quoting a
// fixed register file under a simulator PKI, the agent's attestation
// answer (internal/tdx/attestation) it gives for a nonce and TLS key, the
// reference values that pin exactly its registers, and a TLS certificate
// for the agent to present.
package simtd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/verifier/record"
	"github.com/tdforge/tdforge/verifier/verify"
)

// TD is a simulated TD whose registers never change.
type TD struct {
	*sim.Simulator
	PKI *sim.PKI
}

// Registers is the register file of a plain simulated dev TD: MRTD is the
// byte mrtd and RTMR0 the byte rtmr0, each repeated 48 times; RTMR1 to
// RTMR3, MRSEAM and TEE_TCB_SVN are zero; the TD attributes set
// SEPT_VE_DISABLE only and XFAM is that of a current Xeon.
func Registers(mrtd, rtmr0 byte) *sim.Registers {
	rep := func(b byte, n int) string { return strings.Repeat(hex.EncodeToString([]byte{b}), n) }
	z := rep(0, 48)
	return &sim.Registers{Platform: sim.Platform{MRTD: rep(mrtd, 48), RTMR: [3]string{rep(rtmr0, 48), z, z},
		TDAttributes: "0000001000000000", XFAM: "e71a060000000000", MRSEAM: z, TEETCBSVN: rep(0, 16)}, RTMR3: z}
}

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
