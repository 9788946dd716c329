package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/tdx/sim"
)

// The simulator root is a certificate only: a pki.json, or a PEM file with
// a private key after the root, is refused and the error names sim-root.pem.
func TestSimRootIsACertificateOnly(t *testing.T) {
	pki, err := sim.NewPKI()
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(pki)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := readSimRoot(write("pki.json", string(js))); err == nil || !strings.Contains(err.Error(), "sim-root.pem") {
		t.Fatalf("pki.json accepted as --sim-root: %v", err)
	}
	// The root followed by the attestation key is not the root alone
	// (before sim.ParseRoot, only the first PEM block was looked at).
	if _, err := readSimRoot(write("root-and-key.pem", pki.RootCert+pki.AttestationKey)); err == nil || !strings.Contains(err.Error(), "sim-root.pem") {
		t.Fatalf("a root with a private key accepted as --sim-root: %v", err)
	}
	if _, err := readSimRoot(write("sim-root.pem", pki.RootCert)); err != nil {
		t.Fatalf("root certificate refused: %v", err)
	}
	if _, err := readSimRoot(filepath.Join(dir, "missing.pem")); err == nil || !strings.Contains(err.Error(), "--sim-root") {
		t.Fatalf("a missing file: %v", err)
	}
}

// With --attestation-service the service's references and policy decide:
// local policy flags are refused, not silently ignored; the service URL
// must be https (plain http only on loopback); an unreachable service is a
// network error.
func TestAttestationServiceFlags(t *testing.T) {
	const agent = "https://127.0.0.1:1"
	up := httptest.NewTLSServer(http.NotFoundHandler())
	defer up.Close()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"attest", "--attestation-service", "http://127.0.0.1:1", "--reference", "ref.json", agent}, cli.ExitUsage, "--reference"},
		{[]string{"proxy", "--attestation-service", "http://127.0.0.1:1", "--allow-simulated", agent}, cli.ExitUsage, "--allow-simulated"},
		{[]string{"attest", "--attestation-service", "http://service.example", agent}, cli.ExitUsage, "plain http only to a loopback"},
		{[]string{"attest", "--service-ca", "ca.pem", "--reference", "ref.json", agent}, cli.ExitUsage, "without --attestation-service"},
		{[]string{"attest", "--attestation-service", "https://127.0.0.1:1", "--service-ca", "/nonexistent/ca.pem", agent}, cli.ExitUsage, "--service-ca"},
		{[]string{"attest", "--attestation-service", "http://127.0.0.1:1", up.URL}, cli.ExitNetwork, "cannot reach the attestation service"},
	} {
		code, _, stderr := runCLI(tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d naming %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
}
