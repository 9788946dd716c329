// Package sim is the whole TDX simulator of dev images (policy
// tdx.simulate): the launch side hands the simulated platform to QEMU
// through fw_cfg (NewPlatform, FWCfg; `builder launch --simulate`), the
// simulated firmware in the guest (subpackage firmware, run by initd)
// fills the on-disk state (state.go), RTMRs is the simulated RTMR backend
// internal/guest/rtmr selects, and Simulator is the quoting enclave
// internal/tdx/quote selects.
//
// Quotes are structurally valid quote v4 bytes over the simulated
// registers, signed by a simulator attestation key whose QE report is
// signed by a simulator PCK certificate chained to a simulator root CA.
// NewPKI makes a fresh simulator PKI from crypto/rand for every launch
// (`builder launch --simulate`): it is never a build output and nothing
// public derives it, so only the launching host and the guest's initd hold
// its keys. The certificates carry the
// subject names go-tdx-guest's verifier requires ("Intel SGX Root CA" and so
// on) but an Organization of SimOrganization; they chain only to the
// simulator root, never to Intel's.
package sim

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"
)

// SimOrganization is the Organization of every simulator certificate.
const SimOrganization = "tdforge TDX simulator (NOT an Intel trust root)"

// Certificate subject common names go-tdx-guest's verifier insists on.
const (
	rootCN         = "Intel SGX Root CA"
	intermediateCN = "Intel SGX PCK Platform CA"
	pckCN          = "Intel SGX PCK Certificate"
)

// keyDomain names the simulated quoting enclave's fixed identity values.
const keyDomain = "tdforge/v1/tdxsim/"

// Fixed validity window, wide enough for any launch.
var (
	notBefore = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	notAfter  = time.Date(2049, 12, 31, 23, 59, 59, 0, time.UTC)
)

// Simulated platform identity carried in the PCK certificate's SGX extension.
var (
	SimFMSPC         = []byte{0x00, 0x80, 0x6f, 0x05, 0x00, 0x00} // 6 bytes
	SimPCEID         = []byte{0x00, 0x00}
	SimPCESVN uint16 = 11
	// SimCPUSVN is the simulated CPU SVN (16 components).
	SimCPUSVN = []byte{3, 3, 2, 2, 2, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0}
)

// SGX extension OIDs (Intel SGX PCK certificate profile).
var (
	oidSGX    = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1}
	oidPPID   = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 1}
	oidTCB    = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 2}
	oidPCEID  = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 3}
	oidFMSPC  = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 4}
	oidSGXTyp = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 5}
)

// signRaw signs SHA-256(msg) and returns the 64-byte r||s form quotes use.
func signRaw(k *ecdsa.PrivateKey, msg []byte) ([]byte, error) {
	d := sha256.Sum256(msg)
	der, err := ecdsa.SignASN1(rand.Reader, k, d[:])
	if err != nil {
		return nil, err
	}
	var sig struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &sig); err != nil {
		return nil, err
	}
	out := make([]byte, 64)
	sig.R.FillBytes(out[:32])
	sig.S.FillBytes(out[32:])
	return out, nil
}

// randomSerial returns a positive 16-byte certificate serial number.
func randomSerial() (*big.Int, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	b[0] &= 0x7f
	b[0] |= 0x01 // non-zero, positive, 16 bytes
	return new(big.Int).SetBytes(b), nil
}

func keyID(pub *ecdsa.PublicKey) []byte {
	raw, _ := x509.MarshalPKIXPublicKey(pub)
	h := sha256.Sum256(raw)
	return h[:20]
}

func subject(cn string) pkix.Name {
	return pkix.Name{CommonName: cn, Organization: []string{SimOrganization}, Country: []string{"XX"}}
}

// sgxExtension is the PCK certificate's Intel SGX extension value.
func sgxExtension(ppid []byte) ([]byte, error) {
	type intAttr struct {
		ID  asn1.ObjectIdentifier
		Val int
	}
	type octAttr struct {
		ID  asn1.ObjectIdentifier
		Val []byte
	}
	type enumAttr struct {
		ID  asn1.ObjectIdentifier
		Val asn1.Enumerated
	}
	var comps []any
	for i := 0; i < 16; i++ {
		comps = append(comps, intAttr{append(append(asn1.ObjectIdentifier{}, oidTCB...), i+1), int(SimCPUSVN[i])})
	}
	comps = append(comps, intAttr{append(append(asn1.ObjectIdentifier{}, oidTCB...), 17), int(SimPCESVN)})
	comps = append(comps, octAttr{append(append(asn1.ObjectIdentifier{}, oidTCB...), 18), SimCPUSVN})
	compsDER, err := marshalEach(comps)
	if err != nil {
		return nil, err
	}
	tcb := struct {
		ID    asn1.ObjectIdentifier
		Comps []asn1.RawValue
	}{oidTCB, compsDER}
	items := []any{
		octAttr{oidPPID, ppid},
		tcb,
		octAttr{oidPCEID, SimPCEID},
		octAttr{oidFMSPC, SimFMSPC},
		enumAttr{oidSGXTyp, 0}, // Standard
	}
	seq, err := marshalEach(items)
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(seq)
}

// marshalEach DER-encodes each value, for a SEQUENCE of mixed types.
func marshalEach(vals []any) ([]asn1.RawValue, error) {
	out := make([]asn1.RawValue, 0, len(vals))
	for _, v := range vals {
		b, err := asn1.Marshal(v)
		if err != nil {
			return nil, err
		}
		out = append(out, asn1.RawValue{FullBytes: b})
	}
	return out, nil
}

