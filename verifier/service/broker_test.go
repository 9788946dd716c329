package service

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/testutil/simtd"

	"github.com/tdforge/tdforge/internal/testutil/syncbuf"

	"github.com/go-jose/go-jose/v4"

	resource "github.com/tdforge/tdforge/internal/inputs/secret"
	"github.com/tdforge/tdforge/internal/tdx/kbs"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/verifier/broker"
	"github.com/tdforge/tdforge/verifier/nonce"
	"github.com/tdforge/tdforge/verifier/result"
	"github.com/tdforge/tdforge/verifier/verify"
)

const resID = "tdforge/dev/model"

type brokerFixture struct {
	td    *td
	srv   *httptest.Server
	value []byte // the resource's value
	log   *syncbuf.Buffer
	clock *time.Duration
	res   string // the resource directory
}

// newBroker serves the TD's evidence recorded as reference image img, and
// resource resID allowing grants, over HTTPS.
func newBroker(t *testing.T, img refvalues.Image, grants []resource.Grant, edits ...func(cfg *Config, refs string)) *brokerFixture {
	t.Helper()
	d := newTD(t)
	refs, res := t.TempDir(), t.TempDir()
	d.writeReference(t, refs, img.Name+"-"+img.Version+".json", img)
	r, err := resource.Create(res, resID, grants)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ks, _ := result.NewKeySet([]*ecdsa.PrivateKey{key}, 5*time.Minute)
	ni, _ := nonce.New([]byte(secret), time.Minute)
	var skew time.Duration
	lg := &syncbuf.Buffer{}
	cfg := Config{ReferenceDir: refs, Dev: true, AllowSimulated: true, SimRoots: sim.RootPool(d.pki), Keys: ks, Nonces: ni,
		Log: log.New(lg, "", 0), Resources: res, Now: func() time.Time { return time.Now().Add(skew) }}
	for _, e := range edits {
		e(&cfg, refs)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(s.Handler())
	t.Cleanup(srv.Close)
	return &brokerFixture{td: d, srv: srv, value: r.Value, log: lg, clock: &skew, res: res}
}

func (f *brokerFixture) client() *kbs.Client {
	return &kbs.Client{
		URL: f.srv.URL, CASHA256: sha256.Sum256(f.srv.Certificate().Raw), Quote: f.td.sim.Quote,
		Extra: func() ([]byte, []byte, []byte, string) { return f.td.rtlog, f.td.ccel, f.td.table, "" },
	}
}

func simImage() refvalues.Image { return refImage() }

func refused(t *testing.T, err error, status int, want ...string) {
	t.Helper()
	var re *kbs.RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("want a refusal (HTTP %d), got %v", status, err)
	}
	if re.Status != status {
		t.Fatalf("status %d, want %d: %s", re.Status, status, re.Reason)
	}
	for _, w := range want {
		if !strings.Contains(re.Reason, w) {
			t.Fatalf("reason %q does not say %q", re.Reason, w)
		}
	}
}

func TestBrokerReleasesToHonestTD(t *testing.T) {
	f := newBroker(t, simImage(), []resource.Grant{{Image: "sim-image"}})
	got, err := f.client().Fetch(context.Background(), resID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, f.value) {
		t.Fatal("the decrypted resource is not the file's value")
	}
	lg := f.log.String()
	if !strings.Contains(lg, "released") || !strings.Contains(lg, "sim-image-1.json") {
		t.Fatalf("the log does not record the release and its appraisal:\n%s", lg)
	}
	if strings.Contains(lg, hex.EncodeToString(f.value[:8])) {
		t.Fatal("the log holds the resource value")
	}
}

// tampered quotes as the TD would with another RTMR2 (another kernel
// command line or initrd).
func tampered(t *testing.T, d *td) *sim.Simulator {
	t.Helper()
	q, err := d.sim.Quote([64]byte{})
	if err != nil {
		t.Fatal(err)
	}
	pq, _, err := verify.ParseQuote(q)
	if err != nil {
		t.Fatal(err)
	}
	b := pq.GetTdQuoteBody()
	rt := b.GetRtmrs()
	regs := sim.Registers{Platform: sim.Platform{
		MRTD: hex.EncodeToString(b.GetMrTd()), TDAttributes: hex.EncodeToString(b.GetTdAttributes()), XFAM: hex.EncodeToString(b.GetXfam()),
		MRSEAM: hex.EncodeToString(b.GetMrSeam()), TEETCBSVN: hex.EncodeToString(b.GetTeeTcbSvn()),
		RTMR: [3]string{hex.EncodeToString(rt[0]), hex.EncodeToString(rt[1]), strings.Repeat("ab", 48)},
	}, RTMR3: hex.EncodeToString(rt[3])}
	return simtd.New(t, d.pki, &regs).Simulator
}

