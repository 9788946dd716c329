package collateral_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	tt "github.com/google/go-tdx-guest/testing"

	"github.com/google/go-tdx-guest/testing/testdata"
	gverify "github.com/google/go-tdx-guest/verify"

	"github.com/tdforge/tdforge/verifier/collateral"
	"github.com/tdforge/tdforge/verifier/collateral/pcstest"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// verifySample verifies go-tdx-guest's sample quote with collateral from
// g at now. The sample platform's TCB is out of date, so a TCB error means
// the collateral was complete and its signatures verified.
func verifySample(g *collateral.CacheView, now time.Time) error {
	return gverify.RawTdxQuote(testdata.RawQuote, &gverify.Options{GetCollateral: true, CheckRevocations: true, Getter: g, Now: now, TrustedRoots: collateral.IntelRoots()})
}

func tcbError(err error) bool { return err != nil && strings.Contains(err.Error(), "TCB") }

func TestCacheRefreshAndOutage(t *testing.T) {
	pcs := pcstest.New(t)
	clk := &clock{t: time.Date(2023, 7, 1, 1, 0, 0, 0, time.UTC)}
	c := &collateral.Cache{Upstream: pcs.Online(), Refresh: time.Hour, Now: clk.now}
	if _, ok := c.OldestFetch(); ok {
		t.Fatal("an empty cache has an oldest fetch")
	}

	// First appraisal fetches the four responses; the second uses the cache.
	v := c.View()
	if err := verifySample(v, clk.now()); !tcbError(err) || v.Failure() != nil {
		t.Fatalf("first verification: %v (failure %v)", err, v.Failure())
	}
	if got := pcs.Requests(); got != 4 {
		t.Fatalf("first verification fetched %d responses, want 4", got)
	}
	if err := verifySample(c.View(), clk.now()); !tcbError(err) || pcs.Requests() != 4 {
		t.Fatalf("second verification: %v, %d requests (want the cache)", err, pcs.Requests())
	}
	st := c.Status()
	if len(st.Entries) != 4 || st.Outage != nil || st.FetchErrors != 0 {
		t.Fatalf("status %+v", st)
	}
	var tcb collateral.EntryStatus
	for _, e := range st.Entries {
		if e.Kind == "tcb-info" {
			tcb = e
		}
	}
	if tcb.FMSPC != "50806f000000" || !tcb.NextUpdate.Equal(time.Date(2023, 7, 18, 8, 42, 58, 0, time.UTC)) || !tcb.RefreshAt.Equal(clk.now().Add(time.Hour)) {
		t.Fatalf("tcb-info entry %+v", tcb)
	}

	// Nothing is due yet; after the refresh interval everything is.
	if err := c.RefreshDue(); err != nil || pcs.Requests() != 4 {
		t.Fatalf("refresh before due: %v, %d requests", err, pcs.Requests())
	}
	clk.add(61 * time.Minute)
	if err := c.RefreshDue(); err != nil || pcs.Requests() != 8 {
		t.Fatalf("due refresh: %v, %d requests, want 8", err, pcs.Requests())
	}
	if at, _ := c.OldestFetch(); !at.Equal(clk.now()) {
		t.Fatalf("oldest fetch %v after a full refresh at %v", at, clk.now())
	}

	// PCS down: the refresh fails, the outage is reported, and appraisals
	// are still served from the cache.
	pcs.SetDown(true)
	clk.add(2 * time.Hour)
	if err := c.RefreshDue(); err == nil || !errors.As(err, new(*collateral.NetworkError)) {
		t.Fatalf("refresh during an outage: %v", err)
	}
	st = c.Status()
	if st.Outage == nil || !st.Outage.Since.Equal(clk.now()) || st.Outage.LastError == "" || st.FetchErrors == 0 {
		t.Fatalf("outage not reported: %+v", st)
	}
	v = c.View()
	if err := verifySample(v, clk.now()); !tcbError(err) || v.Failure() != nil {
		t.Fatalf("verification from the cache during an outage: %v (failure %v)", err, v.Failure())
	}

	// PCS back: the next refresh ends the outage.
	pcs.SetDown(false)
	if err := c.RefreshDue(); err != nil || c.Status().Outage != nil {
		t.Fatalf("refresh after the outage: %v, %+v", err, c.Status().Outage)
	}

	// Past the QE identity's nextUpdate (2023-07-08) with the PCS down,
	// the expired response is not served: a network failure, no verdict.
	pcs.SetDown(true)
	clk.add(8 * 24 * time.Hour)
	v = c.View()
	err := verifySample(v, clk.now())
	if v.Failure() == nil || tcbError(err) {
		t.Fatalf("expired collateral served during an outage: %v (failure %v)", err, v.Failure())
	}
	// Within the backoff the next appraisal fails at once, without
	// waiting on the PCS again; after it, the PCS is tried again.
	errs := c.FetchErrors()
	v = c.View()
	if verifySample(v, clk.now()); v.Failure() == nil || c.FetchErrors() != errs {
		t.Fatalf("retried within the backoff: failure %v, fetch errors %d -> %d", v.Failure(), errs, c.FetchErrors())
	}
	clk.add(collateral.DefaultBackoff)
	if verifySample(c.View(), clk.now()); c.FetchErrors() == errs {
		t.Fatal("not retried after the backoff")
	}
	var expired []string
	for _, e := range c.Status().Entries {
		if e.Expired {
			expired = append(expired, e.Kind)
		}
	}
	if strings.Join(expired, ",") != "pck-crl-platform,qe-identity" {
		t.Fatalf("expired entries %v, want the PCK CRL and QE identity (valid to 2023-07-08)", expired)
	}
}

