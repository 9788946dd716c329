package client

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/internal/testutil/netutil"
	"github.com/tdforge/tdforge/internal/testutil/simtd"
	"github.com/tdforge/tdforge/verifier/verify"
)

// agent is a test TD: the simulator quotes the wire contract of
// internal/tdx/attestation for whatever TLS key the server presents.
type agent struct {
	*simtd.TD
	chats   atomic.Int32
	release chan struct{}
}

func newAgent(t *testing.T) *agent {
	return &agent{TD: simtd.New(t, nil, simtd.Registers(0x11, 0x22)), release: make(chan struct{})}
}

// devImage is what the agent's reference values describe.
var devImage = refvalues.Image{Name: "dev", Dev: true, Simulated: true}

// serve starts an agent TLS server whose certificate (chosen per
// handshake by certs) is what the quote binds.
func (a *agent) serve(t *testing.T, certs func() tls.Certificate, replay *attestation.Response) *httptest.Server {
	var mu sync.Mutex
	byConn := map[string][32]byte{}
	mux := http.NewServeMux()
	mux.HandleFunc(attestation.PathAttestation, func(w http.ResponseWriter, r *http.Request) {
		if replay != nil {
			json.NewEncoder(w).Encode(replay)
			return
		}
		nonce, err := hex.DecodeString(r.URL.Query().Get("nonce"))
		if err != nil {
			http.Error(w, `{"error":"bad nonce"}`, 400)
			return
		}
		mu.Lock()
		spki := byConn[r.RemoteAddr]
		mu.Unlock()
		resp, err := a.Attest(nonce, spki)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		json.NewEncoder(w).Encode(resp)
	})
	mux.HandleFunc("/api/chat", func(w http.ResponseWriter, r *http.Request) {
		a.chats.Add(1)
		io.Copy(io.Discard, r.Body)
		fmt.Fprintln(w, `{"message":{"content":"hel"},"done":false}`)
		w.(http.Flusher).Flush()
		<-a.release
		fmt.Fprintln(w, `{"message":{"content":"lo"},"done":true}`)
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
		c := certs()
		mu.Lock()
		byConn[hi.Conn.RemoteAddr().String()] = attestation.SPKIHash(c.Leaf.RawSubjectPublicKeyInfo)
		mu.Unlock()
		return &tls.Config{Certificates: []tls.Certificate{c}, NextProtos: []string{"http/1.1"}}, nil
	}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// serveProxy serves NewProxy(pinned) until the test ends.
func serveProxy(t *testing.T, pinned *Pinned) (*Proxy, string) {
	px := NewProxy(pinned)
	srv := httptest.NewServer(px)
	t.Cleanup(srv.Close)
	return px, srv.URL
}

// chat posts a chat request to the proxy at url: its status and whole answer.
func chat(t *testing.T, url string) (int, string) {
	t.Helper()
	code, b := netutil.Post(t, url+"/api/chat", `{"model":"m"}`)
	return code, string(b)
}

// relay is a man in the middle: a TLS server with its own key that
// relays each GET to upstream, whatever its certificate.
func relay(t *testing.T, upstream string) *httptest.Server {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := c.Get(upstream + r.URL.RequestURI())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func fixed(c tls.Certificate) func() tls.Certificate { return func() tls.Certificate { return c } }

func (a *agent) cfg(t *testing.T) Config {
	return Config{Options: verify.Options{Reference: a.Reference(t, devImage), AllowSimulated: true, SimRoots: sim.RootPool(a.PKI)}, Timeout: 20 * time.Second}
}

func TestAttestTrusted(t *testing.T) {
	a := newAgent(t)
	srv := a.serve(t, fixed(simtd.SelfSigned(t)), nil)
	res, err := Attest(context.Background(), srv.URL, a.cfg(t))
	if err != nil {
		t.Fatal(err)
	}
	if res.Report.Verdict != verify.VerdictSimulated {
		var b strings.Builder
		res.Report.WriteText(&b)
		t.Fatal(b.String())
	}
}

func TestAttestReplayed(t *testing.T) {
	a := newAgent(t)
	cert := simtd.SelfSigned(t)
	old, err := a.Attest([]byte("an old nonce, 32 bytes long ...."), attestation.SPKIHash(cert.Leaf.RawSubjectPublicKeyInfo))
	if err != nil {
		t.Fatal(err)
	}
	srv := a.serve(t, fixed(cert), old)
	res, err := Attest(context.Background(), srv.URL, a.cfg(t))
	if err != nil {
		t.Fatal(err)
	}
	if res.Report.Trusted || !res.Report.Failed(verify.CheckBinding) {
		t.Fatal("replayed attestation accepted")
	}
	if c := findCheck(res.Report, verify.CheckBinding); !strings.Contains(c.Reason, "replayed") {
		t.Fatal(c.Reason)
	}
}

func findCheck(r *verify.Report, name string) verify.Check {
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	return verify.Check{}
}

// A man in the middle terminates TLS with its own key and relays the real
// agent's attestation (bound to the agent's key).
func TestAttestManInTheMiddle(t *testing.T) {
	a := newAgent(t)
	real := a.serve(t, fixed(simtd.SelfSigned(t)), nil)
	mitm := relay(t, real.URL)
	res, err := Attest(context.Background(), mitm.URL, a.cfg(t))
	if err != nil {
		t.Fatal(err)
	}
	if res.Report.Trusted {
		t.Fatal("man in the middle trusted")
	}
	if c := findCheck(res.Report, verify.CheckBinding); c.Status != verify.Fail || !strings.Contains(c.Reason, "man in the middle") {
		t.Fatalf("%+v", c)
	}
}

func TestAttestUnreachable(t *testing.T) {
	a := newAgent(t)
	srv := a.serve(t, fixed(simtd.SelfSigned(t)), nil)
	url := srv.URL
	srv.Close()
	_, err := Attest(context.Background(), url, a.cfg(t))
	if !errors.As(err, new(*NetworkError)) {
		t.Fatalf("err = %v", err)
	}
	if _, err := Attest(context.Background(), "http://example.invalid", a.cfg(t)); err == nil || !strings.Contains(err.Error(), "https") {
		t.Fatalf("plain http accepted: %v", err)
	}
}

func TestProxyStreamsAfterAttestation(t *testing.T) {
	a := newAgent(t)
	srv := a.serve(t, fixed(simtd.SelfSigned(t)), nil)
	pinned, err := NewPinned(srv.URL, a.cfg(t))
	if err != nil {
		t.Fatal(err)
	}
	var attests atomic.Int32
	pinned.OnAttest = func(*Result, error) { attests.Add(1) }
	px, url := serveProxy(t, pinned)
	resp, err := http.Post(url+"/api/chat", "application/json", strings.NewReader(`{"model":"m"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 256)
	n, err := resp.Body.Read(buf) // the first chunk arrives before the upstream finishes
	if err != nil || !strings.Contains(string(buf[:n]), "hel") {
		t.Fatalf("first chunk %q, %v", buf[:n], err)
	}
	close(a.release)
	rest, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(rest), `"done":true`) {
		t.Fatalf("rest %q", rest)
	}
	if attests.Load() != 1 {
		t.Fatalf("%d attestations", attests.Load())
	}
	if _, ok := pinned.Pin(); !ok {
		t.Fatal("no pin")
	}
	// A new upstream connection is attested again.
	px.CloseIdleConnections()
	if code, _ := chat(t, url); attests.Load() != 2 || code != 200 {
		t.Fatalf("%d attestations, status %d", attests.Load(), code)
	}
}

func TestProxyRefusesUntrusted(t *testing.T) {
	a := newAgent(t)
	srv := a.serve(t, fixed(simtd.SelfSigned(t)), nil)
	cfg := a.cfg(t)
	bad := strings.Repeat("ee", 48)
	cfg.Options.Reference.Registers.MRTD = &bad
	pinned, _ := NewPinned(srv.URL, cfg)
	_, url := serveProxy(t, pinned)
	code, b := chat(t, url)
	var body map[string]string
	json.Unmarshal([]byte(b), &body)
	if code != http.StatusBadGateway || !strings.Contains(body["error"], "MRTD") || !strings.Contains(body["error"], "refusing to forward") {
		t.Fatalf("%d %s", code, b)
	}
	if a.chats.Load() != 0 {
		t.Fatal("request forwarded to an untrusted agent")
	}
}

// After the key is pinned, a connection presenting another key is refused
// even though it would attest.
func TestProxyKeyChange(t *testing.T) {
	a := newAgent(t)
	c1, c2 := simtd.SelfSigned(t), simtd.SelfSigned(t)
	var n atomic.Int32
	srv := a.serve(t, func() tls.Certificate {
		if n.Add(1) == 1 {
			return c1
		}
		return c2
	}, nil)
	pinned, _ := NewPinned(srv.URL, a.cfg(t))
	close(a.release)
	px, url := serveProxy(t, pinned)
	if code, b := chat(t, url); code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	px.CloseIdleConnections()
	if code, b := chat(t, url); code != 502 || !strings.Contains(b, "TLS key changed") {
		t.Fatalf("%d %s", code, b)
	}
	if a.chats.Load() != 1 {
		t.Fatalf("%d chats forwarded", a.chats.Load())
	}
}
