package service

import (
	"bytes"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	tt "github.com/google/go-tdx-guest/testing"
	"github.com/google/go-tdx-guest/testing/testdata"
	"github.com/google/go-tdx-guest/verify/trust"
	"github.com/veraison/ear"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/verifier/collateral"
	"github.com/tdforge/tdforge/verifier/nonce"
)

// Two replicas sharing only the signing key and nonce secret, behind a
// round-robin proxy: a nonce from one is accepted by the other, and one
// JWKS verifies the tokens of both.
func TestReplicasRoundRobin(t *testing.T) {
	a := newFixture(t, nil)
	b := newFixture(t, func(c *Config) {
		c.Keys = a.svc.cfg.Keys
		c.SimRoots = a.svc.cfg.SimRoots
		c.Nonces, _ = nonce.New([]byte(secret), time.Minute) // its own replay set
	})
	b.writeSame(t, a)
	var n atomic.Int64
	backends := []*url.URL{mustURL(t, a.srv.URL), mustURL(t, b.srv.URL)}
	lb := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(backends[n.Add(1)%2])
	}})
	defer lb.Close()
	via := &fixture{td: a.td, srv: lb}

	seen := map[string]bool{}
	for i := 0; i < 4; i++ {
		d := a.td.attest(t, via.nonce(t)) // nonce from one replica, attestation to the other
		c, _ := via.attestOK(t, d)        // verified with the JWKS of whichever replica answers
		if status(c) != ear.TrustTierWarning {
			t.Fatalf("status %v, failing %v", status(c), failing(c))
		}
		seen[c.KeyID] = true
	}
	if len(seen) != 1 {
		t.Fatalf("replicas signed with %d keys", len(seen))
	}
	if n.Load() < 8 {
		t.Fatalf("proxy saw %d requests", n.Load())
	}
}

// writeSame replaces f's reference directory content with o's (the
// replicas share configuration).
func (f *fixture) writeSame(t *testing.T, o *fixture) {
	t.Helper()
	f.td = o.td
	o.td.writeReference(t, f.dir, "sim-image-1.json", refImage())
	if err := f.svc.Reload(); err != nil {
		t.Fatal(err)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// go-tdx-guest's real production quote is parsed like any other, and
// refused because its REPORTDATA does not bind the service's nonce; the
// offline collateral bundle's age is exported.
func TestProductionQuote(t *testing.T) {
	dir := t.TempDir()
	sampleTime := time.Date(2023, 7, 1, 1, 0, 0, 0, time.UTC)
	if _, err := collateral.Fetch(testdata.RawQuote, tt.TestGetter, dir, sampleTime); err != nil {
		t.Fatal(err)
	}
	bundle, err := collateral.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(c *Config) { c.Collateral = bundle; c.Now = func() time.Time { return sampleTime } })
	d := &attestation.Response{Version: 1, Quote: testdata.RawQuote, QuoteProvider: "configfs-tsm",
		ReportData: attestation.ReportDataInfo{Nonce: hex.EncodeToString(f.nonce(t)), SPKIHash: strings.Repeat("11", 32)}}
	code, b := f.post(t, PathAttest, mustJSON(t, d))
	wantError(t, code, b, 400, "report_data.value", "does not bind")
	_, m := f.get(t, PathMetrics)
	if bytes.Contains(m, []byte("tdforge_collateral_age_seconds -1")) || !bytes.Contains(m, []byte("tdforge_collateral_age_seconds")) {
		t.Fatalf("collateral age not exported for a bundle:\n%s", m)
	}
	if code, r := f.get(t, PathReadyz); code != http.StatusOK || !bytes.Contains(r, []byte(bundle.Index.FMSPC)) {
		t.Fatalf("readyz %d %s", code, r)
	}
}

// Without --collateral verify fetches online through the service's cache:
// each appraisal gets its own view (which reports its network failures),
// never a typed nil bundle (which verify would call and crash on).
func TestOnlineCollateralGetter(t *testing.T) {
	f := newFixture(t, nil)
	var g trust.HTTPSGetter = f.svc.getter() // as policy holds it
	if v, ok := g.(*collateral.CacheView); !ok || v == nil || f.svc.getter() == g {
		t.Fatalf("getter without a bundle is %#v, want a fresh view of the cache", g)
	}
}
