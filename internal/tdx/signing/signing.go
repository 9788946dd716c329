// Package signing signs and verifies reference-values documents as in-toto
// Statement v1 attestations inside DSSE envelopes, with Ed25519 or ECDSA
// P-256 keys (PKCS#8 PEM private keys, PKIX PEM public keys).
package signing

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"google.golang.org/protobuf/encoding/protojson"

	intoto "github.com/in-toto/attestation/go/v1"

	"github.com/tdforge/tdforge/internal/canonjson"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
)

// Identifiers used in the envelope and statement.
const (
	PayloadType   = "application/vnd.in-toto+json"
	StatementType = "https://in-toto.io/Statement/v1"
	PredicateType = "https://tdforge.dev/reference-values/v1"
)

// ErrPlainDocument is Verify's error for an unsigned reference-values
// document given where a DSSE envelope is expected.
var ErrPlainDocument = errors.New("signing: the input is an unsigned reference-values document, not a DSSE envelope")

// Key algorithms for GenerateKey.
const (
	Ed25519   = "ed25519"
	ECDSAP256 = "ecdsa-p256"
)

type subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

// statement is an in-toto Statement v1 whose predicate is kept as raw JSON,
// so numbers in the document are never rounded through a float.
type statement struct {
	Type          string          `json:"_type"`
	Subject       []subject       `json:"subject"`
	PredicateType string          `json:"predicateType"`
	Predicate     json.RawMessage `json:"predicate"`
}

// canonical decodes a reference-values document strictly and renders its
// canonical bytes.
func canonical(doc []byte) (*refvalues.Document, []byte, error) {
	d, err := refvalues.Decode(bytes.NewReader(doc))
	if err != nil {
		return nil, nil, err
	}
	c, err := d.Marshal()
	if err != nil {
		return nil, nil, err
	}
	return d, c, nil
}

// SubjectName is the statement subject's name for a document.
func SubjectName(d *refvalues.Document) string {
	if d.Image.Name == "" {
		return "reference-values.json"
	}
	return d.Image.Name + ".json"
}

// keypair is a DSSE signer/verifier over a supported key.
type keypair struct {
	priv  crypto.Signer
	pub   crypto.PublicKey
	keyID string
}

func (k *keypair) KeyID() (string, error)   { return k.keyID, nil }
func (k *keypair) Public() crypto.PublicKey { return k.pub }

func (k *keypair) Sign(_ context.Context, data []byte) ([]byte, error) {
	switch p := k.priv.(type) {
	case ed25519.PrivateKey:
		return ed25519.Sign(p, data), nil
	case *ecdsa.PrivateKey:
		h := sha256.Sum256(data)
		return ecdsa.SignASN1(rand.Reader, p, h[:])
	}
	return nil, errors.New("signing: no private key")
}

func (k *keypair) Verify(_ context.Context, data, sig []byte) error {
	switch p := k.pub.(type) {
	case ed25519.PublicKey:
		if ed25519.Verify(p, data, sig) {
			return nil
		}
	case *ecdsa.PublicKey:
		h := sha256.Sum256(data)
		if ecdsa.VerifyASN1(p, h[:], sig) {
			return nil
		}
	}
	return errors.New("bad signature")
}

// KeyID is the hex sha256 of the PKIX DER encoding of a public key.
func KeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(der)
	return hex.EncodeToString(h[:]), nil
}

func checkPublic(pub crypto.PublicKey) error {
	switch p := pub.(type) {
	case ed25519.PublicKey:
		return nil
	case *ecdsa.PublicKey:
		if p.Curve == elliptic.P256() {
			return nil
		}
		return fmt.Errorf("signing: unsupported key type: ECDSA on curve %s; use ed25519 or ecdsa-p256", p.Curve.Params().Name)
	}
	return fmt.Errorf("signing: unsupported key type %T; use ed25519 or ecdsa-p256", pub)
}

func pemBlock(b []byte, want, what string) ([]byte, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("signing: the %s is not PEM; want a %q block", what, want)
	}
	if blk.Type != want {
		hint := ""
		if blk.Type == "PUBLIC KEY" || blk.Type == "PRIVATE KEY" {
			hint = " (a public key was given where a private key is needed, or the reverse)"
		}
		return nil, fmt.Errorf("signing: the %s is a %q PEM block, want %q%s", what, blk.Type, want, hint)
	}
	return blk.Bytes, nil
}

// ParsePrivateKey parses a PKCS#8 PEM Ed25519 or ECDSA P-256 private key.
func ParsePrivateKey(keyPEM []byte) (crypto.Signer, error) {
	der, err := pemBlock(keyPEM, "PRIVATE KEY", "private key")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("signing: private key: %v", err)
	}
	var s crypto.Signer
	switch k := k.(type) {
	case ed25519.PrivateKey:
		s = k
	case *ecdsa.PrivateKey:
		s = k
	default:
		return nil, fmt.Errorf("signing: unsupported key type %T; use ed25519 or ecdsa-p256", k)
	}
	if err := checkPublic(s.Public()); err != nil {
		return nil, err
	}
	return s, nil
}

// ParsePublicKey parses a PKIX PEM Ed25519 or ECDSA P-256 public key.
func ParsePublicKey(pubPEM []byte) (crypto.PublicKey, error) {
	der, err := pemBlock(pubPEM, "PUBLIC KEY", "public key")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("signing: public key: %v", err)
	}
	if err := checkPublic(k); err != nil {
		return nil, err
	}
	return k, nil
}

