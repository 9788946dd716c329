package quote

import (
	"os"
	"strings"
	"testing"
)

// The input go-tdx-guest's parser panics on (slice bounds out of range in
// signedDataToProto), as found by FuzzVerifyQuote.
func TestParseSurvivesParserPanic(t *testing.T) {
	raw, err := os.ReadFile("testdata/panic.quote")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(raw); err == nil || !strings.Contains(err.Error(), "malformed quote") {
		t.Fatalf("got %v", err)
	}
	if _, err := Parse(nil); err == nil {
		t.Fatal("empty quote parsed")
	}
}
