package service

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/veraison/ear"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/verifier/nonce"
	"github.com/tdforge/tdforge/verifier/result"
	"github.com/tdforge/tdforge/verifier/verify"
)

// Every kind of bad input gets a 4xx JSON error naming the field, never a
// 500 and never a signed result.
func TestBadInput(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxBody = 1 << 20 })
	strict := newFixture(t, func(c *Config) { c.AllowSimulated = false }) // knows the simulator root, does not accept it
	now := time.Now()
	clock := func() time.Time { return now }
	f.nonces.Now = clock

	otherIssuer, _ := nonce.New([]byte("a different secret of 32+ bytes!!"), time.Minute)
	forged, _, _ := otherIssuer.Issue()

	expiring, _, _ := f.nonces.Issue()
	expiredDoc := f.td.attest(t, expiring)

	replayed := f.td.attest(t, f.nonce(t))
	if code, b := f.post(t, PathAttest, mustJSON(t, replayed)); code != 200 {
		t.Fatalf("first use: %d %s", code, b)
	}

	type tc struct {
		name        string
		fix         *fixture
		path        string
		body        func() []byte
		code        int
		field, want string
	}
	doc := func(mod func(*attestation.Response)) func() []byte {
		return func() []byte {
			d := f.td.attest(t, f.nonce(t))
			mod(d)
			return mustJSON(t, d)
		}
	}
	raw := func(s string) func() []byte { return func() []byte { return []byte(s) } }
	cases := []tc{
		{"malformed JSON", f, PathAttest, raw(`{"version": 1, "quote": `), 400, "body", "malformed JSON"},
		{"trailing data", f, PathAttest, doc(func(*attestation.Response) {}), 0, "", ""}, // placeholder replaced below
		{"wrong type", f, PathAttest, raw(`{"version": 1, "quote": 5}`), 400, "quote", "want a JSON"},
		{"wrong document version", f, PathAttest, doc(func(d *attestation.Response) { d.Version = 2 }), 400, "version", "want 1"},
		{"no quote", f, PathAttest, doc(func(d *attestation.Response) { d.Quote = nil }), 400, "quote", "missing"},
		{"short quote", f, PathAttest, doc(func(d *attestation.Response) { d.Quote = d.Quote[:600] }), 400, "quote", "600 bytes"},
		{"quote version 3", f, PathAttest, doc(func(d *attestation.Response) { d.Quote[0] = 3 }), 400, "quote", "version 4"},
		{"body over the limit", f, PathAttest, doc(func(d *attestation.Response) { d.RuntimeLogJSON = strings.Repeat("x", 1<<20) }), 413, "body", "limit of 1048576 bytes"},
		{"nonce not hex", f, PathAttest, doc(func(d *attestation.Response) { d.ReportData.Nonce = "zz" }), 400, "report_data.nonce", "not a nonce of this service"},
		{"unknown nonce", f, PathAttest, func() []byte { return mustJSON(t, f.td.attest(t, forged)) }, 400, "report_data.nonce", "not issued by this service"},
		{"replayed nonce", f, PathAttest, func() []byte { return mustJSON(t, replayed) }, 400, "report_data.nonce", "already used"},
		{"expired nonce", f, PathAttest, func() []byte { now = now.Add(2 * time.Minute); return mustJSON(t, expiredDoc) }, 400, "report_data.nonce", "expired"},
		{"SPKI hash not hex", f, PathAttest, doc(func(d *attestation.Response) { d.ReportData.SPKIHash = "abc" }), 400, "report_data.spki_hash", "64 hex digits"},
		{"REPORTDATA binds another nonce", f, PathAttest, func() []byte {
			d := f.td.attest(t, f.nonce(t))
			d.ReportData.Nonce = hex.EncodeToString(f.nonce(t))
			return mustJSON(t, d)
		}, 400, "report_data.value", "does not bind"},
		{"REPORTDATA binds another TLS key", f, PathAttest, doc(func(d *attestation.Response) { d.ReportData.SPKIHash = strings.Repeat("ab", 32) }), 400, "report_data.value", "does not bind"},
		{"simulated, not allowed", strict, PathAttest, func() []byte { return mustJSON(t, strict.td.attest(t, strict.nonce(t))) }, 403, "quote", "--allow-simulated"},
		{"simulated, not allowed, claims hardware", strict, PathAttest, func() []byte {
			d := strict.td.attest(t, strict.nonce(t))
			d.Simulated, d.QuoteProvider = false, "configfs-tsm"
			return mustJSON(t, d)
		}, 403, "quote", "--allow-simulated"},
		{"wrong method", f, PathAttest, nil, 405, "path", "does not take GET"},
		{"unknown path", f, "/v2/attest", raw(`{}`), 404, "path", "no such endpoint"},
		{"trustee: two requests", f, PathTrustee, raw(`{"verification_requests":[{},{}]}`), 400, "verification_requests", "exactly one"},
		{"trustee: not tdx", f, PathTrustee, raw(`{"verification_requests":[{"tee":"snp"}]}`), 400, "verification_requests[0].tee", "tdx"},
		{"trustee: evidence not base64url", f, PathTrustee, raw(`{"verification_requests":[{"tee":"tdx","evidence":"!!"}]}`), 400, "verification_requests[0].evidence", "base64url"},
		{"trustee: hash algorithm", f, PathTrustee, raw(`{"verification_requests":[{"tee":"tdx","evidence":"e30","runtime_data_hash_algorithm":"sha384"}]}`), 400, "verification_requests[0].runtime_data_hash_algorithm", "sha512"},
		{"trustee: no runtime data", f, PathTrustee, raw(`{"verification_requests":[{"tee":"tdx","evidence":"e30"}]}`), 400, "verification_requests[0].runtime_data", "missing"},
		{"trustee: short raw runtime data", f, PathTrustee, raw(`{"verification_requests":[{"tee":"tdx","evidence":"e30","runtime_data":{"raw":"AAAA"}}]}`), 400, "verification_requests[0].runtime_data.raw", "96 bytes"},
		{"trustee: no quote", f, PathTrustee, raw(`{"verification_requests":[{"tee":"tdx","evidence":"e30","runtime_data":{"structured":{"nonce":"00","spki_hash":"00"}}}]}`), 400, "verification_requests[0].evidence.quote", "missing"},
		{"trustee: unknown policy id", f, PathTrustee, func() []byte {
			b := trusteeBody(t, f.td.attest(t, f.nonce(t)))
			var req TrusteeRequest
			json.Unmarshal(b, &req)
			req.PolicyIDs = []string{"nope.json"}
			return mustJSON(t, req)
		}, 400, "policy_ids", "no reference document"},
	}
	cases[1] = tc{"trailing data", f, PathAttest, func() []byte { return append(doc(func(*attestation.Response) {})(), []byte(`{}`)...) }, 400, "body", "after the document"}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var code int
			var b []byte
			if c.body == nil {
				code, b = c.fix.get(t, c.path)
			} else {
				code, b = c.fix.post(t, c.path, c.body())
			}
			if bytes.Contains(b, []byte(`"token"`)) || code >= 500 {
				t.Fatalf("got %d %s: want a 4xx and no result", code, b)
			}
			wantError(t, code, b, c.code, c.field, c.want)
		})
	}
	// The refusals are counted.
	_, m := f.get(t, PathMetrics)
	if !strings.Contains(string(m), `tdforge_appraisals_total{status="refused"}`) {
		t.Fatalf("metrics lack refused appraisals:\n%s", m)
	}
}

