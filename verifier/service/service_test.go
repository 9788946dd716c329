package service

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/testutil/simtd"

	"github.com/veraison/ear"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/signing"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/verifier/nonce"
	"github.com/tdforge/tdforge/verifier/record"
	"github.com/tdforge/tdforge/verifier/result"
	"github.com/tdforge/tdforge/verifier/verify"
)

// td is a simulated TD: the TDX simulator quotes, the COS firmware log
// covers RTMR0..2 and a tdforge runtime log RTMR3.
type td struct {
	pki                *sim.PKI
	sim                *simtd.TD
	ccel, table, rtlog []byte
	spki               [32]byte
	image              attestation.Image
}

func newTD(t testing.TB) *td { return newTDWith(t, "mrtd") }

// newTDWith is a TD whose MRTD derives from seed (another seed: another
// firmware).
func newTDWith(t testing.TB, seed string) *td {
	t.Helper()
	var events []event.Event
	for _, n := range []string{"ollama", "model"} {
		d := sha256.Sum256([]byte("root hash of " + n))
		events = append(events, event.Event{Version: event.Version, Kind: event.KindPayload, Name: n, Alg: event.AlgVerity, Digest: d[:]})
	}
	c := simtd.NewLogged(t, seed, "0000000000000000", events)
	return &td{pki: c.PKI, sim: c.TD, ccel: c.CCEL, table: c.CCELTable, rtlog: c.RuntimeLog,
		spki: sha256.Sum256([]byte("agent TLS key")), image: attestation.Image{Name: "sim-image", Version: "1", Dev: true, Simulated: true}}
}

// attest is the agent's /v1/attestation document for nonce n.
func (d *td) attest(t testing.TB, n []byte) *attestation.Response {
	t.Helper()
	r, err := d.sim.Attest(n, d.spki)
	if err != nil {
		t.Fatal(err)
	}
	r.RuntimeLog, r.CCEL, r.CCELTable, r.Image, r.Timestamp = d.rtlog, d.ccel, d.table, d.image, time.Now().UTC().Format(time.RFC3339)
	return r
}

