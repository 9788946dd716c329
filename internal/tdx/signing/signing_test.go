package signing

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/register"
)

func sampleDoc(t *testing.T) []byte {
	t.Helper()
	d := &refvalues.Document{
		Schema:   refvalues.Schema,
		Image:    refvalues.Image{Name: "tiny-dev", Version: "1", Dev: true, Simulated: true},
		Platform: refvalues.Platform{Name: "qemu-tcg", QEMU: "7.2", OVMF: "2022.11", Version: 1},
		Payloads: []refvalues.Payload{{Name: "model", Partition: 2, RootHash: strings.Repeat("ab", 32), DataSize: 1 << 40, HashOffset: 1<<40 + 4096}},
		Events:   map[string][]refvalues.Event{"rtmr3": {{Type: "tdforge-runtime-v1", Description: "payload:model <&>", Digest: strings.Repeat("cd", 48)}}},
		Source:   "builder",
	}
	d.Registers.Set(register.MRTD, bytes.Repeat([]byte{1}, 48))
	d.Registers.Set(register.RTMR3, bytes.Repeat([]byte{3}, 48))
	b, err := d.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func keys(t *testing.T, alg string) ([]byte, []byte) {
	t.Helper()
	priv, pub, err := GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

func TestRoundTrip(t *testing.T) {
	doc := sampleDoc(t)
	for _, alg := range []string{Ed25519, ECDSAP256} {
		priv, pub := keys(t, alg)
		env, err := Sign(doc, priv)
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		got, err := Verify(env, pub)
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		if !bytes.Equal(got, doc) {
			t.Fatalf("%s: verified document differs", alg)
		}
		var e dsse.Envelope
		if err := json.Unmarshal(env, &e); err != nil || e.PayloadType != PayloadType || len(e.Signatures) != 1 {
			t.Fatalf("%s: envelope %s", alg, env)
		}
		body, _ := e.DecodeB64Payload()
		var st statement
		json.Unmarshal(body, &st)
		sum := sha256.Sum256(doc)
		if st.Type != StatementType || st.PredicateType != PredicateType || st.Subject[0].Name != "tiny-dev.json" || st.Subject[0].Digest["sha256"] != hex.EncodeToString(sum[:]) {
			t.Fatalf("%s: statement %s", alg, body)
		}
		p, _ := ParsePublicKey(pub)
		id, _ := KeyID(p)
		if e.Signatures[0].KeyID != id {
			t.Fatalf("keyid %s, want %s", e.Signatures[0].KeyID, id)
		}
	}
}

// A non-canonical but valid document is signed in its canonical form, and
// large integers survive exactly.
func TestCanonicalizes(t *testing.T) {
	doc := sampleDoc(t)
	var compact bytes.Buffer
	json.Compact(&compact, doc)
	priv, pub := keys(t, Ed25519)
	env, err := Sign(compact.Bytes(), priv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Verify(env, pub)
	if err != nil || !bytes.Equal(got, doc) {
		t.Fatalf("want the canonical document back: %v", err)
	}
	if !bytes.Contains(got, []byte(`"hash_offset": 1099511631872`)) {
		t.Fatal("large integer changed")
	}
}

func TestErrors(t *testing.T) {
	doc := sampleDoc(t)
	priv, pub := keys(t, Ed25519)
	_, otherPub := keys(t, ECDSAP256)
	env, err := Sign(doc, priv)
	if err != nil {
		t.Fatal(err)
	}
	var e dsse.Envelope
	json.Unmarshal(env, &e)
	reenc := func(f func(*dsse.Envelope)) []byte {
		c := e
		c.Signatures = append([]dsse.Signature{}, e.Signatures...)
		f(&c)
		b, _ := json.Marshal(c)
		return b
	}
	body, _ := e.DecodeB64Payload()
	tampered := bytes.Replace(body, []byte("tiny-dev"), []byte("evil-dev"), -1)

	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaDER, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rsaDER})
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384DER, _ := x509.MarshalPKIXPublicKey(p384.Public())
	p384PEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: p384DER})

	for name, tc := range map[string]struct {
		err  error
		want string
	}{
		"unsigned document": {verifyErr(doc, pub), "unsigned reference-values document"},
		"no signatures":     {verifyErr(reenc(func(c *dsse.Envelope) { c.Signatures = nil }), pub), "unsigned (no signatures)"},
		"wrong key":         {verifyErr(env, otherPub), "no signature verifies"},
		"tampered payload":  {verifyErr(reenc(func(c *dsse.Envelope) { c.Payload = base64.StdEncoding.EncodeToString(tampered) }), pub), "tampered"},
		"payload type":      {verifyErr(reenc(func(c *dsse.Envelope) { c.PayloadType = "text/plain" }), pub), "payload type"},
		"garbage":           {verifyErr([]byte("not json"), pub), "not a DSSE envelope"},
		"rsa key":           {signErr(doc, rsaPEM), "unsupported key type *rsa.PrivateKey"},
		"p384 public":       {verifyErr(env, p384PEM), "P-384"},
		"public as private": {signErr(doc, pub), "public key was given"},
		"not pem":           {signErr(doc, []byte("hello")), "not PEM"},
		"already signed":    {signErr(env, priv), "already a DSSE envelope"},
		"bad document":      {signErr([]byte(`{"schema":"other"}`), priv), "not supported"},
		"unknown field":     {signErr([]byte(`{"schema":"tdforge.reference-values/v1","x":1}`), priv), "unknown field"},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", name, tc.err, tc.want)
		}
	}
	if err := verifyErr(doc, pub); !errors.Is(err, ErrPlainDocument) {
		t.Errorf("a plain document: %v, want ErrPlainDocument", err)
	}
	if _, _, err := GenerateKey("rsa"); err == nil || !strings.Contains(err.Error(), "unsupported key algorithm") {
		t.Errorf("GenerateKey(rsa): %v", err)
	}
}

