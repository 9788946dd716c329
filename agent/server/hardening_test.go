package server

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/tdx/quote"
)

// recordingUpstream is a real HTTP server standing in for Ollama that
// records every connection and every request line it receives.
type recordingUpstream struct {
	*httptest.Server
	conns atomic.Int64
	mu    sync.Mutex
	seen  []string // "METHOD RequestURI"
}

func newRecordingUpstream(t *testing.T) *recordingUpstream {
	u := &recordingUpstream{}
	u.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, r.Method+" "+r.RequestURI)
		u.mu.Unlock()
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/api/version" {
			io.WriteString(w, `{"version":"0.5.7"}`)
			return
		}
		io.WriteString(w, `{"models":[]}`)
	}))
	u.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			u.conns.Add(1)
		}
	}
	u.Start()
	t.Cleanup(u.Close)
	return u
}

func (u *recordingUpstream) requests() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.seen...)
}

// rawRequest sends one request verbatim (no client-side cleaning) and
// returns the response status and body.
func rawRequest(t *testing.T, addr, req string) (int, string, http.Header) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%q: %v", req, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b), resp.Header
}

func TestRouteMethods(t *testing.T) {
	up := newRecordingUpstream(t)
	f := newFixture(t, up.URL, nil)
	for _, tc := range []struct{ method, path, allow string }{
		{"DELETE", "/v1/models/foo", "GET, HEAD"},
		{"POST", "/v1/models", "GET, HEAD"},
		{"GET", "/api/chat", "POST"},
		{"PUT", "/api/generate", "POST"},
		{"DELETE", "/api/tags", "GET, HEAD"},
		{"POST", "/api/version", "GET, HEAD"},
		{"GET", "/v1/chat/completions", "POST"},
		{"PATCH", "/v1/completions", "POST"},
		{"OPTIONS", "/api/show", "POST"},
		{"POST", "/v1/attestation", "GET, HEAD"},
	} {
		rec := do(t, f.srv, tc.method, tc.path, strings.NewReader(`{}`))
		if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d Allow %q, want 405 Allow %q", tc.method, tc.path, rec.Code, rec.Header().Get("Allow"), tc.allow)
			continue
		}
		if msg := errBody(t, rec); !strings.Contains(msg, tc.allow) {
			t.Errorf("%s %s: error %q does not name the allowed methods", tc.method, tc.path, msg)
		}
	}
	if got := up.requests(); len(got) != 0 {
		t.Fatalf("refused methods reached Ollama: %q", got)
	}
	// The expected methods still pass.
	for _, tc := range []struct{ method, path string }{
		{"GET", "/v1/models/tiny:latest"}, {"GET", "/api/tags"}, {"POST", "/api/chat"}, {"POST", "/v1/chat/completions"},
	} {
		if rec := do(t, f.srv, tc.method, tc.path, strings.NewReader(`{}`)); rec.Code != 200 {
			t.Errorf("%s %s: %d %s", tc.method, tc.path, rec.Code, rec.Body)
		}
	}
	if got := up.requests(); len(got) != 4 {
		t.Fatalf("upstream saw %q, want the 4 allowed requests", got)
	}
}