func TestBrokerRefusesTamperedRTMR2(t *testing.T) {
	f := newBroker(t, simImage(), []resource.Grant{{Image: "sim-image"}})
	c := f.client()
	c.Quote = tampered(t, f.td).Quote
	_, err := c.Fetch(context.Background(), resID)
	refused(t, err, http.StatusUnauthorized, "RTMR2")
	if lg := f.log.String(); !strings.Contains(lg, "refused") || !strings.Contains(lg, "RTMR2") || !strings.Contains(lg, "sim-image-1.json") {
		t.Fatalf("the log does not name the appraisal and the failing check:\n%s", lg)
	}
}

func TestBrokerRefusesAnotherImage(t *testing.T) {
	other := simImage()
	other.Name = "other-image"
	f := newBroker(t, other, []resource.Grant{{Image: "sim-image"}})
	_, err := f.client().Fetch(context.Background(), resID)
	refused(t, err, http.StatusForbidden, "allows images sim-image, not other-image", "other-image-1.json")
}

func TestBrokerRefusesVersionNotAllowed(t *testing.T) {
	f := newBroker(t, simImage(), []resource.Grant{{Image: "sim-image", Versions: []string{">=2.0.0"}}})
	_, err := f.client().Fetch(context.Background(), resID)
	refused(t, err, http.StatusForbidden, "only at versions >=2.0.0")
}

func TestBrokerRefusesUnboundRuntimeData(t *testing.T) {
	f := newBroker(t, simImage(), []resource.Grant{{Image: "sim-image"}})
	c := f.client()
	c.Quote = func(rd [64]byte) ([]byte, error) { rd[0] ^= 1; return f.td.sim.Quote(rd) }
	_, err := c.Fetch(context.Background(), resID)
	refused(t, err, http.StatusUnauthorized, "REPORTDATA does not bind runtime-data")
}

func TestBrokerRefusesWrongPin(t *testing.T) {
	f := newBroker(t, simImage(), []resource.Grant{{Image: "sim-image"}})
	c := f.client()
	c.CASHA256[0] ^= 1
	_, err := c.Fetch(context.Background(), resID)
	var te *kbs.TransportError
	if !errors.As(err, &te) || !errors.Is(err, kbs.ErrPinMismatch) || !strings.Contains(err.Error(), hex.EncodeToString(c.CASHA256[:])) {
		t.Fatalf("want a pin mismatch naming the pin, got %v", err)
	}
	if strings.Contains(f.log.String(), "kbs auth") {
		t.Fatal("the request reached the broker")
	}
}

// raw is a hand-driven RCAR exchange (to replay and reorder steps).
type raw struct {
	t      *testing.T
	f      *brokerFixture
	cookie string
}

func (r *raw) do(method, path string, body any) (int, []byte) {
	r.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, r.f.srv.URL+path, rd)
	if r.cookie != "" {
		req.AddCookie(&http.Cookie{Name: kbs.Cookie, Value: r.cookie})
	}
	resp, err := r.f.srv.Client().Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Name == kbs.Cookie {
			r.cookie = c.Value
		}
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// auth starts a session and returns its nonce.
func (r *raw) auth() string {
	r.t.Helper()
	code, b := r.do("POST", kbs.PathAuth, kbs.Request{Version: kbs.Version, TEE: "tdx", ExtraParams: json.RawMessage(`{}`)})
	var ch kbs.Challenge
	if code != 200 || json.Unmarshal(b, &ch) != nil {
		r.t.Fatalf("auth: %d %s", code, b)
	}
	return ch.Nonce
}

