package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	tt "github.com/google/go-tdx-guest/testing"
	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/tdforge/tdforge/verifier/collateral"
)

// The CLI contract: exit codes for record, quote (offline bundle, no
// network, garbage input, unsigned reference with a key) and usage.
func TestCLIExitCodes(t *testing.T) {
	dir := t.TempDir()
	q := filepath.Join(dir, "q.dat")
	os.WriteFile(q, testdata.RawQuote, 0o644)
	bad := filepath.Join(dir, "bad.dat")
	os.WriteFile(bad, testdata.RawQuote[:100], 0o644)
	key := filepath.Join(dir, "key.pem")
	os.WriteFile(key, []byte("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"), 0o644)
	coll := filepath.Join(dir, "coll")
	if _, err := collateral.Fetch(testdata.RawQuote, tt.TestGetter, coll, time.Date(2023, 7, 1, 1, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	ref := filepath.Join(dir, "ref.json")
	devnull, _ := os.Open(os.DevNull)
	stdout := os.Stdout
	os.Stdout, _ = os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	defer func() { os.Stdout = stdout; devnull.Close() }()
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"no command", nil, 2},
		{"record", []string{"record", "--quote", q, "-o", ref}, 0},
		{"offline TCB out of date", []string{"quote", "--reference", ref, "--quote", q, "--collateral", coll, "--now", "2023-07-01T01:00:00Z", "--json"}, 1},
		{"garbage quote", []string{"quote", "--reference", ref, "--quote", bad, "--collateral", coll}, 2},
		{"unsigned reference with key", []string{"quote", "--reference", ref, "--reference-key", key, "--quote", q, "--collateral", coll}, 1},
		{"missing reference", []string{"quote", "--quote", q}, 2},
		{"half binding", []string{"quote", "--reference", ref, "--quote", q, "--collateral", coll, "--nonce", "00112233445566778899aabbccddeeff"}, 2},
		{"simulated without root", []string{"quote", "--reference", ref, "--quote", q, "--allow-simulated"}, 2},
		{"attest plain http", []string{"attest", "--reference", ref, "http://127.0.0.1:1"}, 2},
		{"attest unreachable", []string{"attest", "--reference", ref, "https://127.0.0.1:1"}, 3},
	} {
		if got := run(context.Background(), tc.args); got != tc.want {
			t.Errorf("%s: exit %d, want %d", tc.name, got, tc.want)
		}
	}
}
