package service

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	tt "github.com/google/go-tdx-guest/testing"
	"github.com/veraison/ear"

	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/internal/tdx/signing"
	"github.com/tdforge/tdforge/verifier/collateral"
	"github.com/tdforge/tdforge/verifier/collateral/pcstest"
	"github.com/tdforge/tdforge/verifier/record"
	"github.com/tdforge/tdforge/verifier/verify"
)

// writeUnpinnedReference records the TD as a reference whose RTMR0 is
// null, as the builder writes it for real TDX (ACPI tables unknown).
func (d *td) writeUnpinnedReference(t *testing.T, dir, name string) {
	t.Helper()
	r := d.attest(t, make([]byte, 32))
	doc, err := record.Reference(verify.Evidence{Quote: r.Quote, CCEL: d.ccel, CCELTable: d.table, RuntimeLog: d.rtlog}, refImage())
	if err != nil {
		t.Fatal(err)
	}
	doc.Registers.RTMR0 = nil
	doc.Reasons = map[string]string{"rtmr0": "platform real-tdx has no ACPI digests"}
	b, err := doc.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// --accept-unpinned: a reference with RTMR0 unpinned fails unless the
// operator accepts it; then the result is warning and its annotated
// evidence names the register and what goes unchecked.
func TestAcceptUnpinned(t *testing.T) {
	for _, accept := range []bool{false, true} {
		f := newFixture(t, func(c *Config) {
			if accept {
				c.AcceptUnpinned = []register.Register{register.RTMR0}
			}
		})
		os.Remove(filepath.Join(f.dir, "sim-image-1.json"))
		f.td.writeUnpinnedReference(t, f.dir, "sim-image-1.json")
		if err := f.svc.Reload(); err != nil {
			t.Fatal(err)
		}
		c, rep := f.attestOK(t, f.td.attest(t, f.nonce(t)))
		ev := *c.TDX().VeraisonAnnotatedEvidence
		if !accept {
			fails := strings.Join(failing(c), "\n")
			if status(c) != ear.TrustTierContraindicated || !strings.Contains(fails, "RTMR0: NOT PINNED") {
				t.Fatalf("unaccepted null RTMR0: status %v, failing %s", status(c), fails)
			}
			if ev["accepted_unpinned"] != nil {
				t.Fatalf("accepted_unpinned without --accept-unpinned: %v", ev["accepted_unpinned"])
			}
			continue
		}
		un, _ := ev["accepted_unpinned"].(map[string]any)
		if status(c) != ear.TrustTierWarning || !rep.Trusted || un["rtmr0"] != verify.Unchecked[register.RTMR0] {
			t.Fatalf("accepted null RTMR0: status %v trusted %v, accepted_unpinned %v; failing %v", status(c), rep.Trusted, ev["accepted_unpinned"], failing(c))
		}
		if v, _ := ev["verdict"].(string); !strings.Contains(v, "RTMR0 NOT PINNED") {
			t.Fatalf("annotated verdict %q does not say RTMR0 is not pinned", v)
		}
	}
}

// --allow-simulated is honoured only for references marked dev and
// simulated: against a release reference the same simulated TD is
// contraindicated, naming the check.
func TestAllowSimulatedOnlyForDevReferences(t *testing.T) {
	for _, img := range []refvalues.Image{
		{Name: "sim-image", Version: "1"},
		{Name: "sim-image", Version: "1", Simulated: true},
		{Name: "sim-image", Version: "1", Dev: true},
	} {
		// A release reference must be signed (--reference-key).
		priv, pub, err := signing.GenerateKey("ecdsa-p256")
		if err != nil {
			t.Fatal(err)
		}
		keyPath := filepath.Join(t.TempDir(), "ref.pub")
		os.WriteFile(keyPath, pub, 0o644)
		f := newFixture(t, func(c *Config) { c.Dev, c.ReferenceKey = false, keyPath })
		f.td.writeReference(t, f.dir, "sim-image-1.json", img)
		plain, _ := os.ReadFile(filepath.Join(f.dir, "sim-image-1.json"))
		env, err := signing.Sign(plain, priv)
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(f.dir, "sim-image-1.json"))
		os.WriteFile(filepath.Join(f.dir, "sim-image-1.json.dsse"), env, 0o644)
		if err := f.svc.Reload(); err != nil {
			t.Fatal(err)
		}
		if active, _ := f.svc.refs.Load().counts(); active != 1 {
			t.Fatalf("%+v: signed reference not loaded: %q", img, f.svc.refs.Load().problems)
		}
		c, _ := f.attestOK(t, f.td.attest(t, f.nonce(t)))
		fails := strings.Join(failing(c), "\n")
		if status(c) != ear.TrustTierContraindicated || !strings.Contains(fails, verify.CheckSimulated) || c.TDX().TrustVector.Hardware != ear.ContraindicatedHardwareClaim {
			t.Fatalf("%+v: status %v, failing %s, vector %+v", img, status(c), fails, c.TDX().TrustVector)
		}
	}
}

