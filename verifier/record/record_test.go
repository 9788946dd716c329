package record

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/internal/testutil/testdeps"
	"github.com/tdforge/tdforge/verifier/verify"
)

// The recorded document pins the quote's registers and TD fields.
func TestReferenceFromSampleQuote(t *testing.T) {
	doc, err := Reference(verify.Evidence{Quote: testdata.RawQuote}, refvalues.Image{Name: "sample"})
	if err != nil {
		t.Fatal(err)
	}
	q, regs, err := verify.ParseQuote(testdata.RawQuote)
	if err != nil {
		t.Fatal(err)
	}
	for _, reg := range register.All {
		if v := doc.Registers.Get(reg); v == nil || *v != hex.EncodeToString(regs[reg][:]) {
			t.Errorf("%s = %v, want the quote's value", reg, v)
		}
	}
	if doc.Source != "recorded" || doc.Image.Name != "sample" || doc.TD.DebugAllowed ||
		doc.TD.XFAM != hex.EncodeToString(q.GetTdQuoteBody().GetXfam()) || len(doc.Events) != 0 {
		t.Fatalf("document %+v", doc)
	}
	if _, err := Reference(verify.Evidence{Quote: []byte("junk")}, refvalues.Image{}); err == nil {
		t.Fatal("junk quote recorded")
	}
}

// A firmware log from another boot (go-eventlog's COS fixture against the
// sample quote) does not replay, and nothing is recorded.
func TestReferenceRefusesForeignLogs(t *testing.T) {
	ccel := testdeps.EventlogFixture(t, "cos-113-intel-tdx.bin")
	table := testdeps.EventlogFixture(t, "cos-113-intel-tdx.table.bin")
	_, err := Reference(verify.Evidence{Quote: testdata.RawQuote, CCEL: ccel, CCELTable: table}, refvalues.Image{Name: "x"})
	if err == nil || !strings.Contains(err.Error(), "refusing to record") || !strings.Contains(err.Error(), "RTMR0") {
		t.Fatalf("err = %v", err)
	}
}
