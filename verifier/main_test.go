package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tt "github.com/google/go-tdx-guest/testing"
	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/signing"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/internal/testutil/simtd"
	"github.com/tdforge/tdforge/verifier/collateral"
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
	// A dev reference: only dev references may be used unsigned.
	if code, _, stderr := runCLI("record", "--dev", "--quote", f.quote, "--collateral", f.coll, "--now", "2023-07-01T01:00:00Z", "-o", f.ref); code != cli.ExitOK {
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

// Issue 12 section 1: a signed reference is never used unverified. Given
// without its key (even with a garbage signature) it is a usage error
// naming --reference-key; with the wrong key it is refused. Before the fix
// both were read with a SKIPPED signature check. A plain release (non-dev)
// reference without a key is refused, naming `builder sign`.
func TestReferenceSignaturePolicy(t *testing.T) {
	f := newFixture(t)
	raw, err := os.ReadFile(f.ref)
	if err != nil {
		t.Fatal(err)
	}
	priv, pub, err := signing.GenerateKey("ecdsa-p256")
	if err != nil {
		t.Fatal(err)
	}
	_, otherPub, _ := signing.GenerateKey("ecdsa-p256")
	env, err := signing.Sign(raw, priv)
	if err != nil {
		t.Fatal(err)
	}
	w := func(name string, b []byte) string {
		p := filepath.Join(f.dir, name)
		os.WriteFile(p, b, 0o644)
		return p
	}
	signed, key, other := w("ref.dsse.json", env), w("pub.pem", pub), w("other.pem", otherPub)
	bogus := w("bogus.dsse.json", []byte(strings.Replace(string(env), `"sig": "`, `"sig": "AAAA`, 1)))
	if b, _ := os.ReadFile(bogus); bytes.Equal(b, env) {
		t.Fatal("no signature to spoil")
	}
	offline := []string{"--quote", f.quote, "--collateral", f.coll, "--now", "2023-07-01T01:00:00Z"}
	for _, p := range []string{signed, bogus} {
		for _, cmd := range []string{"quote", "explain"} {
			args := append([]string{"quote", "--reference", p}, offline...)
			if cmd == "explain" {
				args = []string{"explain", "--reference", p, w("ev.json", []byte("{}"))}
			}
			code, stdout, stderr := runCLI(args...)
			if code != cli.ExitUsage || stdout != "" || !strings.Contains(stderr, "no reference key was given") || !strings.Contains(stderr, "hint: pass --reference-key PEM") {
				t.Errorf("%s %s without key: exit %d\nstdout:\n%s\nstderr:\n%s", cmd, p, code, stdout, stderr)
			}
		}
	}
	code, stdout, _ := runCLI(append([]string{"quote", "--reference", bogus, "--reference-key", key}, offline...)...)
	if code != cli.ExitFail || !strings.Contains(stdout, "reference values signature  FAIL") {
		t.Errorf("bogus envelope with key: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = runCLI(append([]string{"quote", "--reference", signed, "--reference-key", other}, offline...)...)
	if code != cli.ExitFail || !strings.Contains(stdout, "signature check with") {
		t.Errorf("wrong key: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = runCLI(append([]string{"quote", "--reference", signed, "--reference-key", key}, offline...)...)
	if !strings.Contains(stdout, "reference values signature  PASS") {
		t.Errorf("good signature: exit %d\n%s", code, stdout)
	}
	// The plain dev document needs no key and prints today's SKIPPED line.
	_, stdout, _ = runCLI(append([]string{"quote", "--reference", f.ref}, offline...)...)
	if !strings.Contains(stdout, "reference values signature  SKIPPED  no reference key given: the reference document is trusted as read") {
		t.Fatalf("plain dev reference:\n%s", stdout)
	}
	// A plain release document is refused and names the fix.
	rel := w("release.json", []byte(strings.Replace(string(raw), `"dev": true`, `"dev": false`, 1)))
	code, stdout, _ = runCLI(append([]string{"quote", "--reference", rel}, offline...)...)
	if code != cli.ExitFail || !strings.Contains(stdout, "only dev references may be used unsigned; sign the reference values with `builder sign` and pass the signed file with --reference-key PEM") {
		t.Fatalf("plain release reference: exit %d\n%s", code, stdout)
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

// --accept-unpinned on the command line, and `reference merge` adding and
// replacing an accepted RTMR0 value.
func TestAcceptUnpinnedAndMergeCLI(t *testing.T) {
	f := newFixture(t)
	raw, err := os.ReadFile(f.ref)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := refvalues.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	doc.Registers.RTMR0 = nil
	doc.Reasons = map[string]string{"rtmr0": "no ACPI digests"}
	b, _ := doc.Marshal()
	open := filepath.Join(f.dir, "open.json")
	os.WriteFile(open, b, 0o644)
	offline := []string{"--quote", f.quote, "--collateral", f.coll, "--now", "2023-07-01T01:00:00Z"}

	code, stdout, _ := runCLI(append([]string{"quote", "--reference", open}, offline...)...)
	if code != cli.ExitFail || !strings.Contains(stdout, "RTMR0                       FAIL     NOT PINNED") || !strings.Contains(stdout, "pass --accept-unpinned REGISTER") {
		t.Fatalf("unpinned RTMR0: exit %d\n%s", code, stdout)
	}
	_, stdout, _ = runCLI(append([]string{"quote", "--reference", open, "--accept-unpinned", "rtmr1,rtmr0", "--json"}, offline...)...)
	if !strings.Contains(stdout, `"accepted_unpinned": [`) || !strings.Contains(stdout, "NOT PINNED, accepted by the options") {
		t.Fatalf("accepted RTMR0:\n%s", stdout)
	}
	if code, _, stderr := runCLI(append([]string{"quote", "--reference", open, "--accept-unpinned", "rtmr9"}, offline...)...); code != cli.ExitUsage || !strings.Contains(stderr, "want mrtd, rtmr0") {
		t.Fatalf("bad register: exit %d\n%s", code, stderr)
	}

	out := filepath.Join(f.dir, "merged.json")
	for i, want := range []string{`added accepted RTMR0 value "host-a" (1 in the set)`, `replaced accepted RTMR0 value "host-a" (1 in the set)`} {
		in := open
		if i > 0 {
			in = out
		}
		code, _, stderr := runCLI("reference", "merge", "--reference", in, "--recorded", f.ref, "--shape", "host-a", "-o", out)
		if code != cli.ExitOK || !strings.Contains(stderr, want) {
			t.Fatalf("merge %d: exit %d\n%s", i, code, stderr)
		}
	}
	code, stdout, _ = runCLI(append([]string{"quote", "--reference", out}, offline...)...)
	if !strings.Contains(stdout, "RTMR0 matches accepted value 'host-a'") {
		t.Fatalf("merged reference: exit %d\n%s", code, stdout)
	}
	if code, _, stderr := runCLI("reference", "merge", "--reference", f.ref, "--recorded", f.ref, "--shape", "x", "-o", out); code != cli.ExitUsage || !strings.Contains(stderr, "already pins RTMR0") {
		t.Fatalf("merge into a pinned RTMR0: exit %d\n%s", code, stderr)
	}
}

// record refuses evidence whose quote is not authentic: its recording
// would become an accepted value for every future TD. Before the fix a
// forged quote (RTMR0 edited after signing) was recorded with exit 0.
func TestRecordRefusesForgedEvidence(t *testing.T) {
	f := newFixture(t)
	offline := []string{"--collateral", f.coll, "--now", "2023-07-01T01:00:00Z"}
	forged := append([]byte(nil), testdata.RawQuote...)
	forged[48+328+4] ^= 0xff // a byte of RTMR0 in the TD quote body
	fq := filepath.Join(f.dir, "forged.dat")
	os.WriteFile(fq, forged, 0o644)
	out := filepath.Join(f.dir, "rec.json")
	code, _, stderr := runCLI(append([]string{"record", "--quote", fq, "-o", out}, offline...)...)
	if code != cli.ExitFail || !strings.Contains(stderr, "refusing to record: quote authenticity") {
		t.Fatalf("forged quote: exit %d\n%s", code, stderr)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("forged quote recorded")
	}
	// The genuine quote is recorded; its out-of-date TCB is a warning.
	code, _, stderr = runCLI(append([]string{"record", "--quote", f.quote, "-o", out}, offline...)...)
	if code != cli.ExitOK || !strings.Contains(stderr, "warning: TCB status") {
		t.Fatalf("genuine quote: exit %d\n%s", code, stderr)
	}

	// A saved response from a simulated TD: recorded only with the
	// simulator root allowed, as a dev simulated image, and with
	// REPORTDATA binding the nonce and TLS key the response names.
	td := simtd.New(t, nil, simtd.Registers(0x11, 0x22))
	nonce := []byte("a nonce of thirty-two bytes ....")
	resp, err := td.Attest(nonce, attestation.SPKIHash(simtd.SelfSigned(t).Leaf.RawSubjectPublicKeyInfo))
	if err != nil {
		t.Fatal(err)
	}
	save := func(name string, r *attestation.Response) string {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(f.dir, name)
		os.WriteFile(p, b, 0o644)
		return p
	}
	ev := save("ev.json", resp)
	root := filepath.Join(f.dir, "sim-root.pem")
	os.WriteFile(root, []byte(td.PKI.RootCert), 0o644)
	other, err := sim.NewPKI()
	if err != nil {
		t.Fatal(err)
	}
	otherRoot := filepath.Join(f.dir, "other-root.pem")
	os.WriteFile(otherRoot, []byte(other.RootCert), 0o644)
	replayed := *resp
	replayed.ReportData.Nonce = hex.EncodeToString([]byte("another nonce of 32 bytes ......"))
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no simulator root", []string{"--evidence", ev, "--dev", "--simulated"}, cli.ExitFail, "hint: a simulated quote? for dev images pass --allow-simulated --sim-root FILE"},
		{"another simulator root", []string{"--evidence", ev, "--dev", "--simulated", "--allow-simulated", "--sim-root", otherRoot}, cli.ExitFail, "refusing to record: quote authenticity"},
		{"not a simulated image", []string{"--evidence", ev, "--allow-simulated", "--sim-root", root}, cli.ExitFail, "refusing to record: simulated platform"},
		{"nonce not bound", []string{"--evidence", save("replayed.json", &replayed), "--dev", "--simulated", "--allow-simulated", "--sim-root", root}, cli.ExitFail, "refusing to record: freshness and TLS binding"},
		{"simulated without root", []string{"--evidence", ev, "--dev", "--simulated", "--allow-simulated"}, cli.ExitUsage, "--allow-simulated needs --sim-root"},
		{"authentic", []string{"--evidence", ev, "--dev", "--simulated", "--allow-simulated", "--sim-root", root}, cli.ExitOK, "wrote"},
	} {
		os.Remove(out)
		code, _, stderr := runCLI(append([]string{"record", "-o", out}, tc.args...)...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: exit %d, want %d and %q\n%s", tc.name, code, tc.code, tc.want, stderr)
		}
		if _, err := os.Stat(out); (err == nil) != (tc.code == cli.ExitOK) {
			t.Errorf("%s: output written: %v", tc.name, err == nil)
		}
	}
}
