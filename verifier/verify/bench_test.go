package verify_test

import (
	"context"
	"testing"
	"time"

	tt "github.com/google/go-tdx-guest/testing"
	"github.com/google/go-tdx-guest/testing/testdata"
	"github.com/google/go-tdx-guest/validate"
	gverify "github.com/google/go-tdx-guest/verify"

	"github.com/tdforge/tdforge/verifier/collateral"
	"github.com/tdforge/tdforge/verifier/explain"
	"github.com/tdforge/tdforge/verifier/verify"
)

// BenchmarkVerifyQuote times one full verification of the production sample
// quote with cached (offline bundle) collateral, report included, against
// the baseline of go-tdx-guest's own verify.RawTdxQuote (same collateral
// getter, revocation on) plus validate.RawTdxQuote with the same
// expectations. Metric "x-vs-go-tdx-guest" is ours/baseline (goal <= 1.2).
func BenchmarkVerifyQuote(b *testing.B) {
	doc := sampleReference(b)
	bundle := sampleBundle(b)
	vopts := validate.Options{TdQuoteBodyOptions: validate.TdQuoteBodyOptions{}}
	body := mustRegs(b)
	vopts.TdQuoteBodyOptions.MrTd = body[0][:]
	vopts.TdQuoteBodyOptions.Rtmrs = [][]byte{body[1][:], body[2][:], body[3][:], body[4][:]}
	baseline := func() {
		gverify.RawTdxQuote(testdata.RawQuote, &gverify.Options{GetCollateral: true, CheckRevocations: true, Getter: tt.TestGetter, Now: sampleTime, TrustedRoots: collateral.IntelRoots()})
		validate.RawTdxQuote(testdata.RawQuote, &vopts)
	}
	ours := func() {
		r := verify.Verify(context.Background(), verify.Evidence{Quote: testdata.RawQuote}, verify.Options{Reference: doc, Getter: bundle, Now: sampleTime})
		if !r.Failed(verify.CheckTCB) || r.Failed(verify.CheckAuthenticity) {
			b.Fatal("unexpected verdict")
		}
	}
	var tBase, tOurs time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		baseline()
		t1 := time.Now()
		ours()
		tOurs += time.Since(t1)
		tBase += t1.Sub(t0)
	}
	b.ReportMetric(float64(tOurs.Nanoseconds())/float64(b.N), "ours-ns/op")
	b.ReportMetric(float64(tBase.Nanoseconds())/float64(b.N), "go-tdx-guest-ns/op")
	b.ReportMetric(float64(tOurs)/float64(tBase), "x-vs-go-tdx-guest")
}

func mustRegs(b *testing.B) explain.Quote {
	b.Helper()
	_, regs, err := verify.ParseQuote(testdata.RawQuote)
	if err != nil {
		b.Fatal(err)
	}
	return regs
}