// GenerateKey makes a new key pair; alg is "ed25519" or "ecdsa-p256".
func GenerateKey(alg string) (priv, pub []byte, err error) {
	var k crypto.Signer
	switch alg {
	case Ed25519:
		_, k, err = ed25519.GenerateKey(rand.Reader)
	case ECDSAP256:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, nil, fmt.Errorf("signing: unsupported key algorithm %q; use %q or %q", alg, Ed25519, ECDSAP256)
	}
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, nil, err
	}
	pder, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pder}), nil
}

func looksLikeEnvelope(b []byte) bool {
	var probe map[string]json.RawMessage
	if json.Unmarshal(b, &probe) != nil {
		return false
	}
	_, p := probe["payloadType"]
	_, s := probe["signatures"]
	return p || s
}

// Sign wraps the reference-values document doc in an in-toto statement
// (subject: "<image>.json" with the sha256 of the document's canonical
// bytes) and signs it into a DSSE envelope (JSON, trailing newline).
func Sign(doc []byte, keyPEM []byte) ([]byte, error) {
	if looksLikeEnvelope(doc) {
		return nil, errors.New("signing: the input is already a DSSE envelope; sign the reference-values JSON document itself")
	}
	d, canon, err := canonical(doc)
	if err != nil {
		return nil, fmt.Errorf("signing: %v", err)
	}
	priv, err := ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, err
	}
	id, err := KeyID(priv.Public())
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(canon)
	st := statement{
		Type:          StatementType,
		Subject:       []subject{{Name: SubjectName(d), Digest: map[string]string{"sha256": hex.EncodeToString(sum[:])}}},
		PredicateType: PredicateType,
		Predicate:     json.RawMessage(canon),
	}
	body, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	if err := validateStatement(body); err != nil {
		return nil, err
	}
	es, err := dsse.NewEnvelopeSigner(&keypair{priv: priv, pub: priv.Public(), keyID: id})
	if err != nil {
		return nil, err
	}
	env, err := es.SignPayload(context.Background(), PayloadType, body)
	if err != nil {
		return nil, fmt.Errorf("signing: %v", err)
	}
	out, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// validateStatement checks the statement against the in-toto v1 schema.
func validateStatement(body []byte) error {
	var s intoto.Statement
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(body, &s); err != nil {
		return fmt.Errorf("signing: the payload is not an in-toto statement: %v", err)
	}
	if err := s.Validate(); err != nil {
		return fmt.Errorf("signing: invalid in-toto statement: %v", err)
	}
	return nil
}

// Verify checks envelope's signature with the public key pubPEM, then the
// statement type, the predicate type, and that the subject digest is the
// sha256 of the embedded document's canonical bytes. It returns those
// canonical document bytes.
func Verify(envelope []byte, pubPEM []byte) ([]byte, error) {
	pub, err := ParsePublicKey(pubPEM)
	if err != nil {
		return nil, err
	}
	return VerifyKey(envelope, pub)
}

// VerifyKey is Verify with a parsed public key (ParsePublicKey), for
// callers that check many envelopes with one key.
func VerifyKey(envelope []byte, pub crypto.PublicKey) ([]byte, error) {
	id, err := KeyID(pub)
	if err != nil {
		return nil, err
	}
	var env dsse.Envelope
	if err := canonjson.Decode(bytes.NewReader(envelope), &env); err != nil {
		if _, _, derr := canonical(envelope); derr == nil {
			return nil, ErrPlainDocument
		}
		return nil, fmt.Errorf("signing: not a DSSE envelope: %v", err)
	}
	if len(env.Signatures) == 0 {
		return nil, errors.New("signing: the envelope is unsigned (no signatures)")
	}
	if env.PayloadType != PayloadType {
		return nil, fmt.Errorf("signing: envelope payload type %q, want %q", env.PayloadType, PayloadType)
	}
	ev, err := dsse.NewEnvelopeVerifier(&keypair{pub: pub, keyID: id})
	if err != nil {
		return nil, err
	}
	_, body, err := ev.VerifyAndDecode(context.Background(), &env)
	if err != nil {
		var ids []string
		for _, s := range env.Signatures {
			ids = append(ids, s.KeyID)
		}
		return nil, fmt.Errorf("signing: no signature verifies with the given public key (keyid %s; the envelope's signatures have keyids %q): the key is wrong or the payload was tampered with", id, ids)
	}
	if err := validateStatement(body); err != nil {
		return nil, err
	}
	var st statement
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("signing: statement: %v", err)
	}
	if st.Type != StatementType {
		return nil, fmt.Errorf("signing: statement type %q, want %q", st.Type, StatementType)
	}
	if st.PredicateType != PredicateType {
		return nil, fmt.Errorf("signing: predicate type %q, want %q (this is not a tdforge reference-values attestation)", st.PredicateType, PredicateType)
	}
	d, canon, err := canonical(st.Predicate)
	if err != nil {
		return nil, fmt.Errorf("signing: predicate: %v", err)
	}
	sum := sha256.Sum256(canon)
	want := hex.EncodeToString(sum[:])
	if len(st.Subject) != 1 {
		return nil, fmt.Errorf("signing: statement has %d subjects, want 1", len(st.Subject))
	}
	if got := st.Subject[0].Digest["sha256"]; got != want {
		return nil, fmt.Errorf("signing: subject digest sha256:%s does not match the embedded document (sha256:%s)", got, want)
	}
	if n := SubjectName(d); st.Subject[0].Name != n {
		return nil, fmt.Errorf("signing: subject name %q does not match the document's image (%q)", st.Subject[0].Name, n)
	}
	return canon, nil
}