func pemCert(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func pemKey(k *ecdsa.PrivateKey) (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), nil
}

// certTemplate is what every simulator certificate shares: a random
// serial, the subject cn, the validity window, basic constraints and the
// subject key ID of key.
func certTemplate(cn string, key *ecdsa.PrivateKey) (*x509.Certificate, error) {
	sn, err := randomSerial()
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          sn,
		Subject:               subject(cn),
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		SubjectKeyId:          keyID(&key.PublicKey),
	}, nil
}

// caTemplate is certTemplate for a CA that signs certificates and CRLs
// with at most maxPathLen CAs below it.
func caTemplate(cn string, key *ecdsa.PrivateKey, maxPathLen int) (*x509.Certificate, error) {
	tmpl, err := certTemplate(cn, key)
	if err != nil {
		return nil, err
	}
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	tmpl.IsCA = true
	tmpl.MaxPathLen = maxPathLen
	tmpl.MaxPathLenZero = maxPathLen == 0
	return tmpl, nil
}

// issue signs tmpl for key with the parent certificate's key signer.
func issue(what string, tmpl, parent *x509.Certificate, key, signer *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, fmt.Errorf("sim: %s certificate: %w", what, err)
	}
	return der, nil
}

// NewPKI makes a fresh simulator PKI from crypto/rand: root CA ->
// intermediate ("PCK Platform CA") -> PCK leaf with the SGX extension, plus
// the attestation key. Every call gives new keys; `builder launch
// --simulate` calls it once per launch.
func NewPKI() (*PKI, error) {
	keys := map[string]*ecdsa.PrivateKey{}
	for _, name := range []string{"root", "intermediate", "pck", "attestation"} {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("sim: %s key: %w", name, err)
		}
		keys[name] = k
	}
	rootKey, interKey, pckKey, attKey := keys["root"], keys["intermediate"], keys["pck"], keys["attestation"]

	rootTmpl, err := caTemplate(rootCN, rootKey, 1)
	if err != nil {
		return nil, err
	}
	rootDER, err := issue("root", rootTmpl, rootTmpl, rootKey, rootKey)
	if err != nil {
		return nil, err
	}
	root, _ := x509.ParseCertificate(rootDER)

	interTmpl, err := caTemplate(intermediateCN, interKey, 0)
	if err != nil {
		return nil, err
	}
	interDER, err := issue("intermediate", interTmpl, root, interKey, rootKey)
	if err != nil {
		return nil, err
	}
	inter, _ := x509.ParseCertificate(interDER)

	ppid := make([]byte, 16)
	if _, err := rand.Read(ppid); err != nil {
		return nil, err
	}
	sgx, err := sgxExtension(ppid)
	if err != nil {
		return nil, fmt.Errorf("sim: SGX extension: %w", err)
	}
	// Exactly six extensions, as in Intel's PCK profile: authority and
	// subject key IDs, CRL distribution point, key usage, basic
	// constraints and the SGX extension.
	pckTmpl, err := certTemplate(pckCN, pckKey)
	if err != nil {
		return nil, err
	}
	pckTmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment
	pckTmpl.CRLDistributionPoints = []string{"https://tdx-simulator.invalid/pckcrl"}
	pckTmpl.ExtraExtensions = []pkix.Extension{{Id: oidSGX, Value: sgx}}
	pckDER, err := issue("PCK", pckTmpl, inter, pckKey, interKey)
	if err != nil {
		return nil, err
	}

	pckPEM, err := pemKey(pckKey)
	if err != nil {
		return nil, err
	}
	attPEM, err := pemKey(attKey)
	if err != nil {
		return nil, err
	}
	return &PKI{
		RootCert:         pemCert(rootDER),
		IntermediateCert: pemCert(interDER),
		PCKCert:          pemCert(pckDER),
		PCKKey:           pckPEM,
		AttestationKey:   attPEM,
	}, nil
}

// ParseRoot returns a pool holding the root certificate of a published
// sim-root.pem, which must be one PEM certificate and nothing else (a
// file with the simulator's private keys is not one).
func ParseRoot(pemCert []byte) (*x509.CertPool, error) {
	c, err := parseCertPEM("root", string(pemCert))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return pool, nil
}

// RootPool returns a pool holding the simulator root certificate, for
// verify.Options.TrustedRoots. A PKI whose root does not parse yields an
// empty pool, which trusts nothing.
func RootPool(pki *PKI) *x509.CertPool {
	if pki != nil {
		if pool, err := ParseRoot([]byte(pki.RootCert)); err == nil {
			return pool
		}
	}
	return x509.NewCertPool()
}

func parseCertPEM(what, s string) (*x509.Certificate, error) {
	b, rest := pem.Decode([]byte(s))
	if b == nil || b.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("sim: %s certificate is not a single PEM CERTIFICATE block", what)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("sim: %s certificate: %w", what, err)
	}
	return c, nil
}

func parseKeyPEM(what, s string) (*ecdsa.PrivateKey, error) {
	b, _ := pem.Decode([]byte(s))
	if b == nil || b.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("sim: %s is not a PEM PKCS#8 PRIVATE KEY", what)
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("sim: %s: %w", what, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("sim: %s must be an ECDSA P-256 key", what)
	}
	return ek, nil
}