// attestation is the TD's honest answer to nonce.
func (r *raw) attestation(n string) kbs.Attestation {
	r.t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	x, y := k.PublicKey.X.FillBytes(make([]byte, 32)), k.PublicKey.Y.FillBytes(make([]byte, 32))
	enc := base64.RawURLEncoding.EncodeToString
	rd := kbs.RuntimeData{Nonce: n, TEEPubKey: kbs.JWK{Kty: "EC", Crv: "P-256", Alg: kbs.KeyAlg, X: enc(x), Y: enc(y)}}
	want, err := kbs.ReportData(rd, "", kbs.DefaultHash)
	if err != nil {
		r.t.Fatal(err)
	}
	q, err := r.f.td.sim.Quote(want)
	if err != nil {
		r.t.Fatal(err)
	}
	ev, _ := json.Marshal(kbs.TDXEvidence{Quote: q, CCEventLog: r.f.td.ccel, CCELTable: r.f.td.table, RuntimeLog: r.f.td.rtlog})
	return kbs.Attestation{RuntimeData: rd, TEEEvidence: kbs.CompositeEvidence{PrimaryEvidence: ev}}
}

func TestBrokerSessions(t *testing.T) {
	f := newBroker(t, simImage(), []resource.Grant{{Image: "sim-image"}})

	// A resource before any session, and before attestation: 401.
	r := &raw{t: t, f: f}
	if code, b := r.do("GET", kbs.PathResource+resID, nil); code != 401 {
		t.Fatalf("no cookie: %d %s", code, b)
	}
	n1 := r.auth()
	if code, b := r.do("GET", kbs.PathResource+resID, nil); code != 401 || !strings.Contains(string(b), "not attested") {
		t.Fatalf("before attest: %d %s", code, b)
	}

	// An honest attestation, then a replay of it to the same session and
	// to a new one: refused.
	att := r.attestation(n1)
	if code, b := r.do("POST", kbs.PathAttest, att); code != 200 {
		t.Fatalf("attest: %d %s", code, b)
	}
	if code, b := r.do("GET", kbs.PathResource+resID, nil); code != 200 || !bytes.Contains(b, []byte(`"protected"`)) {
		t.Fatalf("resource: %d %s", code, b)
	}
	if code, b := r.do("POST", kbs.PathAttest, att); code != 401 {
		t.Fatalf("replay to the attested session: %d %s", code, b)
	}
	r2 := &raw{t: t, f: f}
	r2.auth()
	if code, b := r2.do("POST", kbs.PathAttest, att); code != 401 || !strings.Contains(string(b), "replayed") {
		t.Fatalf("replay to a new session: %d %s", code, b)
	}
	// That failure burned r2's session.
	if code, b := r2.do("POST", kbs.PathAttest, r2.attestation("whatever")); code != 401 || !strings.Contains(string(b), "no live session") {
		t.Fatalf("after a failed attestation: %d %s", code, b)
	}

	// An expired challenge, and an expired attested session.
	r3 := &raw{t: t, f: f}
	n3 := r3.auth()
	*f.clock = max(broker.DefaultSessionTTL, broker.DefaultAttestedTTL) + time.Second
	if code, b := r3.do("POST", kbs.PathAttest, r3.attestation(n3)); code != 401 || !strings.Contains(string(b), "no live session") {
		t.Fatalf("expired challenge: %d %s", code, b)
	}
	if code, b := r.do("GET", kbs.PathResource+resID, nil); code != 401 {
		t.Fatalf("expired attested session: %d %s", code, b)
	}
}