func verifyErr(env, pub []byte) error { _, err := Verify(env, pub); return err }
func signErr(doc, key []byte) error   { _, err := Sign(doc, key); return err }

// signRaw signs an arbitrary statement body, as an attacker holding the key
// (or a buggy signer) could.
func signRaw(t *testing.T, body, keyPEM []byte) []byte {
	t.Helper()
	k, err := ParsePrivateKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := KeyID(k.Public())
	es, _ := dsse.NewEnvelopeSigner(&keypair{priv: k, pub: k.Public(), keyID: id})
	e, err := es.SignPayload(context.Background(), PayloadType, body)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(e)
	return b
}

// TestStatementChecks: correctly signed envelopes whose statement is wrong.
func TestStatementChecks(t *testing.T) {
	doc := sampleDoc(t)
	priv, pub := keys(t, ECDSAP256)
	sum := sha256.Sum256(doc)
	good := statement{Type: StatementType, Subject: []subject{{Name: "tiny-dev.json", Digest: map[string]string{"sha256": hex.EncodeToString(sum[:])}}}, PredicateType: PredicateType, Predicate: doc}
	for name, tc := range map[string]struct {
		mut  func(*statement)
		want string
	}{
		"ok":             {func(*statement) {}, ""},
		"digest":         {func(s *statement) { s.Subject[0].Digest["sha256"] = strings.Repeat("0", 64) }, "does not match the embedded document"},
		"predicate type": {func(s *statement) { s.PredicateType = "https://slsa.dev/provenance/v1" }, "predicate type"},
		"statement type": {func(s *statement) { s.Type = "https://in-toto.io/Statement/v0.1" }, "statement type"},
		"subject name":   {func(s *statement) { s.Subject[0].Name = "other.json" }, "subject name"},
		"bad predicate":  {func(s *statement) { s.Predicate = json.RawMessage(`{"schema":"x"}`) }, "predicate"},
		"two subjects":   {func(s *statement) { s.Subject = append(s.Subject, s.Subject[0]) }, "2 subjects"},
	} {
		s := good
		s.Subject = []subject{{Name: good.Subject[0].Name, Digest: map[string]string{"sha256": good.Subject[0].Digest["sha256"]}}}
		tc.mut(&s)
		body, _ := json.Marshal(s)
		_, err := Verify(signRaw(t, body, priv), pub)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", name, err, tc.want)
		}
	}
}
