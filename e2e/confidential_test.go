package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// wantLocked checks that v's model stayed locked for reason: /readyz and
// `verifier attest` say "model: locked (reason)", the console names it and
// Ollama, which needs the model, never started.
func wantLocked(t *testing.T, v *vm, reason string) {
	t.Helper()
	line := "model: locked (" + reason + ")"
	resp, err := insecureClient(30 * time.Second).Get(v.url("/readyz"))
	if err != nil {
		t.Fatal(err)
	}
	var r struct{ Status, Error string }
	json.NewDecoder(resp.Body).Decode(&r)
	resp.Body.Close()
	if resp.StatusCode != 503 || r.Error != line {
		t.Errorf("/readyz %d %+v, want 503 %q", resp.StatusCode, r, line)
	}
	res, code, out := v.attest(t, "")
	if code != 1 || res.Trusted || !strings.Contains(out, line) {
		t.Errorf("verifier attest (exit %d) does not name %q:\n%s", code, line, out)
	}
	for _, want := range []string{"initd: payload model LOCKED: " + reason, "initd: service ollama NOT started: payload(s) model failed or locked"} {
		if !v.consoleHas(want, 5*time.Second) {
			t.Errorf("console lacks %q:\n%s", want, v.tail())
		}
	}
	if v.consoleHas("payload model unlocked", time.Second) {
		t.Error("the model was mounted")
	}
}

// impostor listens at the broker's address with a certificate of its own
// and counts the HTTP requests that reach it (none may: initd checks the
// pin during the handshake).
func impostor() (*http.Server, *atomic.Int32, error) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "not the dev broker"},
		IPAddresses: []net.IP{net.IPv4(10, 0, 2, 2), net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	var hits atomic.Int32
	srv := &http.Server{
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1); w.Write([]byte(`{"nonce":"x"}`)) }),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
	}
	ln, err := net.Listen("tcp", brokerAddr)
	if err != nil {
		return nil, nil, err
	}
	go srv.ServeTLS(ln, "", "")
	return srv, &hits, nil
}

// TestConfidentialWeights shares two boots of the dev image. The first has
// no broker at boot (initd retries), then an impostor at the broker's
// address without the pinned certificate: the tries are bounded and the
// model stays locked, attested. The second boot (a reboot, the broker now
// up) gets the key: the model mounts, chat works, and the broker's log
// names the appraisal.
func TestConfidentialWeights(t *testing.T) {
	console := filepath.Join(artDir, sanitize(t.Name())+"-console.log")
	os.Remove(console)
	type started struct {
		srv  *http.Server
		hits *atomic.Int32
		err  error
	}
	ch := make(chan started, 1)
	go func() {
		// After two failed tries (nothing listens), the impostor appears.
		for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if b, _ := os.ReadFile(console); strings.Contains(string(b), "try 2/6") {
				srv, hits, err := impostor()
				ch <- started{srv, hits, err}
				return
			}
		}
		close(ch)
	}()
	v := boot(t, devImage, bootOpts{noBroker: true, wait: 4 * time.Minute})
	imp, ok := <-ch
	if !ok || imp.err != nil {
		t.Fatalf("initd never retried the broker, or the impostor could not listen (%v):\n%s", imp.err, v.tail())
	}
	defer imp.srv.Close()
	hits := imp.hits
	wantLocked(t, v, "broker not trusted: its certificate does not match the pinned ca_sha256")
	if !v.consoleHas("try 6/6", time.Second) || v.consoleHas("try 7/", time.Second) || !v.consoleHas("connection refused", time.Second) {
		t.Errorf("not 6 tries, the first ones refused:\n%s", v.tail())
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("initd sent %d requests to the impostor", n)
	}
	v.kill()
	imp.srv.Close()

	v = boot(t, devImage, bootOpts{})
	if err := v.waitHTTP("/readyz", 120*time.Second); err != nil {
		t.Fatalf("not ready after the reboot with the broker up: %v\n%s", err, v.tail())
	}
	if !v.consoleHas("initd: payload model unlocked and mounted read-only", time.Second) || !v.consoleHas("initd: phase unlock ", time.Second) {
		t.Errorf("console:\n%s", v.tail())
	}
	log := v.broker.text()
	if !strings.Contains(log, "kbs resource tdforge/dev/model session") || !strings.Contains(log, "released") || !strings.Contains(log, "appraisal: reference dev.json") {
		t.Errorf("the broker's log does not name the release and its appraisal:\n%s", log)
	}
	code, body, err := postJSON(insecureClient(120*time.Second), v.url("/api/generate"), generateBody)
	if err != nil || code != 200 {
		t.Fatalf("chat: %d %s %v", code, body, err)
	}
	r, code, out := v.attest(t, "")
	if code != 0 || !r.Trusted {
		t.Fatalf("the released TD does not verify (exit %d):\n%s", code, out)
	}
}
