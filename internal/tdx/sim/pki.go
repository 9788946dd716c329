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
// The simulator PKI is derived deterministically from a seed, so a rebuilt
// image carries a byte-identical root certificate. The certificates carry the
// subject names go-tdx-guest's verifier requires ("Intel SGX Root CA" and so
// on) but an Organization of SimOrganization; they chain only to the
// simulator root, never to Intel's.
package sim

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
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

// keyDomain separates seed-derived values from any other use of the seed.
// It keeps the package's old name: changing it would change every derived
// key and certificate.
const keyDomain = "tdforge/v1/tdxsim/"

// Fixed validity window: certificates must not depend on the build time.
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

// MinSeedLen is the shortest seed GeneratePKI accepts.
const MinSeedLen = 16

// DeriveKey derives a P-256 private key from seed and label: the scalar is
// SHA-256(domain || label || 0x00 || counter || seed), retried with the next
// counter in the (negligible) case it is not in [1, n-1].
func DeriveKey(seed []byte, label string) (*ecdsa.PrivateKey, error) {
	for ctr := uint32(0); ctr < 16; ctr++ {
		h := sha256.New()
		h.Write([]byte(keyDomain + label))
		h.Write([]byte{0})
		var c [4]byte
		binary.BigEndian.PutUint32(c[:], ctr)
		h.Write(c[:])
		h.Write(seed)
		k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), h.Sum(nil))
		if err == nil {
			return k, nil
		}
	}
	return nil, errors.New("sim: could not derive a P-256 key from the seed")
}

// derive returns n deterministic bytes for label (SHA-256 counter mode).
func derive(seed []byte, label string, n int) []byte {
	var out []byte
	for ctr := uint32(0); len(out) < n; ctr++ {
		h := sha256.New()
		h.Write([]byte(keyDomain + "bytes/" + label))
		h.Write([]byte{0})
		var c [4]byte
		binary.BigEndian.PutUint32(c[:], ctr)
		h.Write(c[:])
		h.Write(seed)
		out = h.Sum(out)
	}
	return out[:n]
}

// DeterministicSigner is a crypto.Signer producing RFC 6979 deterministic
// ECDSA signatures: it ignores the caller's random source and asks
// crypto/ecdsa for the RFC 6979 nonce (a nil random source), so the same key
// and digest always give the same signature.
type DeterministicSigner struct{ Key *ecdsa.PrivateKey }

// Public returns the public key.
func (s DeterministicSigner) Public() crypto.PublicKey { return s.Key.Public() }

// Sign signs digest (already hashed with opts.HashFunc()) deterministically
// and returns an ASN.1 DER signature.
func (s DeterministicSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts == nil || opts.HashFunc() == 0 {
		return nil, errors.New("sim: deterministic ECDSA needs the digest's hash function")
	}
	return s.Key.Sign(nil, digest, opts)
}

// signRaw signs SHA-256(msg) and returns the 64-byte r||s form quotes use.
func signRaw(k *ecdsa.PrivateKey, msg []byte) ([]byte, error) {
	d := sha256.Sum256(msg)
	der, err := DeterministicSigner{k}.Sign(nil, d[:], crypto.SHA256)
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

func serial(seed []byte, label string) *big.Int {
	b := derive(seed, "serial/"+label, 16)
	b[0] &= 0x7f
	b[0] |= 0x01 // non-zero, positive, 16 bytes
	return new(big.Int).SetBytes(b)
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
func sgxExtension(seed []byte) ([]byte, error) {
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
		octAttr{oidPPID, derive(seed, "ppid", 16)},
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

// certTemplate is what every simulator certificate shares: the serial
// derived from seed and name, the subject cn, the validity window, basic
// constraints and the subject key ID of key.
func certTemplate(seed []byte, name, cn string, key *ecdsa.PrivateKey) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          serial(seed, name),
		Subject:               subject(cn),
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
}

// issue signs tmpl for key with the parent certificate's key signer.
func issue(what string, tmpl, parent *x509.Certificate, key, signer *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.CreateCertificate(nil, tmpl, parent, &key.PublicKey, DeterministicSigner{signer})
	if err != nil {
		return nil, fmt.Errorf("sim: %s certificate: %w", what, err)
	}
	return der, nil
}

// GeneratePKI derives the simulator PKI from seed: root CA -> intermediate
// ("PCK Platform CA") -> PCK leaf with the SGX extension, plus the
// attestation key. The same seed always yields byte-identical output.
func GeneratePKI(seed []byte) (*PKI, error) {
	if len(seed) < MinSeedLen {
		return nil, fmt.Errorf("sim: PKI seed is %d bytes; use at least %d random bytes", len(seed), MinSeedLen)
	}
	keys := map[string]*ecdsa.PrivateKey{}
	for _, name := range []string{"root", "intermediate", "pck", "attestation"} {
		k, err := DeriveKey(seed, name)
		if err != nil {
			return nil, err
		}
		keys[name] = k
	}
	rootKey, interKey, pckKey, attKey := keys["root"], keys["intermediate"], keys["pck"], keys["attestation"]

	rootTmpl := certTemplate(seed, "root", rootCN, rootKey)
	rootTmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	rootTmpl.IsCA = true
	rootTmpl.MaxPathLen = 1
	rootDER, err := issue("root", rootTmpl, rootTmpl, rootKey, rootKey)
	if err != nil {
		return nil, err
	}
	root, _ := x509.ParseCertificate(rootDER)

	interTmpl := certTemplate(seed, "intermediate", intermediateCN, interKey)
	interTmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	interTmpl.IsCA = true
	interTmpl.MaxPathLen = 0
	interTmpl.MaxPathLenZero = true
	interDER, err := issue("intermediate", interTmpl, root, interKey, rootKey)
	if err != nil {
		return nil, err
	}
	inter, _ := x509.ParseCertificate(interDER)

	sgx, err := sgxExtension(seed)
	if err != nil {
		return nil, fmt.Errorf("sim: SGX extension: %w", err)
	}
	// Exactly six extensions, as in Intel's PCK profile: authority and
	// subject key IDs, CRL distribution point, key usage, basic
	// constraints and the SGX extension.
	pckTmpl := certTemplate(seed, "pck", pckCN, pckKey)
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

// RootPool returns a pool holding the simulator root certificate, for
// verify.Options.TrustedRoots. A PKI whose root does not parse yields an
// empty pool, which trusts nothing.
func RootPool(pki *PKI) *x509.CertPool {
	pool := x509.NewCertPool()
	if pki != nil {
		if c, err := parseCertPEM("root", pki.RootCert); err == nil {
			pool.AddCert(c)
		}
	}
	return pool
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