// TestUncleanPathsNeverReachUpstream sends the request lines of the review's
// exploits (and their variants) over a real connection: none may reach
// Ollama, and a canonical path is forwarded in its canonical form.
func TestUncleanPathsNeverReachUpstream(t *testing.T) {
	up := newRecordingUpstream(t)
	f := newFixture(t, up.URL, nil)
	agent := httptest.NewServer(f.srv)
	defer agent.Close()
	addr := agent.Listener.Addr().String()
	for _, line := range []string{
		"CONNECT /v1/models/../../api/pull HTTP/1.1",
		"CONNECT " + up.Listener.Addr().String() + " HTTP/1.1",
		"POST /v1/models/x%2F..%2F..%2Fapi%2Fpull HTTP/1.1",
		"POST /v1/models/x%2f..%2f..%2fapi%2fpull HTTP/1.1",
		"GET /v1/models/x%2F..%2F..%2Fapi%2Ftags HTTP/1.1",
		"GET /v1/models/x%5C..%5C..%5Capi%5Ctags HTTP/1.1",
		"GET /v1/models/x%5c..%5capi HTTP/1.1",
		"GET /v1/models/x\\..\\api HTTP/1.1",
		"GET /v1/models/../../api/tags HTTP/1.1",
		"GET /v1/models/%2e%2e/%2E%2E/api/tags HTTP/1.1",
		"GET /v1/models/./tiny HTTP/1.1",
		"GET /v1/models/tiny/. HTTP/1.1",
		"GET //api/tags HTTP/1.1",
		"GET /v1/models//tiny HTTP/1.1",
		"GET /api/tags%00 HTTP/1.1",
	} {
		code, body, _ := rawRequest(t, addr, line+"\r\nHost: "+addr+"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
		if code != http.StatusBadRequest && code != http.StatusMethodNotAllowed {
			t.Errorf("%s: status %d %s, want 400 or 405", line, code, body)
		}
		var e struct{ Error string }
		if code != http.StatusBadRequest || !strings.Contains(body, `"error"`) {
			continue
		}
		if json.Unmarshal([]byte(body), &e); e.Error == "" {
			t.Errorf("%s: body %q is not a JSON error", line, body)
		}
	}
	if got := up.requests(); len(got) != 0 {
		t.Fatalf("unclean requests reached Ollama: %q", got)
	}
	// An escaped but clean path is forwarded canonically.
	for _, tc := range []struct{ line, want string }{
		{"GET /api/t%61gs HTTP/1.1", "GET /api/tags"},
		{"GET /v1/models/tiny%3Alatest HTTP/1.1", "GET /v1/models/tiny:latest"},
	} {
		code, body, _ := rawRequest(t, addr, tc.line+"\r\nHost: "+addr+"\r\nConnection: close\r\n\r\n")
		if code != 200 {
			t.Fatalf("%s: %d %s", tc.line, code, body)
		}
		got := up.requests()
		if got[len(got)-1] != tc.want {
			t.Fatalf("%s: upstream saw %q, want %q", tc.line, got[len(got)-1], tc.want)
		}
	}
}

// TestSlowBodiesHoldNoUpstreamConnection: 20 clients trickling request
// bodies are cut off at the body deadline and never open a connection to
// Ollama.
func TestSlowBodiesHoldNoUpstreamConnection(t *testing.T) {
	up := newRecordingUpstream(t)
	f := newFixture(t, up.URL, func(c *Config) { c.BodyTimeout = 400 * time.Millisecond })
	agent := httptest.NewUnstartedServer(f.srv)
	agent.Config = HTTPServer(f.srv, f.srv.cfg.Log)
	agent.Start()
	defer agent.Close()
	addr := agent.Listener.Addr().String()
	const clients = 20
	type result struct {
		code    int
		elapsed time.Duration
		err     error
	}
	results := make(chan result, clients)
	start := time.Now()
	for i := 0; i < clients; i++ {
		go func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				results <- result{err: err}
				return
			}
			defer c.Close()
			fmt.Fprintf(c, "POST /api/chat HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", addr)
			// Trickle one byte every 100 ms in the background: 1000 bytes
			// would take 100 s.
			done := make(chan struct{})
			defer close(done)
			go func() {
				for {
					select {
					case <-done:
						return
					case <-time.After(100 * time.Millisecond):
						if _, err := c.Write([]byte(" ")); err != nil {
							return
						}
					}
				}
			}()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				results <- result{err: err, elapsed: time.Since(start)}
				return
			}
			resp.Body.Close()
			results <- result{code: resp.StatusCode, elapsed: time.Since(start)}
		}()
	}
	for i := 0; i < clients; i++ {
		r := <-results
		if r.err != nil {
			t.Fatalf("client %d: %v after %v (want a 408 at the body deadline)", i, r.err, r.elapsed)
		}
		if r.code != http.StatusRequestTimeout || r.elapsed > 3*time.Second {
			t.Fatalf("client %d: status %d after %v, want 408 within the body deadline", i, r.code, r.elapsed)
		}
	}
	if n := up.conns.Load(); n != 0 {
		t.Fatalf("slow bodies opened %d connections to Ollama (requests %q)", n, up.requests())
	}
	// A prompt body that arrives in time is still proxied, and the deadline
	// does not cut the stream that follows.
	resp, err := http.Post(agent.URL+"/api/chat", "application/json", strings.NewReader(`{"model":"tiny"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("prompt after the slow clients: %d", resp.StatusCode)
	}
}

func TestStreamOutlivesBodyDeadline(t *testing.T) {
	up, _ := fakeSlowStream(t, 800*time.Millisecond)
	f := newFixture(t, up.URL, func(c *Config) { c.BodyTimeout = 200 * time.Millisecond })
	agent := httptest.NewUnstartedServer(f.srv)
	agent.Config = HTTPServer(f.srv, f.srv.cfg.Log)
	agent.Start()
	defer agent.Close()
	resp, err := http.Post(agent.URL+"/api/chat", "application/json", strings.NewReader(`{"model":"tiny"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !strings.Contains(string(b), `"done":true`) {
		t.Fatalf("stream longer than the body deadline was cut: %v %q", err, b)
	}
}

// fakeSlowStream is an upstream whose chat streams for d.
func fakeSlowStream(t *testing.T, d time.Duration) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		io.WriteString(w, `{"message":{"content":"a"},"done":false}`+"\n")
		w.(http.Flusher).Flush()
		time.Sleep(d)
		io.WriteString(w, `{"done":true}`+"\n")
	}))
	t.Cleanup(up.Close)
	return up, &n
}

