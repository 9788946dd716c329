package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tt "github.com/google/go-tdx-guest/testing"
	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/tdx/signing"
	"github.com/tdforge/tdforge/verifier/collateral"
	"github.com/tdforge/tdforge/verifier/reference"
)

// fixture writes the sample quote, a truncated one, a junk key, an offline
// collateral bundle and a reference recorded from the quote.
type fixture struct{ dir, quote, bad, key, coll, ref string }

func newFixture(t *testing.T) fixture {
	t.Helper()
	dir := t.TempDir()
	f := fixture{dir: dir, quote: filepath.Join(dir, "q.dat"), bad: filepath.Join(dir, "bad.dat"),
		key: filepath.Join(dir, "key.pem"), coll: filepath.Join(dir, "coll"), ref: filepath.Join(dir, "ref.json")}
	os.WriteFile(f.quote, testdata.RawQuote, 0o644)
	os.WriteFile(f.bad, testdata.RawQuote[:100], 0o644)
	os.WriteFile(f.key, []byte("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"), 0o644)
	if _, err := collateral.Fetch(testdata.RawQuote, tt.TestGetter, f.coll, time.Date(2023, 7, 1, 1, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCLI("record", "--quote", f.quote, "-o", f.ref); code != cli.ExitOK {
		t.Fatalf("record: exit %d\n%s", code, stderr)
	}
	return f
}

// runCLI runs the verifier's command table with buffers.
func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = program.Run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// The CLI contract: exit codes for record, quote (offline bundle, no
// network, garbage input, unsigned reference with a key) and usage.
func TestCLIExitCodes(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"no command", nil, cli.ExitUsage},
		{"help", []string{"help"}, cli.ExitOK},
		{"unknown command", []string{"nope"}, cli.ExitUsage},
		{"command help", []string{"quote", "-h"}, cli.ExitOK},
		{"bad flag", []string{"quote", "--nope"}, cli.ExitUsage},
		{"offline TCB out of date", []string{"quote", "--reference", f.ref, "--quote", f.quote, "--collateral", f.coll, "--now", "2023-07-01T01:00:00Z", "--json"}, cli.ExitFail},
		{"garbage quote", []string{"quote", "--reference", f.ref, "--quote", f.bad, "--collateral", f.coll}, cli.ExitUsage},
		{"unsigned reference with key", []string{"quote", "--reference", f.ref, "--reference-key", f.key, "--quote", f.quote, "--collateral", f.coll}, cli.ExitFail},
		{"missing reference", []string{"quote", "--quote", f.quote}, cli.ExitUsage},
		{"half binding", []string{"quote", "--reference", f.ref, "--quote", f.quote, "--collateral", f.coll, "--nonce", "00112233445566778899aabbccddeeff"}, cli.ExitUsage},
		{"simulated without root", []string{"quote", "--reference", f.ref, "--quote", f.quote, "--allow-simulated"}, cli.ExitUsage},
		{"attest plain http", []string{"attest", "--reference", f.ref, "http://127.0.0.1:1"}, cli.ExitUsage},
		{"attest unreachable", []string{"attest", "--reference", f.ref, "https://127.0.0.1:1"}, cli.ExitNetwork},
		{"collateral without fetch", []string{"collateral"}, cli.ExitUsage},
	} {
		if got, stdout, stderr := runCLI(tc.args...); got != tc.want {
			t.Errorf("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", tc.name, got, tc.want, stdout, stderr)
		}
	}
}

// A usage error names the problem, then the flag that fixes it as a hint,
// then the command's usage; nothing goes to stdout.
func TestUsageErrorHints(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"quote", "--reference", f.ref}, []string{"verifier quote: no quote given\n", "verifier quote: hint: add --quote FILE\n", "usage: verifier quote"}},
		{[]string{"quote", "--quote", f.quote}, []string{"verifier quote: no reference values given\n", "verifier quote: hint: add --reference FILE"}},
		{[]string{"record", "--quote", f.quote}, []string{"verifier record: no output file given\n", "verifier record: hint: add -o FILE\n"}},
		{[]string{"attest", "--reference", f.ref}, []string{"verifier attest: want exactly one agent URL\n", "verifier attest: hint: verifier attest [flags] https://AGENT:PORT\n"}},
		{[]string{"quote", "--reference", f.ref, "--quote", f.quote, "--collateral", filepath.Join(f.dir, "none")}, []string{"verifier quote: hint: write one with `verifier collateral fetch -o "}},
	} {
		code, stdout, stderr := runCLI(tc.args...)
		if code != cli.ExitUsage || stdout != "" {
			t.Errorf("%q: exit %d, stdout %q", tc.args, code, stdout)
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%q: stderr lacks %q:\n%s", tc.args, w, stderr)
			}
		}
	}
}

// A signed reference given without its key: the library states the fact,
// the command adds the flag to the check's reason.
func TestEnvelopeWithoutKeyHint(t *testing.T) {
	f := newFixture(t)
	raw, err := os.ReadFile(f.ref)
	if err != nil {
		t.Fatal(err)
	}
	priv, _, err := signing.GenerateKey("ecdsa-p256")
	if err != nil {
		t.Fatal(err)
	}
	env, err := signing.Sign(raw, priv)
	if err != nil {
		t.Fatal(err)
	}
	signed := filepath.Join(f.dir, "ref.dsse.json")
	os.WriteFile(signed, env, 0o644)

	_, chk, err := reference.Load(signed, "")
	if err != nil || strings.Contains(chk.Reason, "--") || chk.Cause == nil {
		t.Fatalf("library check %+v, %v: want a cause and no flag in the reason", chk, err)
	}
	code, stdout, _ := runCLI("quote", "--reference", signed, "--quote", f.quote, "--collateral", f.coll, "--now", "2023-07-01T01:00:00Z")
	want := chk.Reason + "; pass --reference-key PEM to check it"
	if code != cli.ExitFail || !strings.Contains(stdout, "reference values signature  SKIPPED  "+want) {
		t.Fatalf("exit %d, want a SKIPPED signature check reading %q:\n%s", code, want, stdout)
	}
	// The plain document needs no key: no hint.
	_, stdout, _ = runCLI("quote", "--reference", f.ref, "--quote", f.quote, "--collateral", f.coll, "--now", "2023-07-01T01:00:00Z")
	if strings.Contains(stdout, "--reference-key") || !strings.Contains(stdout, "trusted as read") {
		t.Fatalf("plain reference:\n%s", stdout)
	}
}

// Help goes to stdout and lists every command of the table.
func TestHelp(t *testing.T) {
	code, stdout, _ := runCLI("help")
	if code != cli.ExitOK {
		t.Fatalf("exit %d", code)
	}
	for _, c := range program.Commands {
		if !strings.Contains(stdout, "  "+c.Name+" ") {
			t.Errorf("help lacks %s:\n%s", c.Name, stdout)
		}
	}
}
