package client

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/veraison/ear"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/internal/testutil/simtd"
	"github.com/tdforge/tdforge/verifier/nonce"
	"github.com/tdforge/tdforge/verifier/result"
	"github.com/tdforge/tdforge/verifier/service"
	"github.com/tdforge/tdforge/verifier/verify"
)

// serviceFor runs the real attestation service (package service) on
// loopback HTTP, holding a's recorded reference.
func serviceFor(t *testing.T, a *agent) *httptest.Server {
	t.Helper()
	dir := t.TempDir()
	b, err := a.Reference(t, devImage).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "dev.json"), b, 0o644)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ks, err := result.NewKeySet([]*ecdsa.PrivateKey{key}, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ni, err := nonce.New([]byte("client test nonce secret, 32+ bytes"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	s, err := service.New(service.Config{ReferenceDir: dir, Dev: true, AllowSimulated: true, SimRoots: sim.RootPool(a.PKI),
		Keys: ks, Nonces: ni, Log: log.New(io.Discard, "", 0)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv
}

func remote(t *testing.T, url string) Config {
	t.Helper()
	rs, err := NewRemoteService(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return Config{Service: rs, Timeout: 20 * time.Second}
}

func TestAttestThroughService(t *testing.T) {
	a := newAgent(t)
	svc := serviceFor(t, a)
	srv := a.serve(t, fixed(simtd.SelfSigned(t)), nil)
	res, err := Attest(context.Background(), srv.URL, remote(t, svc.URL))
	if err != nil {
		t.Fatal(err)
	}
	if res.Service == nil || res.Service.Status != ear.TrustTierWarning || !res.Report.Trusted || res.Report.Verdict != verify.VerdictSimulated {
		var b strings.Builder
		res.Report.WriteText(&b)
		t.Fatalf("status %v: %s", res.Service, b.String())
	}
	if c := findCheck(res.Report, CheckConnBinding); c.Status != verify.Pass {
		t.Fatalf("%+v", c)
	}
	if res.Service.PolicyID != "dev.json" || res.Service.Token == "" {
		t.Fatalf("%+v", res.Service)
	}
}

// A man in the middle relays the real TD's evidence, bound to the TD's
// key: the service finds nothing wrong (it cannot see the connection),
// the client's own binding check refuses it.
func TestServiceCannotVouchForAManInTheMiddle(t *testing.T) {
	a := newAgent(t)
	svc := serviceFor(t, a)
	real := a.serve(t, fixed(simtd.SelfSigned(t)), nil)
	mitm := relay(t, real.URL)
	res, err := Attest(context.Background(), mitm.URL, remote(t, svc.URL))
	if err != nil {
		t.Fatal(err)
	}
	if res.Service.Status == ear.TrustTierContraindicated {
		t.Fatal("the service refused the relayed evidence itself; the test no longer shows the client's check")
	}
	if c := findCheck(res.Report, CheckConnBinding); res.Report.Trusted || c.Status != verify.Fail || !strings.Contains(c.Reason, "man in the middle") {
		t.Fatalf("trusted %v, %+v", res.Report.Trusted, c)
	}
	// The proxy refuses to forward through it.
	pinned, _ := NewPinned(mitm.URL, remote(t, svc.URL))
	_, url := serveProxy(t, pinned)
	if code, b := chat(t, url); code != http.StatusBadGateway || !strings.Contains(b, CheckConnBinding) || a.chats.Load() != 0 {
		t.Fatalf("%d %s (%d chats)", code, b, a.chats.Load())
	}
}

// Evidence replayed from another session answers another nonce. While
// that nonce is unused the service signs a result for it, which the client
// refuses for its eat_nonce; once used, the service refuses it (no token),
// and attest reports a refusal, not a network error.
func TestServiceRefusalIsNotANetworkError(t *testing.T) {
	a := newAgent(t)
	svc := serviceFor(t, a)
	cert := simtd.SelfSigned(t)
	cfg := remote(t, svc.URL)
	n, err := cfg.Service.Nonce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	old, err := a.Attest(n, hashOf(cert))
	if err != nil {
		t.Fatal(err)
	}
	srv := a.serve(t, fixed(cert), old)
	if _, err = Attest(context.Background(), srv.URL, cfg); err == nil || !strings.Contains(err.Error(), "a replayed result") {
		t.Fatalf("a result for another nonce accepted: %v", err)
	}
	_, err = Attest(context.Background(), srv.URL, cfg)
	var se *ServiceError
	if !errors.As(err, &se) || se.Field != "report_data.nonce" || errors.As(err, new(*NetworkError)) {
		t.Fatalf("err = %v", err)
	}
}

func TestProxyThroughService(t *testing.T) {
	a := newAgent(t)
	svc := serviceFor(t, a)
	srv := a.serve(t, fixed(simtd.SelfSigned(t)), nil)
	close(a.release)
	pinned, err := NewPinned(srv.URL, remote(t, svc.URL))
	if err != nil {
		t.Fatal(err)
	}
	var statuses []string
	pinned.OnAttest = func(r *Result, err error) {
		if err == nil {
			statuses = append(statuses, r.Service.StatusName())
		}
	}
	px, url := serveProxy(t, pinned)
	for range 2 {
		if code, b := chat(t, url); code != 200 {
			t.Fatalf("%d %s", code, b)
		}
		px.CloseIdleConnections()
	}
	if len(statuses) != 2 || statuses[0] != "warning" {
		t.Fatalf("attestations through the service: %v", statuses)
	}
}

func TestNewRemoteServiceURL(t *testing.T) {
	for _, bad := range []string{"http://example.com", "ftp://x", "https://svc/v1/attest", "example.com:8443"} {
		if _, err := NewRemoteService(bad, nil); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for _, ok := range []string{"https://svc.example:8443", "http://127.0.0.1:9", "http://localhost:9/"} {
		if _, err := NewRemoteService(ok, nil); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
}

func hashOf(c tls.Certificate) [32]byte { return attestation.SPKIHash(c.Leaf.RawSubjectPublicKeyInfo) }

// The report beside the token is unsigned: a host between the client and
// the service that rewrites it (here: a contraindicated TD's failed MRTD
// turned into a pass) is refused, and nothing unsigned is shown as the
// service's verdict.
func TestServiceReportMustMatchTheSignedResult(t *testing.T) {
	a := newAgent(t)
	real := serviceFor(t, a)
	u, _ := url.Parse(real.URL)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.URL.Path != "/v1/attest" {
			return nil
		}
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return err
		}
		resp.Body.Close()
		rep := out["report"].(map[string]any)
		for _, c := range rep["checks"].([]any) {
			m := c.(map[string]any)
			if m["status"] == "FAIL" {
				m["status"], m["reason"] = "PASS", "matches the reference"
			}
		}
		rep["trusted"], rep["verdict"] = true, verify.VerdictSimulated
		b, _ := json.Marshal(out)
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
		return nil
	}
	mitm := httptest.NewServer(rp)
	defer mitm.Close()
	// The TD runs other code than the service's reference.
	other := &agent{TD: simtd.New(t, a.PKI, simtd.Registers(0x99, 0x22)), release: make(chan struct{})}
	srv := other.serve(t, fixed(simtd.SelfSigned(t)), nil)
	res, err := Attest(context.Background(), srv.URL, remote(t, real.URL))
	if err != nil || res.Report.Trusted || res.Service.Status != ear.TrustTierContraindicated {
		t.Fatalf("direct: %v %+v", err, res)
	}
	res, err = Attest(context.Background(), srv.URL, remote(t, mitm.URL))
	if err == nil || !strings.Contains(err.Error(), "differs from its signed result") {
		t.Fatalf("a rewritten report was accepted: %v (trusted %v)", err, res != nil && res.Report.Trusted)
	}
}

// A service run with --accept-unpinned signs the qualified verdict line
// ("TRUSTED, RTMR0 NOT PINNED: …"): the client compares that line, the
// simulation flag and the accepted registers with the unsigned report.
// Before, it compared the bare verdict and refused every such result.
func TestSignedVerdictWithAcceptedUnpinned(t *testing.T) {
	r := &verify.Report{Verdict: verify.VerdictTrusted, Trusted: true, Unpinned: []string{"rtmr0"},
		Checks: []verify.Check{{Name: "RTMR0", Status: verify.Skipped, Reason: "NOT PINNED, accepted by the options"}}}
	ar, err := result.New(r, result.Input{Nonce: make([]byte, 32), PolicyID: "ref.json"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ev := *ar.Submods[result.Submod].VeraisonAnnotatedEvidence
	if err := sameAsSigned(r, ev); err != nil {
		t.Fatalf("an honest result with an accepted unpinned register refused: %v", err)
	}
	for name, tamper := range map[string]func(*verify.Report){
		"pinned claimed":    func(r *verify.Report) { r.Unpinned = nil },
		"simulated flipped": func(r *verify.Report) { r.Simulated = true },
		"verdict changed":   func(r *verify.Report) { r.Verdict = verify.VerdictSimulated },
	} {
		c := *r
		tamper(&c)
		if err := sameAsSigned(&c, ev); err == nil {
			t.Errorf("%s: an unsigned report that differs from the signed result was accepted", name)
		}
	}
}