func TestConnectionCap(t *testing.T) {
	up := newRecordingUpstream(t)
	f := newFixture(t, up.URL, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := HTTPServer(f.srv, f.srv.cfg.Log)
	go hs.Serve(LimitListener(ln, 2))
	defer hs.Close()
	addr := ln.Addr().String()
	// Two connections sit idle mid-headers.
	var held []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET /healthz HTTP/1.1\r\n")
		held = append(held, c)
	}
	time.Sleep(100 * time.Millisecond)
	third, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	fmt.Fprintf(third, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	third.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	br := bufio.NewReader(third)
	if _, err := http.ReadResponse(br, nil); err == nil {
		t.Fatal("a third connection was served while two were held: no cap")
	}
	held[0].Close()
	third.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("third connection after one closed: %v", err)
	}
	held[1].Close()
}

// countingProvider counts the quotes it makes.
type countingProvider struct {
	quote.Attester
	n atomic.Int64
}

func (c *countingProvider) Attest(nonce []byte, spkiHash [32]byte) ([]byte, error) {
	c.n.Add(1)
	return c.Attester.Attest(nonce, spkiHash)
}

func TestQuoteRateLimit(t *testing.T) {
	var cp *countingProvider
	f := newFixture(t, "http://127.0.0.1:1", func(c *Config) {
		cp = &countingProvider{Attester: c.Provider}
		c.Provider = cp
		c.QuoteRate, c.QuoteBurst = 0.5, 3
	})
	nonce := "?nonce=" + strings.Repeat("ab", 32)
	for i, p := range []string{"/v1/attestation" + nonce, "/api/v1/tee/quote", "/v1/attestation" + nonce} {
		if rec := do(t, f.srv, "GET", p, nil); rec.Code != 200 {
			t.Fatalf("request %d %s within the burst: %d %s", i, p, rec.Code, rec.Body)
		}
	}
	for _, p := range []string{"/v1/attestation" + nonce, "/api/v1/tee/quote" + nonce} {
		rec := do(t, f.srv, "GET", p, nil)
		if rec.Code != http.StatusTooManyRequests {
			t.Fatalf("%s over the rate: %d, want 429", p, rec.Code)
		}
		ra, err := strconv.Atoi(rec.Header().Get("Retry-After"))
		if err != nil || ra < 1 || ra > 2 {
			t.Fatalf("Retry-After %q, want 1..2 seconds", rec.Header().Get("Retry-After"))
		}
		if msg := errBody(t, rec); !strings.Contains(msg, "Retry-After") {
			t.Fatalf("429 message %q does not say when to retry", msg)
		}
	}
	if n := cp.n.Load(); n != 3 {
		t.Fatalf("%d quotes taken, want 3 (the refused requests must not quote)", n)
	}
}

func TestReadyzDoesNotQuotePerProbe(t *testing.T) {
	up, _ := ollamaFakeAllModels(t)
	var cp *countingProvider
	f := newFixture(t, up.URL, func(c *Config) {
		cp = &countingProvider{Attester: c.Provider}
		c.Provider = cp
	})
	for i := 0; i < 50; i++ {
		do(t, f.srv, "GET", "/readyz", nil)
	}
	if n := cp.n.Load(); n != 1 {
		t.Fatalf("50 readiness probes took %d quotes, want 1 (cached)", n)
	}
}

func ollamaFakeAllModels(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		switch r.URL.Path {
		case "/api/version":
			io.WriteString(w, `{"version":"0.5.7"}`)
		case "/api/tags":
			io.WriteString(w, `{"models":[]}`)
		default:
			io.WriteString(w, `{}`)
		}
	}))
	t.Cleanup(up.Close)
	return up, &n
}
