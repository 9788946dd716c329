package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/testutil/syncbuf"

	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/verifier/result"
	"github.com/tdforge/tdforge/verifier/verify"
)

// serveFiles writes a signing key, a nonce secret and a reference
// directory holding the sample quote's recorded reference.
func serveFiles(t *testing.T) (keyPath, secretPath, refDir string, key *ecdsa.PrivateKey) {
	f := newFixture(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalECPrivateKey(key)
	keyPath = filepath.Join(f.dir, "result-key.pem")
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
	secretPath = filepath.Join(f.dir, "nonce-secret")
	os.WriteFile(secretPath, bytes.Repeat([]byte{7}, 32), 0o600)
	refDir = filepath.Join(f.dir, "refs")
	os.Mkdir(refDir, 0o755)
	b, _ := os.ReadFile(f.ref)
	os.WriteFile(filepath.Join(refDir, "sample.json"), b, 0o644)
	return keyPath, secretPath, refDir, key
}

func TestServeUsage(t *testing.T) {
	keyPath, secretPath, refDir, _ := serveFiles(t)
	short := filepath.Join(t.TempDir(), "short")
	os.WriteFile(short, []byte("short"), 0o600)
	base := []string{"serve", "--insecure-http", "--listen", "127.0.0.1:0"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"HTTPS without a certificate", []string{"serve", "--reference-dir", refDir}, "HTTPS needs --tls-cert and --tls-key"},
		{"plain HTTP off loopback", []string{"serve", "--insecure-http", "--listen", "0.0.0.0:0"}, "loopback"},
		{"no signing key", append(base, "--reference-dir", refDir), "--signing-key is required"},
		{"short nonce secret", append(base, "--reference-dir", refDir, "--dev", "--signing-key", keyPath, "--nonce-secret", short), "at least 32"},
		{"unsigned references without --dev", append(base, "--reference-dir", refDir, "--signing-key", keyPath, "--nonce-secret", secretPath), "--reference-key"},
		{"simulated without a root", append(base, "--reference-dir", refDir, "--dev", "--allow-simulated", "--signing-key", keyPath, "--nonce-secret", secretPath), "--sim-root"},
		{"no resource directory", append(base, "--reference-dir", refDir, "--dev", "--signing-key", keyPath, "--nonce-secret", secretPath, "--resources", short), "--resources"},
		{"unknown register to accept unpinned", append(base, "--reference-dir", refDir, "--dev", "--accept-unpinned", "rtmr0,rtmr9", "--signing-key", keyPath, "--nonce-secret", secretPath), "want mrtd, rtmr0, rtmr1, rtmr2 or rtmr3"},
		{"no collateral refresh", append(base, "--reference-dir", refDir, "--dev", "--collateral-refresh", "0s", "--signing-key", keyPath, "--nonce-secret", secretPath), "--collateral-refresh 0s: want a positive duration"},
		{"signing key not EC", append(base, "--reference-dir", refDir, "--dev", "--signing-key", secretPath, "--nonce-secret", secretPath), "no EC private key"},
	} {
		code, _, stderr := runCLI(tc.args...)
		if code != cli.ExitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit 2 naming %q", tc.name, code, stderr, tc.want)
		}
	}
}

