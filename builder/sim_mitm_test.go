package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/internal/testutil/simtd"
	"github.com/tdforge/tdforge/verifier/client"
	"github.com/tdforge/tdforge/verifier/verify"
)

// fakeAgent is a host-side impostor: it answers the attestation contract
// with quotes signed by whatever simulator PKI it holds, over any TLS key,
// and counts the prompts that reach it.
type fakeAgent struct {
	*simtd.TD
	prompts atomic.Int32
	srv     *httptest.Server
}

func newFakeAgent(t *testing.T, pki *sim.PKI) *fakeAgent {
	t.Helper()
	a := &fakeAgent{TD: simtd.New(t, pki, simtd.Registers(0x11, 0x00))}
	cert := simtd.SelfSigned(t)
	spki := attestation.SPKIHash(cert.Leaf.RawSubjectPublicKeyInfo)
	mux := http.NewServeMux()
	mux.HandleFunc(attestation.PathAttestation, func(w http.ResponseWriter, r *http.Request) {
		nonce, err := hex.DecodeString(r.URL.Query().Get("nonce"))
		if err != nil {
			http.Error(w, `{"error":"bad nonce"}`, http.StatusBadRequest)
			return
		}
		resp, err := a.Attest(nonce, spki)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(resp)
	})
	mux.HandleFunc("/api/chat", func(w http.ResponseWriter, r *http.Request) {
		a.prompts.Add(1)
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"message":{"content":"captured"},"done":true}`+"\n")
	})
	a.srv = httptest.NewUnstartedServer(mux)
	a.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	a.srv.StartTLS()
	t.Cleanup(a.srv.Close)
	return a
}

// reference is the impostor's best case: a reference that pins exactly
// the registers its quotes claim, so only the quote's signer can fail.
func (a *fakeAgent) reference(t *testing.T) *refvalues.Document {
	return a.Reference(t, refvalues.Image{Name: "tiny", Version: "1", Dev: true, Simulated: true})
}

// chatThroughProxy runs the verifier's attested proxy (what `verifier
// proxy --allow-simulated --sim-root ROOT` runs) in front of a and sends a
// prompt through it.
func chatThroughProxy(t *testing.T, a *fakeAgent, cfg client.Config) (int, string) {
	t.Helper()
	pinned, err := client.NewPinned(a.srv.URL, cfg)
	if err != nil {
		t.Fatal(err)
	}
	px := httptest.NewServer(client.NewProxy(pinned))
	defer px.Close()
	resp, err := http.Post(px.URL+"/api/chat", "application/json", strings.NewReader(`{"model":"tiny","messages":[{"role":"user","content":"my secret prompt"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// testForgedSimulatorMITM is the forged-simulator MITM: a host-side fake
// agent signing quotes with any simulator PKI other than the launch's is
// refused by `verifier attest` and `verifier proxy` given the launch's
// sim-root.pem, and no prompt reaches it. The control run shows what the
// attack needs: the launch's own keys, which were public (sim/pki.json, or
// derivable from the image name and version) before each launch made its
// own PKI; with them the same fake agent captures the prompt.
func testForgedSimulatorMITM(t *testing.T, launchRoot []byte, launchPKI, earlierPKI *sim.PKI) {
	t.Helper()
	b, _ := pem.Decode(launchRoot)
	if b == nil {
		t.Fatal("sim-root.pem holds no PEM block")
	}
	root, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)

	forgedPKI, err := sim.NewPKI()
	if err != nil {
		t.Fatal(err)
	}
	for _, pki := range []*sim.PKI{forgedPKI, earlierPKI} {
		forgeThroughVerifier(t, roots, pki)
	}

	// Control: holding the launch's keys, the same impostor passes.
	holder := newFakeAgent(t, launchPKI)
	cfg := client.Config{Options: verify.Options{Reference: holder.reference(t), AllowSimulated: true, SimRoots: roots}, Timeout: 20 * time.Second}
	if code, body := chatThroughProxy(t, holder, cfg); code != http.StatusOK || holder.prompts.Load() != 1 {
		t.Fatalf("control: an agent with the launch's keys was refused (%d %s); the test proves nothing", code, body)
	}
}

func forgeThroughVerifier(t *testing.T, roots *x509.CertPool, pki *sim.PKI) {
	t.Helper()
	forger := newFakeAgent(t, pki)
	cfg := client.Config{Options: verify.Options{Reference: forger.reference(t), AllowSimulated: true, SimRoots: roots}, Timeout: 20 * time.Second}

	res, err := client.Attest(context.Background(), forger.srv.URL, cfg)
	if err != nil {
		t.Fatalf("verifier attest reached no verdict: %v", err)
	}
	if res.Report.Trusted {
		t.Fatalf("verifier attest trusted a forged simulator agent: %s", res.Report.Verdict)
	}
	var authenticity *verify.Check
	for i, c := range res.Report.Checks {
		if c.Name == verify.CheckAuthenticity {
			authenticity = &res.Report.Checks[i]
		}
	}
	if authenticity == nil || authenticity.Status != verify.Fail {
		t.Errorf("the forgery was not refused on quote authenticity: %+v", res.Report.Checks)
	}
	code, body := chatThroughProxy(t, forger, cfg)
	if code != http.StatusBadGateway || !strings.Contains(body, "refusing to forward") {
		t.Errorf("verifier proxy answered %d %s", code, body)
	}
	if n := forger.prompts.Load(); n != 0 {
		t.Fatalf("the prompt reached the forged agent %d time(s)", n)
	}
}
