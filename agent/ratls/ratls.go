// Package ratls makes the agent's RA-TLS certificate: a self-signed
// certificate for a key generated inside the TD, carrying evidence (a quote
// whose REPORTDATA binds the certificate's public key) in the
// attestation.RATLSExtensionOID extension. It also extracts and checks that
// binding on the client side.
package ratls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/sim"
)

// EvidenceVersion is the RATLSEvidence.Version this package writes.
const EvidenceVersion = 1

// Logs are the event logs embedded next to the quote.
type Logs struct {
	RuntimeLog []byte
	CCEL       []byte
	CCELTable  []byte
}

// Key is the agent's TLS identity.
type Key struct {
	Priv     *ecdsa.PrivateKey
	SPKI     []byte   // DER SubjectPublicKeyInfo
	SPKIHash [32]byte // attestation.SPKIHash(SPKI)
}

// NewKey generates a fresh ECDSA P-256 key.
func NewKey() (*Key, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	spki, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	return &Key{Priv: priv, SPKI: spki, SPKIHash: attestation.SPKIHash(spki)}, nil
}

// Options shape the certificate.
type Options struct {
	CommonName string   // default "tdforge-agent"
	DNSNames   []string // default "localhost"
	IPs        []net.IP // default 127.0.0.1, ::1
	Validity   time.Duration
	Now        time.Time
}

// NewCertificate has attest quote with REPORTDATA = ReportData(nonce,
// SPKIHash) for a fresh random 32-byte nonce (quote.Attester's Attest:
// initd forms REPORTDATA) and returns a self-signed certificate carrying
// that evidence.
func NewCertificate(k *Key, attest func(nonce []byte, spkiHash [32]byte) ([]byte, error), logs Logs, o Options) (tls.Certificate, *attestation.RATLSEvidence, error) {
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return tls.Certificate{}, nil, err
	}
	q, err := attest(nonce, k.SPKIHash)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("RA-TLS certificate: quote: %w", err)
	}
	ev := &attestation.RATLSEvidence{
		Version: EvidenceVersion, Nonce: nonce, Quote: q,
		RuntimeLog: nonNil(logs.RuntimeLog), CCEL: nonNil(logs.CCEL), CCELTable: nonNil(logs.CCELTable),
	}
	val, err := asn1.Marshal(*ev)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("RA-TLS evidence: %w", err)
	}
	if o.CommonName == "" {
		o.CommonName = "tdforge-agent"
	}
	if o.DNSNames == nil {
		o.DNSNames = []string{"localhost"}
	}
	if o.IPs == nil {
		o.IPs = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	if o.Validity == 0 {
		o.Validity = 365 * 24 * time.Hour
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn.Add(sn, big.NewInt(1)),
		Subject:               pkix.Name{CommonName: o.CommonName, Organization: []string{"tdforge attested TD"}},
		NotBefore:             o.Now.Add(-time.Hour),
		NotAfter:              o.Now.Add(o.Validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              o.DNSNames,
		IPAddresses:           o.IPs,
		ExtraExtensions:       []pkix.Extension{{Id: attestation.RATLSExtensionOID, Value: val}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.Priv.PublicKey, k.Priv)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("RA-TLS certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k.Priv, Leaf: leaf}, ev, nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// Extract returns the evidence in cert's RA-TLS extension.
func Extract(cert *x509.Certificate) (*attestation.RATLSEvidence, error) {
	for _, e := range cert.Extensions {
		if !e.Id.Equal(attestation.RATLSExtensionOID) {
			continue
		}
		var ev attestation.RATLSEvidence
		rest, err := asn1.Unmarshal(e.Value, &ev)
		if err != nil {
			return nil, fmt.Errorf("RA-TLS extension: %w", err)
		}
		if len(rest) != 0 {
			return nil, errors.New("RA-TLS extension: trailing bytes")
		}
		if ev.Version != EvidenceVersion {
			return nil, fmt.Errorf("RA-TLS extension: evidence version %d, want %d", ev.Version, EvidenceVersion)
		}
		return &ev, nil
	}
	return nil, fmt.Errorf("certificate has no RA-TLS extension %v", attestation.RATLSExtensionOID)
}

// CheckBinding checks that the evidence's quote REPORTDATA equals
// ReportData(evidence nonce, SPKIHash(cert SPKI)). It does not verify the
// quote's signature or measurements: that is the verifier's job.
func CheckBinding(cert *x509.Certificate, ev *attestation.RATLSEvidence) error {
	want, err := attestation.ReportData(ev.Nonce, attestation.SPKIHash(cert.RawSubjectPublicKeyInfo))
	if err != nil {
		return fmt.Errorf("RA-TLS evidence: %w", err)
	}
	got, err := sim.ReportData(ev.Quote)
	if err != nil {
		return fmt.Errorf("RA-TLS evidence: %w", err)
	}
	if got != want {
		return errors.New("RA-TLS evidence: quote REPORTDATA does not bind this certificate's public key")
	}
	return nil
}
