package ratls

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-tdx-guest/verify"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/quote"
	"github.com/tdforge/tdforge/internal/tdx/sim"
)

// attestWith quotes with s over ReportData(nonce, spkiHash), as initd's
// quoting socket does (it serves quote.DomainAttester).
func attestWith(s *sim.Simulator) func([]byte, [32]byte) ([]byte, error) {
	return quote.DomainAttester{Provider: s}.Attest
}

func simulator(t *testing.T) (*sim.Simulator, *sim.PKI) {
	t.Helper()
	pki, err := sim.NewPKI()
	if err != nil {
		t.Fatal(err)
	}
	z := strings.Repeat("00", 48)
	regs := &sim.Registers{Platform: sim.Platform{MRTD: z, RTMR: [3]string{z, z, z},
		TDAttributes: "0000000000000000", XFAM: "e700060000000000", MRSEAM: z, TEETCBSVN: strings.Repeat("00", 16)}, RTMR3: z}
	s, err := sim.New(pki, func() (*sim.Registers, error) { return regs, nil })
	if err != nil {
		t.Fatal(err)
	}
	return s, pki
}

func TestCertificateRoundTrip(t *testing.T) {
	sq, pki := simulator(t)
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	logs := Logs{RuntimeLog: []byte("cel"), CCEL: []byte("ccel"), CCELTable: []byte("table")}
	cert, ev, err := NewCertificate(k, attestWith(sq), logs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	got, err := Extract(parsed)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Quote) != string(ev.Quote) || string(got.RuntimeLog) != "cel" || string(got.CCEL) != "ccel" || string(got.CCELTable) != "table" || len(got.Nonce) != 32 {
		t.Fatalf("evidence did not round-trip: %+v", got)
	}
	if attestation.SPKIHash(parsed.RawSubjectPublicKeyInfo) != k.SPKIHash {
		t.Fatal("certificate SPKI is not the agent key")
	}
	if err := CheckBinding(parsed, got); err != nil {
		t.Fatal(err)
	}
	if err := verify.RawTdxQuote(got.Quote, &verify.Options{TrustedRoots: sim.RootPool(pki)}); err != nil {
		t.Fatalf("embedded quote: %v", err)
	}
	for _, e := range parsed.Extensions {
		if e.Id.Equal(attestation.RATLSExtensionOID) && e.Critical {
			t.Fatal("RA-TLS extension must not be critical")
		}
	}

	// The evidence does not bind another key's certificate.
	k2, _ := NewKey()
	other, _, err := NewCertificate(k2, attestWith(sq), Logs{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckBinding(other.Leaf, got); err == nil || !strings.Contains(err.Error(), "does not bind") {
		t.Fatalf("evidence moved to another cert: %v", err)
	}
	// A tampered nonce breaks the binding.
	bad := *got
	bad.Nonce = append([]byte{1}, got.Nonce[1:]...)
	if err := CheckBinding(parsed, &bad); err == nil {
		t.Fatal("tampered nonce accepted")
	}
}

func TestExtractErrors(t *testing.T) {
	k, _ := NewKey()
	sq, _ := simulator(t)
	cert, _, _ := NewCertificate(k, attestWith(sq), Logs{}, Options{})
	plain := *cert.Leaf
	plain.Extensions = nil
	if _, err := Extract(&plain); err == nil || !strings.Contains(err.Error(), "no RA-TLS extension") {
		t.Fatalf("got %v", err)
	}
	v2, _ := asn1.Marshal(attestation.RATLSEvidence{Version: 2, Nonce: []byte{1}, Quote: []byte{2}, RuntimeLog: []byte{}, CCEL: []byte{}, CCELTable: []byte{}})
	plain.Extensions = append(plain.Extensions, cert.Leaf.Extensions[0])
	plain.Extensions[0].Id = attestation.RATLSExtensionOID
	plain.Extensions[0].Value = v2
	if _, err := Extract(&plain); err == nil || !strings.Contains(err.Error(), "version 2") {
		t.Fatalf("got %v", err)
	}
	fail := func([]byte, [32]byte) ([]byte, error) { return nil, errors.New("no quote") }
	if _, _, err := NewCertificate(k, fail, Logs{}, Options{}); err == nil || !strings.Contains(err.Error(), "no quote") {
		t.Fatalf("quote failure: %v", err)
	}
}

// A TLS client checks the binding during the handshake.
func TestBindingOverTLS(t *testing.T) {
	sq, pki := simulator(t)
	k, _ := NewKey()
	cert, _, err := NewCertificate(k, attestWith(sq), Logs{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()
	checked := false
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, // trust comes from the quote, checked below
		VerifyConnection: func(cs tls.ConnectionState) error {
			leaf := cs.PeerCertificates[0]
			ev, err := Extract(leaf)
			if err != nil {
				return err
			}
			if err := CheckBinding(leaf, ev); err != nil {
				return err
			}
			checked = true
			return verify.RawTdxQuote(ev.Quote, &verify.Options{TrustedRoots: sim.RootPool(pki)})
		},
	}}}
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "hello" || !checked {
		t.Fatal("handshake did not check the RA-TLS binding")
	}
}