// metric reads one sample of /metrics.
func (f *fixture) metric(t *testing.T, name string) float64 {
	t.Helper()
	_, b := f.get(t, PathMetrics)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no %s in /metrics:\n%s", name, b)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

type readiness struct {
	Ready      bool
	Reason     string
	Collateral struct {
		Source string
		Cache  collateral.CacheStatus
	}
}

func (f *fixture) ready(t *testing.T) (int, readiness) {
	t.Helper()
	code, b := f.get(t, PathReadyz)
	var r readiness
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("readyz %s: %v", b, err)
	}
	return code, r
}

// Online collateral: the service's cache is filled from the PCS, served
// while the PCS is down (reported in /readyz and /metrics), and once no
// cached TCB info is valid during an outage the replica is not ready.
func TestCollateralCacheOutage(t *testing.T) {
	pcs := pcstest.New(t)
	var mu sync.Mutex
	now := time.Date(2023, 7, 1, 1, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	cache := &collateral.Cache{Upstream: pcs.Online(), Refresh: time.Hour, Now: clock}
	f := newFixture(t, func(c *Config) { c.Cache = cache; c.Now = clock })

	if age := f.metric(t, "tdforge_collateral_age_seconds"); age != -1 {
		t.Fatalf("collateral age %v with an empty cache, want -1", age)
	}
	// An appraisal of a real quote fetches these four responses.
	for u := range tt.TestGetter.Responses {
		if _, _, err := f.svc.getter().Get(u); err != nil {
			t.Fatal(err)
		}
	}
	if code, r := f.ready(t); code != 200 || !r.Ready || len(r.Collateral.Cache.Entries) != 4 || r.Collateral.Cache.Outage != nil {
		t.Fatalf("readyz %d %+v", code, r)
	}

	pcs.SetDown(true)
	advance(2 * time.Hour)
	if err := cache.RefreshDue(); err == nil {
		t.Fatal("refresh succeeded with the PCS down")
	}
	code, r := f.ready(t)
	if code != 200 || !r.Ready || r.Collateral.Cache.Outage == nil || !strings.Contains(r.Collateral.Cache.Outage.LastError, "cannot fetch collateral") {
		t.Fatalf("outage with valid cached collateral: readyz %d %+v", code, r)
	}
	if n := f.metric(t, "tdforge_collateral_fetch_errors_total"); n != 4 {
		t.Fatalf("fetch errors %v, want 4", n)
	}
	if age := f.metric(t, "tdforge_collateral_age_seconds"); age < 7200 || age > 7300 {
		t.Fatalf("collateral age %v, want the 2 hours since the fetch", age)
	}
	// The cached collateral is still served.
	v := cache.View()
	for u := range tt.TestGetter.Responses {
		if _, _, err := v.Get(u); err != nil {
			t.Fatalf("cached %s not served during the outage: %v", u, err)
		}
	}

	// After the TCB info's nextUpdate (2023-07-18), still down: not ready.
	advance(18 * 24 * time.Hour)
	code, r = f.ready(t)
	if code != 503 || r.Ready || !strings.Contains(r.Reason, "Intel PCS unreachable") {
		t.Fatalf("outage with expired collateral: readyz %d %+v", code, r)
	}
}

// A replica that starts during a PCS outage is not ready after its first
// failed fetch, gets no traffic then, and must recover on its own: the
// background refresh retries the failed URLs.
func TestCollateralRecoversWithoutTraffic(t *testing.T) {
	pcs := pcstest.New(t)
	now := time.Date(2023, 7, 1, 1, 0, 0, 0, time.UTC)
	cache := &collateral.Cache{Upstream: pcs.Online(), Now: func() time.Time { return now }}
	f := newFixture(t, func(c *Config) { c.Cache = cache; c.Now = cache.Now })
	pcs.SetDown(true)
	var tcbURL string
	for u := range tt.TestGetter.Responses {
		if strings.Contains(u, "fmspc=") {
			tcbURL = u
		}
	}
	if _, _, err := f.svc.getter().Get(tcbURL); err == nil {
		t.Fatal("fetched with the PCS down")
	}
	if code, r := f.ready(t); code != 503 || r.Ready {
		t.Fatalf("outage with nothing cached: readyz %d %+v", code, r)
	}
	pcs.SetDown(false)
	if err := cache.RefreshDue(); err != nil {
		t.Fatal(err)
	}
	if code, r := f.ready(t); code != 200 || !r.Ready || r.Collateral.Cache.Outage != nil || len(r.Collateral.Cache.Entries) != 1 {
		t.Fatalf("after the PCS came back: readyz %d %+v", code, r)
	}
}

// A Kubernetes Secret volume: every file is a symlink through "..data" to
// a timestamped directory, and an update swaps "..data". The reload must
// see the new content although no symlink in the directory changed.
func TestReloadSecretVolume(t *testing.T) {
	f := newFixture(t, nil)
	vol := t.TempDir()
	v1 := filepath.Join(vol, "..2026_01_01_00_00_00.1")
	os.Mkdir(v1, 0o755)
	plain, err := os.ReadFile(filepath.Join(f.dir, "sim-image-1.json"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(v1, "sim-image-1.json"), plain, 0o644)
	os.Symlink(filepath.Base(v1), filepath.Join(vol, "..data"))
	os.Symlink(filepath.Join("..data", "sim-image-1.json"), filepath.Join(vol, "sim-image-1.json"))
	os.Symlink(filepath.Join("..data", RevokedFile), filepath.Join(vol, RevokedFile))
	f.svc.cfg.ReferenceDir = vol
	if err := f.svc.Reload(); err != nil {
		t.Fatal(err)
	}
	if active, revoked := f.svc.refs.Load().counts(); active != 1 || revoked != 0 {
		t.Fatalf("secret volume: %d active, %d revoked", active, revoked)
	}
	// The update: a new directory with a revocation list, then "..data" swapped.
	v2 := filepath.Join(vol, "..2026_01_01_00_01_00.2")
	os.Mkdir(v2, 0o755)
	os.WriteFile(filepath.Join(v2, "sim-image-1.json"), plain, 0o644)
	os.WriteFile(filepath.Join(v2, RevokedFile), []byte("sim-image@1 withdrawn\n"), 0o644)
	os.Symlink(filepath.Base(v2), filepath.Join(vol, "..data_tmp"))
	if err := os.Rename(filepath.Join(vol, "..data_tmp"), filepath.Join(vol, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, revoked := f.svc.refs.Load().counts(); revoked != 1 {
		t.Fatal("the Secret update (a swapped ..data symlink) was not reloaded")
	}
}

// The request decoder refuses what JSON parsers disagree on: a duplicate
// member (encoding/json kept the last one, another parser may keep the
// first) and invalid UTF-8; bad base64 names its field.
func TestDecodeStrict(t *testing.T) {
	f := newFixture(t, nil)
	good := mustJSON(t, f.td.attest(t, f.nonce(t)))
	dup := append([]byte(`{"quote":"AAAA",`), good[1:]...)
	code, b := f.post(t, PathAttest, dup)
	wantError(t, code, b, 400, "body", "duplicate")
	code, b = f.post(t, PathAttest, []byte("{\"version\":1,\"image\":{\"name\":\"\xff\"}}"))
	wantError(t, code, b, 400, "body", "UTF-8")
	code, b = f.post(t, PathAttest, []byte(`{"version":1,"quote":"***"}`))
	wantError(t, code, b, 400, "quote", "base64")
	// A Content-Length beyond the limit is refused without reading it all.
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+PathAttest, bytes.NewReader(make([]byte, DefaultMaxBody+10)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantError(t, resp.StatusCode, body, 413, "body", "limit")
}

// The Trustee evidence JSON (inside base64url) is decoded as strictly as
// the request: a duplicate "quote" member is refused, not resolved.
func TestTrusteeEvidenceDuplicate(t *testing.T) {
	f := newFixture(t, nil)
	d := f.td.attest(t, f.nonce(t))
	ev := mustJSON(t, TrusteeTDXEvidence{Quote: d.Quote, CCEventLog: d.CCEL, CCELTable: d.CCELTable, RuntimeLog: d.RuntimeLog})
	ev = append([]byte(`{"quote":"AAAA",`), ev[1:]...)
	n, _ := hex.DecodeString(d.ReportData.Nonce)
	spki, _ := hex.DecodeString(d.ReportData.SPKIHash)
	rd := base64.RawURLEncoding.EncodeToString(append(n, spki...))
	body := mustJSON(t, TrusteeRequest{VerificationRequests: []TrusteeVerification{{
		TEE: "tdx", Evidence: base64.RawURLEncoding.EncodeToString(ev),
		RuntimeData: &TrusteeRuntimeData{Raw: &rd}, RuntimeDataHashAlgorithm: "sha512",
	}}})
	code, b := f.post(t, PathTrustee, body)
	wantError(t, code, b, 400, "verification_requests[0].evidence", "duplicate")
}