func TestCacheRefusesStaleAndGarbage(t *testing.T) {
	pcs := pcstest.New(t)
	// On 2023-08-01 every sample response but the root CRL is past its
	// nextUpdate: a PCS (or a host in the path) serving old collateral is
	// an outage, not a cache entry.
	clk := &clock{t: time.Date(2023, 8, 1, 0, 0, 0, 0, time.UTC)}
	c := &collateral.Cache{Upstream: pcs.Online(), Now: clk.now}
	v := c.View()
	if err := verifySample(v, clk.now()); v.Failure() == nil || !strings.Contains(v.Failure().Error(), "expired") {
		t.Fatalf("stale collateral: %v (failure %v)", err, v.Failure())
	}
	if c.Status().Outage == nil {
		t.Fatal("stale collateral not reported as an outage")
	}
	if _, _, err := c.Get(pcs.URL + "/nothing"); err == nil {
		t.Fatal("a 404 was cached")
	}
}

func TestCacheOneFetchPerURL(t *testing.T) {
	pcs := pcstest.New(t)
	pcs.Delay = 50 * time.Millisecond
	now := time.Date(2023, 7, 1, 1, 0, 0, 0, time.UTC)
	c := &collateral.Cache{Upstream: pcs.Online(), Now: func() time.Time { return now }}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := verifySample(c.View(), now); !tcbError(err) {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := pcs.Requests(); got != 4 {
		t.Fatalf("16 concurrent verifications fetched %d responses, want 4", got)
	}
}

// The FMSPC comes from a PCK certificate go-tdx-guest has not verified yet,
// so a client can make the service ask for any. The PCS's "not found" is
// its answer, not an outage: nothing is cached, remembered or retried;
// and during an outage the remembered failures stay bounded.
func TestCacheUnknownFMSPC(t *testing.T) {
	pcs := pcstest.New(t)
	now := time.Date(2023, 7, 1, 1, 0, 0, 0, time.UTC)
	c := &collateral.Cache{Upstream: pcs.Online(), Now: func() time.Time { return now }}
	var tcbURL string
	for u := range tt.TestGetter.Responses {
		if strings.Contains(u, "fmspc=") {
			tcbURL = u
		}
	}
	for i := range 100 {
		u := strings.Replace(tcbURL, "fmspc=50806f000000", fmt.Sprintf("fmspc=%012x", i), 1)
		_, _, err := c.Get(u)
		var se *collateral.StatusError
		if !errors.As(err, &se) || se.Code != 404 || errors.As(err, new(*collateral.NetworkError)) {
			t.Fatalf("unknown FMSPC: %v", err)
		}
	}
	st := c.Status()
	if st.Outage != nil || st.FetchErrors != 0 || len(st.Entries) != 0 {
		t.Fatalf("a 404 changed the cache: %+v", st)
	}
	before := pcs.Requests()
	if err := c.RefreshDue(); err != nil || pcs.Requests() != before {
		t.Fatalf("404s retried: %v, %d requests", err, pcs.Requests()-before)
	}

	// PCS down: 100 made-up FMSPCs; at most 64 are remembered and retried.
	pcs.SetDown(true)
	for i := range 100 {
		c.Get(strings.Replace(tcbURL, "fmspc=50806f000000", fmt.Sprintf("fmspc=%012x", i), 1))
	}
	pcs.SetDown(false)
	before = pcs.Requests()
	c.RefreshDue()
	if n := pcs.Requests() - before; n != 64 {
		t.Fatalf("the background refresh retried %d failed URLs, want the bound of 64", n)
	}
}