// verifier serve answers over loopback HTTP; verifier token verify checks
// results against its JWKS (URL and file) and maps ear.status to the exit
// code.
func TestServeAndTokenVerify(t *testing.T) {
	keyPath, secretPath, refDir, key := serveFiles(t)
	base, stderr := startServe(t, "--insecure-http", "--listen", "127.0.0.1:0", "--dev", "--reference-dir", refDir,
		"--signing-key", keyPath, "--nonce-secret", secretPath)
	resp, err := http.Get(base + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v %v\n%s", resp, err, stderr.String())
	}
	resp.Body.Close()

	ks, _ := result.NewKeySet([]*ecdsa.PrivateKey{key}, time.Minute)
	nonce := bytes.Repeat([]byte{1}, 64)
	token := func(trusted bool) string {
		r := &verify.Report{Verdict: verify.VerdictNotTrusted, Checks: []verify.Check{{Name: verify.CheckAuthenticity, Status: verify.Pass}}}
		if trusted {
			r.Verdict, r.Trusted = verify.VerdictTrusted, true
		} else {
			r.Checks = append(r.Checks, verify.Check{Name: "RTMR2", Status: verify.Fail, Reason: "differs"})
		}
		ar, err := result.New(r, result.Input{Nonce: nonce, PolicyID: "sample.json", SPKIHash: "ab"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := ks.Sign(ar)
		if err != nil {
			t.Fatal(err)
		}
		return string(tok)
	}
	jwksURL := base + "/.well-known/jwks.json"
	jwksFile := filepath.Join(t.TempDir(), "jwks.json")
	b, _ := ks.JWKS()
	os.WriteFile(jwksFile, b, 0o644)
	other, _ := result.NewKeySet([]*ecdsa.PrivateKey{mustECKey(t)}, time.Minute)
	ob, _ := other.JWKS()
	otherFile := filepath.Join(t.TempDir(), "other.json")
	os.WriteFile(otherFile, ob, 0o644)
	tokFile := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(tokFile, []byte(token(true)+"\n"), 0o644)

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"affirming via URL", []string{"--jwks", jwksURL, token(true)}, cli.ExitOK, "Status:    affirming"},
		{"affirming via file, @FILE", []string{"--jwks", jwksFile, "@" + tokFile}, cli.ExitOK, "Policy:    sample.json"},
		{"our nonce", []string{"--jwks", jwksFile, "--nonce", hex.EncodeToString(nonce), token(true)}, cli.ExitOK, "affirming"},
		{"another nonce", []string{"--jwks", jwksFile, "--nonce", strings.Repeat("02", 64), token(true)}, cli.ExitFail, "replayed"},
		{"contraindicated", []string{"--jwks", jwksURL, token(false)}, cli.ExitFail, "RTMR2"},
		{"another service's keys", []string{"--jwks", otherFile, token(true)}, cli.ExitUsage, "not in the JWKS"},
		{"plain HTTP off loopback", []string{"--jwks", "http://example.invalid/jwks.json", token(true)}, cli.ExitUsage, "https://"},
		{"unreachable", []string{"--jwks", "http://127.0.0.1:1/jwks.json", token(true)}, cli.ExitNetwork, "--jwks"},
		{"no token", []string{"--jwks", jwksFile}, cli.ExitUsage, "want --jwks and one token"},
	} {
		code, stdout, stderr := runCLI(append([]string{"token", "verify"}, tc.args...)...)
		if code != tc.code || !strings.Contains(stdout+stderr, tc.want) {
			t.Errorf("%s: exit %d, want %d containing %q\n%s%s", tc.name, code, tc.code, tc.want, stdout, stderr)
		}
	}
}

// startServe runs `verifier serve args...` until the test ends (it must
// then exit 0) and returns the URL it announces and its stderr.
func startServe(t *testing.T, args ...string) (string, *syncbuf.Buffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stderr := new(syncbuf.Buffer)
	done := make(chan int)
	go func() { done <- program.Run(ctx, append([]string{"serve"}, args...), io.Discard, stderr) }()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != cli.ExitOK {
			t.Errorf("serve exit %d\n%s", code, stderr.String())
		}
	})
	addr := regexp.MustCompile(`serving (https?://\S+)`)
	for i := 0; i < 100; i++ {
		if m := addr.FindStringSubmatch(stderr.String()); m != nil {
			return m[1], stderr
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("serve did not start:\n%s", stderr.String())
	return "", nil
}

func mustECKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Rewriting --signing-key rotates: the new first key signs, the old one
// stays in the JWKS while its tokens can still be valid.
func TestServeRotatesSigningKey(t *testing.T) {
	keyPath, secretPath, refDir, old := serveFiles(t)
	base, stderr := startServe(t, "--insecure-http", "--listen", "127.0.0.1:0", "--dev", "--reference-dir", refDir,
		"--signing-key", keyPath, "--nonce-secret", secretPath, "--reload-interval", "20ms")
	kids := func() string {
		resp, err := http.Get(base + "/.well-known/jwks.json")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	oldKid, _ := result.KeyID(&old.PublicKey)
	next := mustECKey(t)
	nextKid, _ := result.KeyID(&next.PublicKey)
	der, _ := x509.MarshalECPrivateKey(next)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
	for i := 0; i < 100 && !strings.Contains(stderr.String(), "now signing with "+nextKid); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	got := kids()
	if !strings.Contains(stderr.String(), "now signing with "+nextKid) || strings.Index(got, nextKid) < 0 || strings.Index(got, oldKid) < strings.Index(got, nextKid) {
		t.Fatalf("after rotation the JWKS is %s, want %s first and %s still listed\n%s", got, nextKid, oldKid, stderr.String())
	}
}

// By default the service speaks HTTPS with the given certificate.
func TestServeHTTPS(t *testing.T) {
	keyPath, secretPath, refDir, _ := serveFiles(t)
	tk := mustECKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "attestation service"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &tk.PublicKey, tk)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPath, tlsKeyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	kd, _ := x509.MarshalECPrivateKey(tk)
	os.WriteFile(tlsKeyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600)

	base, _ := startServe(t, "--listen", "127.0.0.1:0", "--tls-cert", certPath, "--tls-key", tlsKeyPath,
		"--dev", "--reference-dir", refDir, "--signing-key", keyPath, "--nonce-secret", secretPath)
	pool := x509.NewCertPool()
	c, _ := x509.ParseCertificate(der)
	pool.AddCert(c)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get(base + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz over HTTPS: %v %v", resp, err)
	}
	resp.Body.Close()
	if resp, err := http.Get(strings.Replace(base, "https", "http", 1) + "/healthz"); err == nil && resp.StatusCode == 200 {
		t.Fatal("plain HTTP answered on the HTTPS port")
	}
}
