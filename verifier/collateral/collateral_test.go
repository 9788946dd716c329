package collateral

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tt "github.com/google/go-tdx-guest/testing"
	"github.com/google/go-tdx-guest/testing/testdata"
)

func TestBundleRoundTrip(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2023, 7, 1, 1, 0, 0, 0, time.UTC)
	verr, err := Fetch(testdata.RawQuote, tt.TestGetter, dir, now)
	if err != nil {
		t.Fatal(err)
	}
	if verr == nil || !strings.Contains(verr.Error(), "TCB") {
		t.Fatalf("sample quote vs sample collateral: %v", verr)
	}
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b.Index.FMSPC != "50806f000000" || b.Index.CA != "platform" || len(b.Index.Entries) != 4 {
		t.Fatalf("index %+v", b.Index)
	}
	for url, want := range tt.TestGetter.Responses {
		h, body, err := b.Get(url)
		if err != nil || !bytes.Equal(body, want.Body) {
			t.Fatalf("%s: %v", url, err)
		}
		for k, v := range want.Header {
			if len(h[k]) != 1 || h[k][0] != v[0] {
				t.Fatalf("%s: header %s lost", url, k)
			}
		}
	}
	if _, _, err := b.Get("https://example.invalid/other"); !errors.As(err, new(*MissingError)) || b.Missing() == nil || b.Missing().URL != "https://example.invalid/other" {
		t.Fatalf("missing entry: %v (recorded %v)", err, b.Missing())
	}
	os.WriteFile(filepath.Join(dir, IndexFile), []byte(`{"schema":"other"}`), 0o644)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "schema") {
		t.Fatalf("bad schema: %v", err)
	}
	if _, err := Open(t.TempDir()); !errors.Is(err, fs.ErrNotExist) || strings.Contains(err.Error(), "verifier") {
		t.Fatalf("empty dir: %v", err)
	}
	if _, err := Fetch([]byte("junk"), tt.TestGetter, t.TempDir(), now); err == nil {
		t.Fatal("junk quote fetched")
	}
}