// writeReference records the TD as reference document name in dir.
func (d *td) writeReference(t testing.TB, dir, name string, img refvalues.Image) {
	t.Helper()
	r := d.attest(t, make([]byte, 32))
	doc, err := record.Reference(verify.Evidence{Quote: r.Quote, CCEL: d.ccel, CCELTable: d.table, RuntimeLog: d.rtlog}, img)
	if err != nil {
		t.Fatal(err)
	}
	b, err := doc.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func refImage() refvalues.Image {
	return refvalues.Image{Name: "sim-image", Version: "1", Dev: true, Simulated: true}
}

type fixture struct {
	td     *td
	dir    string
	svc    *Service
	srv    *httptest.Server
	nonces *nonce.Issuer
}

const secret = "service test nonce secret, 32+ bytes"

func newFixture(t testing.TB, mod func(*Config)) *fixture {
	t.Helper()
	d := newTD(t)
	dir := t.TempDir()
	d.writeReference(t, dir, "sim-image-1.json", refImage())
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := result.NewKeySet([]*ecdsa.PrivateKey{key}, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ni, err := nonce.New([]byte(secret), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{ReferenceDir: dir, Dev: true, AllowSimulated: true, SimRoots: sim.RootPool(d.pki), Keys: ks, Nonces: ni,
		VerifierBuild: "test", Log: log.New(io.Discard, "", 0)}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &fixture{td: d, dir: dir, svc: s, srv: srv, nonces: ni}
}

func (f *fixture) get(t testing.TB, path string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(f.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (f *fixture) post(t testing.TB, path string, body []byte) (int, []byte) {
	t.Helper()
	resp, err := http.Post(f.srv.URL+path, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// nonce fetches a fresh nonce from the service.
func (f *fixture) nonce(t testing.TB) []byte {
	t.Helper()
	code, b := f.get(t, PathNonce)
	var out struct{ Nonce, Expires string }
	if code != 200 || json.Unmarshal(b, &out) != nil {
		t.Fatalf("GET %s: %d %s", PathNonce, code, b)
	}
	if exp, err := time.Parse(time.RFC3339, out.Expires); err != nil || time.Until(exp) <= 0 {
		t.Fatalf("expires %q", out.Expires)
	}
	n, err := hex.DecodeString(out.Nonce)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// attestOK posts a document and checks the token against the service's
// JWKS; it returns the verified claims and the unsigned report.
func (f *fixture) attestOK(t testing.TB, doc *attestation.Response) (*result.Claims, *verify.Report) {
	t.Helper()
	code, b := f.post(t, PathAttest, mustJSON(t, doc))
	if code != 200 {
		t.Fatalf("POST %s: %d %s", PathAttest, code, b)
	}
	var out struct {
		Token, Status string
		Report        *verify.Report
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return f.verifyToken(t, out.Token, doc), out.Report
}

func (f *fixture) verifyToken(t testing.TB, tok string, doc *attestation.Response) *result.Claims {
	t.Helper()
	code, jwks := f.get(t, PathJWKS)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", PathJWKS, code, jwks)
	}
	c, err := result.Verify([]byte(tok), jwks)
	if err != nil {
		t.Fatalf("token does not verify against the JWKS: %v", err)
	}
	n, err := c.Nonce()
	if err != nil || hex.EncodeToString(n) != doc.ReportData.Nonce {
		t.Fatalf("eat_nonce %x, want %s", n, doc.ReportData.Nonce)
	}
	ev := *c.TDX().VeraisonAnnotatedEvidence
	if ev["tls_spki_sha256"] != doc.ReportData.SPKIHash {
		t.Fatalf("annotated TLS SPKI hash %v, want %s", ev["tls_spki_sha256"], doc.ReportData.SPKIHash)
	}
	return c
}

func status(c *result.Claims) ear.TrustTier { return *c.TDX().Status }

// failing names the failed checks of a result's annotated evidence.
func failing(c *result.Claims) []string {
	var out []string
	for _, x := range (*c.TDX().VeraisonAnnotatedEvidence)["checks"].([]any) {
		m := x.(map[string]any)
		if m["status"] == string(verify.Fail) {
			out = append(out, m["name"].(string)+": "+m["reason"].(string))
		}
	}
	return out
}

// A simulated TD the service was told to accept: warning, naming the
// document that matched, with registers, image and every check; the
// nonce is then spent.
func TestAttestSimulated(t *testing.T) {
	f := newFixture(t, nil)
	doc := f.td.attest(t, f.nonce(t))
	c, rep := f.attestOK(t, doc)
	if status(c) != ear.TrustTierWarning || rep.Verdict != verify.VerdictSimulated {
		t.Fatalf("status %v verdict %s, want warning for an accepted simulated TD; failing %v", status(c), rep.Verdict, failing(c))
	}
	a := c.TDX()
	if *a.AppraisalPolicyID != "sim-image-1.json" {
		t.Fatalf("policy id %q", *a.AppraisalPolicyID)
	}
	ev := *a.VeraisonAnnotatedEvidence
	img := ev["image"].(map[string]any)
	if img["name"] != "sim-image" || img["version"] != "1" || ev["rtmr0"] != simtd.COSRTMR[0] || len(ev["mrtd"].(string)) != 96 || ev["rtmr3"] == nil {
		t.Fatalf("annotated evidence %v", ev)
	}
	if len(ev["checks"].([]any)) != len(rep.Checks) || ev["tcb_status"] == nil {
		t.Fatalf("checks %d, report %d; tcb %v", len(ev["checks"].([]any)), len(rep.Checks), ev["tcb_status"])
	}
	if tv := a.TrustVector; tv.Hardware != ear.UnsafeHardwareClaim || tv.Executables != ear.ApprovedRuntimeClaim {
		t.Fatalf("vector %+v", tv)
	}
	// Replay of the same document.
	code, b := f.post(t, PathAttest, mustJSON(t, doc))
	wantError(t, code, b, 400, "report_data.nonce", "already used")
}

// A TD that sends no CCEL: the report carries the agent's reason on the
// CCEL replay line, as the in-process path and the broker do. Before the
// fix the service dropped ccel_absent.
func TestAttestCCELAbsent(t *testing.T) {
	f := newFixture(t, nil)
	doc := f.td.attest(t, f.nonce(t))
	doc.CCEL, doc.CCELTable = nil, nil
	doc.CCELAbsent = "no CCEL ACPI table: /sys/firmware/acpi/tables/CCEL does not exist"
	_, rep := f.attestOK(t, doc)
	for _, c := range rep.Checks {
		if c.Name == "CCEL replay (RTMR0..2)" {
			if c.Status != verify.Skipped || !strings.Contains(c.Reason, "(the agent says: "+doc.CCELAbsent+")") {
				t.Fatalf("CCEL replay %s %q, want SKIPPED with the agent's reason", c.Status, c.Reason)
			}
			return
		}
	}
	t.Fatalf("no CCEL replay check in %+v", rep.Checks)
}

// Results are issued at Config.Now, by /v1/attest and by the key broker's
// appraisal alike. Before the fix both used the wall clock.
func TestResultsIssuedAtConfigNow(t *testing.T) {
	at := time.Now().Add(-2 * time.Minute).Truncate(time.Second)
	f := newFixture(t, func(c *Config) { c.Now = func() time.Time { return at } })
	c, _ := f.attestOK(t, f.td.attest(t, f.nonce(t)))
	if !c.IssuedAt.Equal(at) {
		t.Fatalf("/v1/attest result issued at %v, want %v", c.IssuedAt, at)
	}
	doc := f.td.attest(t, make([]byte, 32))
	ap, err := f.svc.appraiseRCAR(context.Background(), verify.Evidence{Quote: doc.Quote, CCEL: doc.CCEL, CCELTable: doc.CCELTable, RuntimeLog: doc.RuntimeLog}, make([]byte, 32), "bound by the broker")
	if err != nil {
		t.Fatal(err)
	}
	_, jwks := f.get(t, PathJWKS)
	bc, err := result.Verify([]byte(ap.Token), jwks)
	if err != nil || !bc.IssuedAt.Equal(at) {
		t.Fatalf("broker result issued at %v (%v), want %v", bc, err, at)
	}
}

// One changed byte of the quote or of the runtime log gives
// contraindicated, naming the failing check.
func TestTampering(t *testing.T) {
	f := newFixture(t, nil)
	for _, tc := range []struct {
		name, check string
		mod         func(*attestation.Response)
	}{
		{"quote MRTD byte", verify.CheckAuthenticity, func(d *attestation.Response) { d.Quote[48+136+5] ^= 1 }},
		{"runtime log byte", "RTMR3", func(d *attestation.Response) {
			d.RuntimeLog = append([]byte(nil), d.RuntimeLog...)
			d.RuntimeLog[len(d.RuntimeLog)-3] ^= 1
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := f.td.attest(t, f.nonce(t))
			tc.mod(doc)
			c, _ := f.attestOK(t, doc)
			fails := failing(c)
			if status(c) != ear.TrustTierContraindicated || len(fails) == 0 || !strings.Contains(strings.Join(fails, "\n"), tc.check) {
				t.Fatalf("status %v, failing %q; want contraindicated naming %q", status(c), fails, tc.check)
			}
		})
	}
}

// Several documents give an upgrade window; a revoked one is refused with
// its reason; the directory reloads without a restart.
func TestReferenceDirectory(t *testing.T) {
	f := newFixture(t, nil)
	// Another release, whose registers differ (recorded from another TD).
	other := newTDWith(t, "older firmware")
	other.writeReference(t, f.dir, "sim-image-0.json", refvalues.Image{Name: "sim-image", Version: "0", Dev: true, Simulated: true})
	os.WriteFile(filepath.Join(f.dir, "notes.rvps.json"), []byte(`{"not": "a reference"}`), 0o644)
	if err := f.svc.Reload(); err != nil {
		t.Fatal(err)
	}
	if code, b := f.get(t, PathReadyz); code != 200 || !strings.Contains(string(b), `"references":2`) {
		t.Fatalf("readyz %d %s", code, b)
	}
	c, _ := f.attestOK(t, f.td.attest(t, f.nonce(t)))
	if status(c) != ear.TrustTierWarning || *c.TDX().AppraisalPolicyID != "sim-image-1.json" {
		t.Fatalf("status %v policy %v", status(c), *c.TDX().AppraisalPolicyID)
	}

	os.WriteFile(filepath.Join(f.dir, RevokedFile), []byte("# revocations\nsim-image@1 kernel CVE-2026-0001\n"), 0o644)
	if err := f.svc.Reload(); err != nil {
		t.Fatal(err)
	}
	c, _ = f.attestOK(t, f.td.attest(t, f.nonce(t)))
	fails := strings.Join(failing(c), "\n")
	if status(c) != ear.TrustTierContraindicated || !strings.Contains(fails, result.CheckRevoked) || !strings.Contains(fails, "CVE-2026-0001") {
		t.Fatalf("revoked: status %v, failing %s", status(c), fails)
	}
	if c.TDX().TrustVector.Executables != ear.ContraindicatedRuntimeClaim {
		t.Fatalf("vector %+v", c.TDX().TrustVector)
	}
	// A revocation list that cannot be parsed (a line without a reason)
	// or read fails closed: every document is refused, naming the file
	// and the line, and /readyz is 503 until it is fixed.
	for _, bad := range []struct {
		name  string
		write func(path string)
		want  string
	}{
		{"no reason", func(p string) { os.WriteFile(p, []byte("# ok\nsim-image-0.json\n"), 0o644) }, RevokedFile + " line 2: "},
		{"unreadable", func(p string) { os.Mkdir(p, 0o755) }, RevokedFile + " line 1: read "},
	} {
		p := filepath.Join(f.dir, RevokedFile)
		os.RemoveAll(p)
		bad.write(p)
		if err := f.svc.Reload(); err != nil {
			t.Fatalf("%s: %v", bad.name, err)
		}
		if active, _ := f.svc.refs.Load().counts(); active != 0 {
			t.Fatalf("%s: %d documents still usable", bad.name, active)
		}
		c, _ = f.attestOK(t, f.td.attest(t, f.nonce(t)))
		fails = strings.Join(failing(c), "\n")
		if status(c) != ear.TrustTierContraindicated || !strings.Contains(fails, result.CheckRevoked) || !strings.Contains(fails, bad.want) {
			t.Fatalf("%s: status %v, failing %s", bad.name, status(c), fails)
		}
		if code, b := f.get(t, PathReadyz); code != 503 || !strings.Contains(string(b), bad.want) {
			t.Fatalf("%s: readyz %d %s", bad.name, code, b)
		}
	}
	// Fixed, the documents serve again.
	os.RemoveAll(filepath.Join(f.dir, RevokedFile))
	os.WriteFile(filepath.Join(f.dir, RevokedFile), []byte("sim-image@0 old\n"), 0o644)
	if err := f.svc.Reload(); err != nil {
		t.Fatal(err)
	}
	if code, b := f.get(t, PathReadyz); code != 200 || !strings.Contains(string(b), `"references":1`) {
		t.Fatalf("fixed: readyz %d %s", code, b)
	}
}

// Without --dev every document must be signed with the reference key: a
// signed document serves, an unsigned one is refused and reported.
func TestSignedReferences(t *testing.T) {
	d := newTD(t)
	dir := t.TempDir()
	d.writeReference(t, dir, "plain.json", refvalues.Image{Name: "sim-image", Version: "1", Dev: true, Simulated: true})
	priv, pub, err := signing.GenerateKey("ecdsa-p256")
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := os.ReadFile(filepath.Join(dir, "plain.json"))
	env, err := signing.Sign(plain, priv)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "signed.json.dsse"), env, 0o644)
	keyPath := filepath.Join(t.TempDir(), "ref.pub")
	os.WriteFile(keyPath, pub, 0o644)

	ks, _ := result.NewKeySet([]*ecdsa.PrivateKey{mustKey(t)}, time.Minute)
	ni, _ := nonce.New([]byte(secret), 0)
	if _, err := New(Config{ReferenceDir: dir, Keys: ks, Nonces: ni}); !errors.Is(err, ErrNoReferenceKey) {
		t.Fatalf("no key, no --dev: %v", err)
	}
	if _, err := New(Config{ReferenceDir: dir, ReferenceKey: filepath.Join(dir, "plain.json"), Keys: ks, Nonces: ni}); !errors.Is(err, ErrBadReferenceKey) {
		t.Fatalf("a reference key that is not a key: %v", err)
	}
	s, err := New(Config{ReferenceDir: dir, ReferenceKey: keyPath, Keys: ks, Nonces: ni, Log: log.New(io.Discard, "", 0)})
	if err != nil {
		t.Fatal(err)
	}
	rs := s.refs.Load()
	if len(rs.docs) != 1 || rs.docs[0].id != "signed.json.dsse" || rs.docs[0].check.Status != verify.Pass {
		t.Fatalf("docs %+v", rs.docs)
	}
	if len(rs.problems) != 1 || !strings.Contains(rs.problems[0], "plain.json: refused") {
		t.Fatalf("problems %q", rs.problems)
	}
}

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func wantError(t testing.TB, code int, body []byte, wantCode int, field, msg string) {
	t.Helper()
	var e struct{ Error, Field string }
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("status %d: body %q is not a JSON error", code, body)
	}
	if code != wantCode || e.Field != field || !strings.Contains(e.Error, msg) {
		t.Fatalf("got %d field %q %q; want %d field %q containing %q", code, e.Field, e.Error, wantCode, field, msg)
	}
}
