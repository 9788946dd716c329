package verify_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/tdforge/tdforge/verifier/collateral"
	"github.com/tdforge/tdforge/verifier/collateral/pcstest"
	"github.com/tdforge/tdforge/verifier/verify"
)

// A collateral cache that cannot reach the PCS is a network failure (no
// verdict on the evidence), like the online getter; with the PCS up the
// cache gives the same appraisal as the offline bundle.
func TestCacheViewNetworkFailure(t *testing.T) {
	doc := sampleReference(t)
	pcs := pcstest.New(t)
	now := sampleTime
	cache := &collateral.Cache{Upstream: pcs.Online(), Now: func() time.Time { return now }}
	ev := verify.Evidence{Quote: testdata.RawQuote}

	pcs.SetDown(true)
	r := verify.Verify(context.Background(), ev, verify.Options{Reference: doc, Getter: cache.View(), Now: sampleTime})
	if r.ErrorKind != verify.ErrNetwork {
		t.Fatalf("PCS down: error kind %q, want %q (a signed verdict on a network failure)", r.ErrorKind, verify.ErrNetwork)
	}
	want(t, r, verify.CheckAuthenticity, verify.Fail, "cannot fetch collateral")

	pcs.SetDown(false)
	now = now.Add(collateral.DefaultBackoff) // past the retry backoff
	r = verify.Verify(context.Background(), ev, verify.Options{Reference: doc, Getter: cache.View(), Now: now})
	want(t, r, verify.CheckAuthenticity, verify.Pass, "Intel SGX Root CA")
	want(t, r, verify.CheckTCB, verify.Fail, "no matching TCB level")
	if r.ErrorKind != "" {
		t.Fatalf("PCS up: error kind %q", r.ErrorKind)
	}
}
