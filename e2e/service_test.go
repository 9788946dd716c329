package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/testutil/netutil"
)

// joseVersion is the npm `jose` release the e2e test checks tokens with:
// an independent JOSE implementation, not the project's Go code.
const joseVersion = "5.10.0"

// startService runs the real verifier binary as the attestation service
// on loopback HTTP for the dev TD v: its reference values (unsigned, so
// --dev), the launch's simulator root, a throwaway signing key and nonce
// secret, and the TD's web origin allowed by CORS.
func startService(t *testing.T, v *vm) *serveProc {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(netutil.FreePort(t))
	s := startServe(t, "serve", filepath.Join(v.dir, "reference-values.json"), v.simRoot,
		"--insecure-http", "--listen", addr, "--cors-origin", fmt.Sprintf("https://127.0.0.1:%d", v.port))
	s.url = "http://" + addr
	s.waitReady(t, http.DefaultClient, "verifier serve")
	return s
}

// wantContraindicated appraises doc (changed as what says) and wants a
// contraindicated verdict whose failed checks name failure.
func (s *serveProc) wantContraindicated(t *testing.T, doc map[string]any, what, failure string) {
	t.Helper()
	code, o := s.attest(t, doc)
	fails := strings.Join(o.failed(), "; ")
	if code != 200 || o.Status != "contraindicated" || !strings.Contains(fails, failure) {
		t.Fatalf("%s: %d %s (failed: %s) %s", what, code, o.Status, fails, o.Error)
	}
	t.Logf("contraindicated: %s", fails)
}

// nonce gets a fresh nonce from the service.
func (s *serveProc) nonce(t *testing.T) []byte {
	t.Helper()
	resp, err := http.Get(s.url + "/v1/nonce")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Nonce string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	n, err := hex.DecodeString(out.Nonce)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// evidence fetches the agent's /v1/attestation document for nonce n, as
// raw JSON.
func (v *vm) evidence(t *testing.T, n []byte) map[string]any {
	t.Helper()
	resp, err := insecureClient(60 * time.Second).Get(v.url("/v1/attestation?nonce=" + hex.EncodeToString(n)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /v1/attestation: %d %v", resp.StatusCode, err)
	}
	return doc
}

// outcome is the answer of POST /v1/attest, or its error.
type outcome struct {
	Token  string `json:"token"`
	Status string `json:"status"`
	Report struct {
		Checks []struct{ Name, Status, Reason string }
	} `json:"report"`
	Error string `json:"error"`
	Field string `json:"field"`
}

func (s *serveProc) attest(t *testing.T, doc map[string]any) (int, *outcome) {
	t.Helper()
	b, _ := json.Marshal(doc)
	resp, err := http.Post(s.url+"/v1/attest", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var o outcome
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &o); err != nil {
		t.Fatalf("POST /v1/attest: %d %s", resp.StatusCode, raw)
	}
	return resp.StatusCode, &o
}

// runVerifier runs the verifier binary and returns its exit code and
// output.
func runVerifier(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "verifier"), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), stdout.String(), stderr.String()
	} else if err != nil {
		t.Fatalf("verifier: %v", err)
	}
	return 0, stdout.String(), stderr.String()
}

// joseDir installs the pinned npm `jose` into images/jose (git-ignored;
// `make deps` does the same) and returns the directory.
func joseDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(repoRoot, "images", "jose")
	pkg := filepath.Join(dir, "node_modules", "jose", "package.json")
	if b, err := os.ReadFile(pkg); err == nil && strings.Contains(string(b), `"version": "`+joseVersion+`"`) {
		return dir
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node missing: run 'make deps' (Debian packages nodejs, npm)")
	}
	os.MkdirAll(dir, 0o755)
	out, err := exec.Command("npm", "install", "--prefix", dir, "--no-audit", "--no-fund", "--save-exact", "jose@"+joseVersion).CombinedOutput()
	if err != nil {
		t.Fatalf("npm install jose@%s: %v\n%s", joseVersion, err, out)
	}
	return dir
}

