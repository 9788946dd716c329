package quote

import (
	"os"
	"strings"
	"testing"

	"github.com/google/go-tdx-guest/testing/testdata"
)

// The input go-tdx-guest's parser panics on (slice bounds out of range in
// signedDataToProto), as found by FuzzVerifyQuote.
func TestParseSurvivesParserPanic(t *testing.T) {
	raw, err := os.ReadFile("testdata/panic.quote")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(raw); err == nil || !strings.Contains(err.Error(), "the parser failed") {
		t.Fatalf("got %v", err)
	}
	if _, err := Parse(nil); err == nil {
		t.Fatal("empty quote parsed")
	}
}

func TestParseSampleQuote(t *testing.T) {
	q, err := Parse(testdata.RawQuote)
	if err != nil || len(q.GetTdQuoteBody().GetRtmrs()) != 4 {
		t.Fatalf("sample quote: %v", err)
	}
	if _, err := Parse(testdata.RawQuote[:40]); err == nil || !strings.Contains(err.Error(), "not a TDX quote v4") {
		t.Fatalf("truncated quote: %v", err)
	}
}