// trusteeBody is the Trustee RESTful AS request for an agent document,
// with raw runtime data (nonce || SPKI hash).
func trusteeBody(t testing.TB, d *attestation.Response) []byte {
	t.Helper()
	ev := mustJSON(t, TrusteeTDXEvidence{Quote: d.Quote, CCEventLog: d.CCEL, CCELTable: d.CCELTable, RuntimeLog: d.RuntimeLog})
	n, _ := hex.DecodeString(d.ReportData.Nonce)
	spki, _ := hex.DecodeString(d.ReportData.SPKIHash)
	rd := base64.RawURLEncoding.EncodeToString(append(n, spki...))
	return mustJSON(t, TrusteeRequest{VerificationRequests: []TrusteeVerification{{
		TEE: "tdx", Evidence: base64.RawURLEncoding.EncodeToString(ev),
		RuntimeData: &TrusteeRuntimeData{Raw: &rd}, RuntimeDataHashAlgorithm: "sha512",
	}}, PolicyIDs: []string{"sim-image-1.json"}})
}

// The Trustee request shape gets the same appraisal; the answer is the
// token itself.
func TestTrusteeShape(t *testing.T) {
	f := newFixture(t, nil)
	d := f.td.attest(t, f.nonce(t))
	resp, err := http.Post(f.srv.URL+PathTrustee, "application/json", bytes.NewReader(trusteeBody(t, d)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ContentJWT {
		t.Fatalf("%d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), buf.String())
	}
	c := f.verifyToken(t, buf.String(), d)
	if status(c) != ear.TrustTierWarning {
		t.Fatalf("status %v; failing %v", status(c), failing(c))
	}
}

// Health, readiness, JWKS and metrics.
func TestOperationalEndpoints(t *testing.T) {
	f := newFixture(t, nil)
	f.attestOK(t, f.td.attest(t, f.nonce(t)))
	if code, b := f.get(t, PathHealthz); code != 200 || !strings.Contains(string(b), `"ok":true`) {
		t.Fatalf("healthz %d %s", code, b)
	}
	if code, b := f.get(t, PathReadyz); code != 200 || !strings.Contains(string(b), `"ready":true`) || !strings.Contains(string(b), "online") {
		t.Fatalf("readyz %d %s", code, b)
	}
	_, jwks := f.get(t, PathJWKS)
	var set struct{ Keys []map[string]any }
	if err := json.Unmarshal(jwks, &set); err != nil || len(set.Keys) != 1 || set.Keys[0]["kid"] == "" || set.Keys[0]["d"] != nil {
		t.Fatalf("JWKS %s (a private part must never be published)", jwks)
	}
	_, m := f.get(t, PathMetrics)
	for _, want := range []string{
		`tdforge_appraisals_total{status="warning"} 1`,
		`tdforge_appraisal_duration_seconds_count 1`,
		`tdforge_collateral_age_seconds -1`,
		`tdforge_collateral_fetch_errors_total 0`,
		`tdforge_reference_documents{state="active"} 1`,
		`tdforge_nonces_remembered 1`,
	} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// No usable reference: not ready.
	empty := newFixture(t, nil)
	for _, d := range empty.svc.refs.Load().docs {
		d.revoked = "test"
	}
	if code, b := empty.get(t, PathReadyz); code != 503 || !strings.Contains(string(b), "no usable reference") {
		t.Fatalf("readyz without references %d %s", code, b)
	}
	_ = result.Submod
}

// A service that knows no simulator root cannot tell a simulated quote
// from a forged one: a quote whose document claims hardware gets a
// contraindicated result naming the unknown root, never affirming.
func TestUnknownRootContraindicated(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.AllowSimulated, c.SimRoots = false, nil })
	d := f.td.attest(t, f.nonce(t))
	d.Simulated, d.QuoteProvider = false, "configfs-tsm"
	c, rep := f.attestOK(t, d)
	if status(c) != ear.TrustTierContraindicated || !rep.Failed(verify.CheckAuthenticity) || c.TDX().TrustVector.InstanceIdentity != ear.CryptoValidationFailedClaim {
		t.Fatalf("status %v, failing %v", status(c), failing(c))
	}
}