// joseVerify checks token with npm's jose against the service's JWKS
// (fetched by node) and returns the claims it verified.
func joseVerify(t *testing.T, token, jwksURL string) map[string]any {
	t.Helper()
	dir := joseDir(t)
	script := filepath.Join(dir, "verify.mjs")
	os.WriteFile(script, []byte(`import { createLocalJWKSet, jwtVerify } from "jose";
const [token, jwksURL] = process.argv.slice(2);
const jwks = await (await fetch(jwksURL)).json();
const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(jwks), { algorithms: ["ES256"] });
console.log(JSON.stringify({ payload, protectedHeader }));
`), 0o644)
	cmd := exec.Command("node", script, token, jwksURL)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("jose rejected the token: %v\n%s", err, out)
	}
	var res struct {
		Payload         map[string]any `json:"payload"`
		ProtectedHeader map[string]any `json:"protectedHeader"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("jose output %s: %v", out, err)
	}
	if res.ProtectedHeader["alg"] != "ES256" || res.ProtectedHeader["kid"] == nil {
		t.Errorf("jose: header %v", res.ProtectedHeader)
	}
	return res.Payload
}

func tdxStatus(claims map[string]any) string {
	sub, _ := claims["submods"].(map[string]any)
	tdx, _ := sub["tdx"].(map[string]any)
	s, _ := tdx["ear.status"].(string)
	return s
}

// failed returns the names of the FAIL checks of o.
func (o *outcome) failed() []string {
	var out []string
	for _, c := range o.Report.Checks {
		if c.Status == "FAIL" {
			out = append(out, c.Name+": "+c.Reason)
		}
	}
	return out
}

// TestAttestationService appraises the dev TD through `verifier serve`
// (the real binary): with `verifier attest --attestation-service`, by hand
// with the token checked by `verifier token verify` and by npm's jose, and
// with tampered and replayed evidence.
func TestAttestationService(t *testing.T) {
	v := boot(t, devImage, bootOpts{})
	if err := v.waitHTTP("/readyz", 120*time.Second); err != nil {
		t.Fatalf("agent not ready: %v\nconsole:\n%s", err, v.tail())
	}
	s := startService(t, v)
	jwks := s.url + "/.well-known/jwks.json"

	t.Run("verifier-attest", func(t *testing.T) {
		code, out, errs := runVerifier(t, "attest", "--json", "--attestation-service", s.url, v.url(""))
		var r struct {
			Trusted bool `json:"trusted"`
			Checks  []struct{ Name, Status, Reason string }
			Result  struct {
				Status string `json:"ear_status"`
				Token  string `json:"token"`
			} `json:"attestation_service"`
		}
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("exit %d: %v\n%s\n%s", code, err, out, errs)
		}
		if code != 0 || !r.Trusted || r.Result.Status != "warning" {
			t.Fatalf("exit %d, trusted %v, ear.status %q\n%s\n%s", code, r.Trusted, r.Result.Status, out, errs)
		}
		bound := false
		for _, c := range r.Checks {
			if c.Status == "FAIL" {
				t.Errorf("check %s failed: %s", c.Name, c.Reason)
			}
			bound = bound || (c.Name == "TLS key of this connection" && c.Status == "PASS")
		}
		if !bound {
			t.Errorf("no local TLS key binding check in %s", out)
		}
		// The text output states the warning.
		code, out, _ = runVerifier(t, "attest", "--attestation-service", s.url, v.url(""))
		if code != 0 || !strings.Contains(out, "ear.status warning") || !strings.Contains(out, "WARNING") {
			t.Errorf("text output (exit %d) does not state the warning:\n%s", code, out)
		}
		tok := filepath.Join(t.TempDir(), "token")
		os.WriteFile(tok, []byte(r.Result.Token), 0o600)
		if code, out, errs := runVerifier(t, "token", "verify", "--jwks", jwks, "--allow-warning", "@"+tok); code != 0 {
			t.Errorf("token verify: exit %d\n%s%s", code, out, errs)
		}
		if code, _, _ := runVerifier(t, "token", "verify", "--jwks", jwks, "@"+tok); code != 1 {
			t.Errorf("token verify without --allow-warning: exit %d, want 1 for warning", code)
		}
	})

	t.Run("token-checked-by-jose", func(t *testing.T) {
		n := s.nonce(t)
		code, o := s.attest(t, v.evidence(t, n))
		if code != 200 || o.Status != "warning" || o.Token == "" {
			t.Fatalf("POST /v1/attest: %d %+v", code, o)
		}
		tok := filepath.Join(t.TempDir(), "token")
		os.WriteFile(tok, []byte(o.Token), 0o600)
		if code, out, errs := runVerifier(t, "token", "verify", "--jwks", jwks, "--nonce", hex.EncodeToString(n), "--allow-warning", "@"+tok); code != 0 {
			t.Errorf("token verify --nonce: exit %d\n%s%s", code, out, errs)
		}
		other := bytes.Repeat([]byte{1}, len(n))
		if code, _, _ := runVerifier(t, "token", "verify", "--jwks", jwks, "--nonce", hex.EncodeToString(other), "--allow-warning", "@"+tok); code != 1 {
			t.Errorf("token verify with another nonce: exit %d, want 1", code)
		}
		claims := joseVerify(t, o.Token, jwks)
		if claims["eat_nonce"] != base64.RawURLEncoding.EncodeToString(n) || tdxStatus(claims) != "warning" {
			t.Errorf("jose claims: eat_nonce %v, status %q", claims["eat_nonce"], tdxStatus(claims))
		}
		// A token with one changed signature byte fails jose too.
		bad := []byte(o.Token)
		i := len(bad) - 5
		if bad[i] == 'A' {
			bad[i] = 'B'
		} else {
			bad[i] = 'A'
		}
		cmd := exec.Command("node", filepath.Join(joseDir(t), "verify.mjs"), string(bad), jwks)
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Errorf("jose accepted a tampered token: %s", out)
		}
	})

	t.Run("tampered-quote", func(t *testing.T) {
		doc := v.evidence(t, s.nonce(t))
		q, _ := base64.StdEncoding.DecodeString(doc["quote"].(string))
		q[48+0x1a8] ^= 1 // one byte of RTMR2 in the signed TD report body
		doc["quote"] = base64.StdEncoding.EncodeToString(q)
		s.wantContraindicated(t, doc, "one changed quote byte", "quote authenticity")
	})

	t.Run("tampered-runtime-log", func(t *testing.T) {
		doc := v.evidence(t, s.nonce(t))
		log, _ := base64.StdEncoding.DecodeString(doc["runtime_log"].(string))
		// Change one byte of the first event's digest as the log records it.
		evs, _ := doc["runtime_log_json"].([]any)
		if len(evs) == 0 {
			t.Fatal("no runtime events")
		}
		d, _ := hex.DecodeString(evs[0].(map[string]any)["digest"].(string))
		i := bytes.Index(log, d)
		if len(d) == 0 || i < 0 {
			t.Fatalf("the first event's digest is not in the raw log")
		}
		log[i+len(d)/2] ^= 1
		doc["runtime_log"] = base64.StdEncoding.EncodeToString(log)
		s.wantContraindicated(t, doc, "one changed runtime log byte", "RTMR3")
	})

	t.Run("replayed-nonce", func(t *testing.T) {
		doc := v.evidence(t, s.nonce(t))
		if code, o := s.attest(t, doc); code != 200 {
			t.Fatalf("first use: %d %+v", code, o)
		}
		code, o := s.attest(t, doc)
		if code != 400 || o.Field != "report_data.nonce" || o.Token != "" {
			t.Fatalf("replayed nonce: %d %+v", code, o)
		}
	})
}
