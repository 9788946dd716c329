package kbs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"math/big"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// The wire shapes carry the field names of Trustee's protocol document
// (kbs/docs/kbs_attestation_protocol.md).
func TestWireGolden(t *testing.T) {
	att := Attestation{
		RuntimeData: RuntimeData{Nonce: "bm9uY2U=", TEEPubKey: JWK{Kty: "EC", Crv: "P-256", Alg: KeyAlg, X: "eA", Y: "eQ"}},
		TEEEvidence: CompositeEvidence{PrimaryEvidence: json.RawMessage(`{"quote":"cQ=="}`)},
	}
	got, err := json.Marshal(att)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"runtime-data":{"nonce":"bm9uY2U=","tee-pubkey":{"kty":"EC","alg":"ECDH-ES+A256KW","crv":"P-256","x":"eA","y":"eQ"}},"tee-evidence":{"primary_evidence":{"quote":"cQ=="},"additional_evidence":""}}`
	if string(got) != want {
		t.Fatalf("attestation\n got %s\nwant %s", got, want)
	}
	got, _ = json.Marshal(Request{Version: Version, TEE: TEE, ExtraParams: json.RawMessage(`{}`)})
	if want := `{"version":"0.4.0","tee":"tdx","extra-params":{}}`; string(got) != want {
		t.Fatalf("request %s, want %s", got, want)
	}
	// Trustee's KBS answers extra-params "" (a string): the default hash.
	var ch Challenge
	if err := json.Unmarshal([]byte(`{"nonce":"abc","extra-params":""}`), &ch); err != nil || ch.Nonce != "abc" || SelectedHash(ch.ExtraParams) != "sha384" {
		t.Fatalf("challenge %+v %v", ch, err)
	}
	if h := SelectedHash(json.RawMessage(`{"selected-hash-algorithm":"SHA512"}`)); h != "sha512" {
		t.Fatalf("selected hash %q", h)
	}
	var ei ErrorInfo
	if err := json.Unmarshal([]byte(`{"type":"https://github.com/confidential-containers/kbs/errors/PolicyDeny","detail":"no"}`), &ei); err != nil || ei.Detail != "no" {
		t.Fatalf("error info %+v %v", ei, err)
	}
	ev, _ := json.Marshal(TDXEvidence{Quote: []byte{1}, CCEventLog: []byte{2}})
	if want := `{"quote":"AQ==","cc_eventlog":"Ag=="}`; string(ev) != want {
		t.Fatalf("TDX evidence %s, want %s", ev, want)
	}
}

// REPORTDATA is the hash of the canonical runtime-data written out by hand
// here, padded with zeros.
func TestReportDataKnownAnswer(t *testing.T) {
	rd := RuntimeData{Nonce: "n<&>\"\n", TEEPubKey: JWK{Kty: "EC", Crv: "P-256", Alg: KeyAlg, X: "xx", Y: "yy"}}
	got, err := ReportData(rd, "", "sha384")
	if err != nil {
		t.Fatal(err)
	}
	canon := `{"additional-evidence":"","nonce":"n<&>\"\n","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"xx","y":"yy"}}`
	want := sha512.Sum384([]byte(canon))
	var w [64]byte
	copy(w[:], want[:])
	if got != w {
		t.Fatalf("REPORTDATA %x\nwant %x (SHA-384 of %s)", got, w, canon)
	}
	if _, err := ReportData(rd, "", "md5"); err == nil {
		t.Fatal("md5 accepted")
	}
}

// The broker's JWE is Trustee's flattened serialization, and decrypts with
// the key a client would send.
func TestJWEShape(t *testing.T) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.ECDH_ES_A256KW, Key: &priv.PublicKey}, nil)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := enc.Encrypt([]byte("key"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(obj.FullSerialize()), &m); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if got := strings.Join(keys, ","); got != "ciphertext,encrypted_key,iv,protected,tag" {
		t.Fatalf("JWE fields %s", got)
	}
	j, err := jose.ParseEncryptedJSON(obj.FullSerialize(), []jose.KeyAlgorithm{jose.ECDH_ES_A256KW}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := j.Decrypt(priv); err != nil || string(p) != "key" {
		t.Fatalf("decrypt %q %v", p, err)
	}
	k := ecJWK(&priv.PublicKey)
	if k.Kty != "EC" || k.Crv != "P-256" || k.Alg != KeyAlg || len(k.X) != 43 || len(k.Y) != 43 {
		t.Fatalf("tee-pubkey %+v", k)
	}
}

func cert(t *testing.T, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if parent == nil {
		parent, parentKey = tmpl, k
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, k
}

func TestVerifyPin(t *testing.T) {
	now := time.Now()
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "broker CA"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	ca, caKey := cert(t, caT, nil, nil)
	leafT := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "broker"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("10.0.2.2")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leaf, _ := cert(t, leafT, ca, caKey)
	rogue, _ := cert(t, leafT, nil, nil) // self-signed, same names

	pinLeaf, pinCA := sha256.Sum256(leaf.Raw), sha256.Sum256(ca.Raw)
	for _, c := range []struct {
		name  string
		chain []*x509.Certificate
		pin   [32]byte
		host  string
		ok    bool
	}{
		{"leaf pinned", []*x509.Certificate{leaf}, pinLeaf, "10.0.2.2", true},
		{"CA pinned", []*x509.Certificate{leaf, ca}, pinCA, "10.0.2.2", true},
		{"CA pinned, another host", []*x509.Certificate{leaf, ca}, pinCA, "10.0.2.3", false},
		{"rogue leaf presenting the pinned CA", []*x509.Certificate{rogue, ca}, pinCA, "10.0.2.2", false},
		{"another pin", []*x509.Certificate{leaf, ca}, sha256.Sum256([]byte("x")), "10.0.2.2", false},
		{"no certificate", nil, pinLeaf, "10.0.2.2", false},
	} {
		err := verifyPin(c.chain, c.pin, c.host)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrPinMismatch)) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

func TestFetchRefusesBadSetup(t *testing.T) {
	q := func([64]byte) ([]byte, error) { return nil, nil }
	for _, c := range []struct {
		c    Client
		id   string
		want string
	}{
		{Client{URL: "http://10.0.2.2:8444", CASHA256: [32]byte{1}, Quote: q}, "a/b/c", "want https"},
		{Client{URL: "https://10.0.2.2:8444", Quote: q}, "a/b/c", "no ca_sha256 pin"},
		{Client{URL: "https://10.0.2.2:8444", CASHA256: [32]byte{1}, Quote: q}, "a/../c", "resource id"},
	} {
		_, err := c.c.Fetch(context.Background(), c.id)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v %s: %v, want %q", c.c.URL, c.id, err, c.want)
		}
	}
}

func TestRefusedSummary(t *testing.T) {
	for reason, want := range map[string]string{
		"RTMR2: the quote's RTMR2 is ab…, the reference expects cd… (appraisal against a.json: img 1)": "RTMR2 mismatch",
		"resource a/b/c allows images x, not y (appraisal: reference y.json)":                          "resource a/b/c allows images x, not y",
		"not attested: POST /kbs/v0/auth and /kbs/v0/attest first":                                     "not attested",
	} {
		if got := (&RefusedError{Status: 401, Reason: reason}).Summary(); got != want {
			t.Errorf("%q: %q, want %q", reason, got, want)
		}
	}
}