// auth needs no evidence: a flood of auths must not lock an honest TD out
// (it did: each auth stored a session, 4096 at most, and the TD's auth got
// TooManySessions), and a challenge still serves one attestation only.
func TestBrokerAuthFlood(t *testing.T) {
	f := newBroker(t, simImage(), []resource.Grant{{Image: "sim-image"}})
	h := f.srv.Config.Handler
	for i := 0; i < 10000; i++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", kbs.PathAuth, strings.NewReader(`{"version":"0.4.0","tee":"tdx","extra-params":{}}`)))
		if rec.Code != 200 {
			t.Fatalf("auth %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	got, err := f.client().Fetch(context.Background(), resID)
	if err != nil {
		t.Fatalf("an honest TD after 10000 auths: %v", err)
	}
	if !bytes.Equal(got, f.value) {
		t.Fatal("the decrypted resource is not the file's value")
	}
	r := &raw{t: t, f: f}
	n := r.auth()
	challenge := r.cookie
	att := r.attestation(n)
	if code, b := r.do("POST", kbs.PathAttest, att); code != 200 {
		t.Fatalf("attest: %d %s", code, b)
	}
	r.cookie = challenge
	if code, b := r.do("POST", kbs.PathAttest, att); code != 401 || !strings.Contains(string(b), "already been used") {
		t.Fatalf("replayed challenge: %d %s", code, b)
	}
}

func TestBrokerResourceMissingAndUnusable(t *testing.T) {
	f := newBroker(t, simImage(), []resource.Grant{{Image: "sim-image"}})
	c := f.client()
	_, err := c.Fetch(context.Background(), "tdforge/dev/none")
	refused(t, err, http.StatusNotFound, "tdforge/dev/none does not exist")
}

// The resource file is read for each request: a changed allow list
// applies at once.
func TestBrokerReadsResourcesPerRequest(t *testing.T) {
	f := newBroker(t, simImage(), []resource.Grant{{Image: "sim-image"}})
	if _, err := f.client().Fetch(context.Background(), resID); err != nil {
		t.Fatal(err)
	}
	dir := f.res
	raw, err := os.ReadFile(resource.Path(dir, resID))
	if err != nil {
		t.Fatal(err)
	}
	raw = bytes.Replace(raw, []byte(`"sim-image"`), []byte(`"prod-image"`), 1)
	if err := os.WriteFile(resource.Path(dir, resID), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = f.client().Fetch(context.Background(), resID)
	refused(t, err, http.StatusForbidden, "allows images prod-image, not sim-image")
}

// A Trustee client's RSA tee-pubkey gets an RSA-OAEP-256 JWE.
func TestBrokerRSATEEKey(t *testing.T) {
	f := newBroker(t, simImage(), []resource.Grant{{Image: "sim-image"}})
	r := &raw{t: t, f: f}
	n := r.auth()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	att := r.attestation(n)
	att.RuntimeData.TEEPubKey = kbs.JWK{Kty: "RSA", Alg: kbs.RSAOAEP256, N: enc(k.N.Bytes()), E: enc(big.NewInt(int64(k.E)).Bytes())}
	want, err := kbs.ReportData(att.RuntimeData, "", kbs.DefaultHash)
	if err != nil {
		t.Fatal(err)
	}
	q, err := f.td.sim.Quote(want)
	if err != nil {
		t.Fatal(err)
	}
	att.TEEEvidence.PrimaryEvidence, _ = json.Marshal(kbs.TDXEvidence{Quote: q, CCEventLog: f.td.ccel, CCELTable: f.td.table, RuntimeLog: f.td.rtlog})
	if code, b := r.do("POST", kbs.PathAttest, att); code != 200 {
		t.Fatalf("attest: %d %s", code, b)
	}
	code, b := r.do("GET", kbs.PathResource+resID, nil)
	if code != 200 {
		t.Fatalf("resource: %d %s", code, b)
	}
	j, err := jose.ParseEncryptedJSON(string(b), []jose.KeyAlgorithm{jose.RSA_OAEP_256}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := j.Decrypt(k); err != nil || !bytes.Equal(p, f.value) {
		t.Fatalf("decrypt: %v", err)
	}
}

// A service that accepts RTMR0 unpinned (its /v1/attest answers warning)
// still releases no key on such a verdict: the host chooses what RTMR0
// measures (ACPI tables, TD HOB, boot variables). Before, r.Trusted
// released the key.
func TestBrokerRefusesAcceptedUnpinned(t *testing.T) {
	img := simImage()
	f := newBroker(t, img, []resource.Grant{{Image: "sim-image"}}, func(cfg *Config, refs string) {
		cfg.AcceptUnpinned = []register.Register{register.RTMR0}
		p := filepath.Join(refs, img.Name+"-"+img.Version+".json")
		doc, err := refvalues.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		doc.Registers.Set(register.RTMR0, nil)
		doc.Reasons = map[string]string{"rtmr0": "test: as on a real-TDX profile"}
		delete(doc.Events, "rtmr0")
		b, err := doc.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	})
	_, err := f.client().Fetch(context.Background(), resID)
	refused(t, err, http.StatusUnauthorized, "RTMR0 NOT PINNED")
	if lg := f.log.String(); !strings.Contains(lg, "RTMR0 NOT PINNED") {
		t.Fatalf("the log does not say why:\n%s", lg)
	}
}
