package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/verify"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/policy"
	"github.com/tdforge/tdforge/internal/tdx/quote"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/internal/testutil/netutil"
	"github.com/tdforge/tdforge/internal/testutil/ollamatest"
)

var testSPKIHash = attestation.SPKIHash([]byte("test SPKI DER"))

func testPolicy(upstream string) *policy.Policy {
	return &policy.Policy{
		Version: policy.SchemaVersion,
		Image:   policy.Image{Name: "test-image", Version: "1.2.3", Dev: true, ReferenceURL: "https://example.invalid/ref.json"},
		TDX:     policy.TDX{Simulate: true},
		Network: policy.Network{Mode: "none"},
		Agent:   policy.Agent{Listen: "127.0.0.1:0", TLS: true, Upstream: upstream, AttestationService: "https://attest.example.invalid:8443"},
	}
}

type fixture struct {
	srv      *Server
	pki      *sim.PKI
	logBytes []byte
	dir      string
}

// newFixture builds a Server with the real simulator, a runtime log, and
// the CCEL initd publishes (in the ACPI layout) for the agent.
func newFixture(t testing.TB, upstream string, mod func(*Config)) *fixture {
	t.Helper()
	dir := t.TempDir()
	pki, err := sim.NewPKI()
	if err != nil {
		t.Fatal(err)
	}
	z := strings.Repeat("00", 48)
	l := event.NewLog()
	var rtmr3 [48]byte
	p := testPolicy(upstream)
	ce, err := p.ConfigEvent()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []event.Event{
		{Version: event.Version, Kind: event.KindPayload, Name: "model", Alg: event.AlgVerity, Digest: bytes.Repeat([]byte{7}, 32)},
		ce,
	} {
		if err := l.Append(e, func(m [48]byte) error { rtmr3 = event.Extend(rtmr3, m); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := l.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "runtime-log.cel")
	if err := os.WriteFile(logPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	regs := &sim.Registers{Platform: sim.Platform{
		MRTD: strings.Repeat("aa", 48), RTMR: [3]string{z, z, z}, TDAttributes: "0000000000000000",
		XFAM: "e700060000000000", MRSEAM: z, TEETCBSVN: strings.Repeat("00", 16),
	}, RTMR3: hex.EncodeToString(rtmr3[:])}
	simDir := filepath.Join(dir, "sim")
	os.Mkdir(simDir, 0o700)
	if err := sim.SavePKI(simDir, pki); err != nil {
		t.Fatal(err)
	}
	if err := sim.SaveRegisters(simDir, regs); err != nil {
		t.Fatal(err)
	}
	acpi := filepath.Join(dir, "acpi")
	os.MkdirAll(filepath.Join(acpi, "data"), 0o750)
	os.WriteFile(filepath.Join(acpi, "data", "CCEL"), []byte("simulated ccel"), 0o640)
	os.WriteFile(filepath.Join(acpi, "CCEL"), []byte("CCEL table"), 0o640)
	prov, err := quote.OpenSimulator(simDir)
	if err != nil {
		t.Fatal(err)
	}
	up, _ := url.Parse(upstream)
	cfg := Config{
		Policy: p, Provider: quote.DomainAttester{Provider: prov}, SPKIHash: testSPKIHash,
		Evidence: Evidence{RuntimeLog: logPath, ACPITables: acpi},
		Upstream: up, Log: log.New(io.Discard, "", 0),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &fixture{srv: s, pki: pki, logBytes: raw, dir: dir}
}

func do(t testing.TB, h http.Handler, method, target string, body io.Reader) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, body))
	return rec
}

func errBody(t testing.TB, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var e struct{ Error string }
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
		t.Fatalf("status %d: body %q is not a JSON error", rec.Code, rec.Body.String())
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	return e.Error
}

func TestAttestationBindsNonceAndSPKI(t *testing.T) {
	f := newFixture(t, "http://127.0.0.1:1", nil)
	nonce := bytes.Repeat([]byte{0x5a}, 32)
	rec := do(t, f.srv, "GET", "/v1/attestation?nonce="+hex.EncodeToString(nonce), nil)
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var resp attestation.Response
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	want, _ := attestation.ReportData(nonce, testSPKIHash)
	got, err := sim.ReportData(resp.Quote)
	if err != nil || got != want {
		t.Fatalf("quote REPORTDATA %x, want %x (%v)", got, want, err)
	}
	if resp.ReportData.Value != hex.EncodeToString(want[:]) || resp.ReportData.Nonce != hex.EncodeToString(nonce) ||
		resp.ReportData.SPKIHash != hex.EncodeToString(testSPKIHash[:]) || resp.ReportData.Scheme != attestation.Scheme {
		t.Fatalf("report_data info %+v", resp.ReportData)
	}
	if err := verify.RawTdxQuote(resp.Quote, &verify.Options{TrustedRoots: sim.RootPool(f.pki)}); err != nil {
		t.Fatalf("quote does not verify: %v", err)
	}
	if resp.Version != 1 || resp.QuoteProvider != "simulator" || !resp.Simulated {
		t.Fatalf("header fields %+v", resp)
	}
	if !bytes.Equal(resp.RuntimeLog, f.logBytes) {
		t.Fatal("runtime log bytes differ from initd's file")
	}
	// The runtime log replays to the quoted RTMR3.
	l, err := event.ParseLog(resp.RuntimeLog)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Replay(resp.Quote[sim.BodyOffset+0x148+3*48 : sim.BodyOffset+0x148+4*48]); err != nil {
		t.Fatalf("runtime log does not replay to quoted RTMR3: %v", err)
	}
	evs, _ := json.Marshal(resp.RuntimeLogJSON)
	if !strings.Contains(string(evs), `"payload:model"`) || !strings.Contains(string(evs), `"config:runtime"`) {
		t.Fatalf("runtime_log_json %s", evs)
	}
	if string(resp.CCEL) != "simulated ccel" || string(resp.CCELTable) != "CCEL table" || resp.CCELAbsent != "" {
		t.Fatalf("CCEL not served (absent: %q)", resp.CCELAbsent)
	}
	if resp.Image != (attestation.Image{Name: "test-image", Version: "1.2.3", Dev: true, Simulated: true}) || resp.ReferenceURL != "https://example.invalid/ref.json" ||
		resp.AttestationService != "https://attest.example.invalid:8443" {
		t.Fatalf("image %+v ref %q service %q", resp.Image, resp.ReferenceURL, resp.AttestationService)
	}
	if _, err := time.Parse(time.RFC3339, resp.Timestamp); err != nil {
		t.Fatal(err)
	}
	// A fresh quote per call: another nonce gives another REPORTDATA.
	rec2 := do(t, f.srv, "GET", "/v1/attestation?nonce="+strings.Repeat("01", 16), nil)
	var resp2 attestation.Response
	json.Unmarshal(rec2.Body.Bytes(), &resp2)
	if bytes.Equal(resp2.Quote, resp.Quote) {
		t.Fatal("quote reused across nonces")
	}
}

// Without a CCEL the evidence says exactly why: initd's reason when it
// left one, else what is missing. Half a CCEL is an error.
func TestAttestationCCELAbsent(t *testing.T) {
	f := newFixture(t, "http://127.0.0.1:1", nil)
	acpi := filepath.Join(f.dir, "acpi")
	get := func() attestation.Response {
		rec := do(t, f.srv, "GET", "/v1/attestation?nonce="+strings.Repeat("ab", 16), nil)
		var resp attestation.Response
		if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &resp) != nil {
			t.Fatalf("status %d %s", rec.Code, rec.Body)
		}
		return resp
	}
	os.Remove(filepath.Join(acpi, "data", "CCEL"))
	rec := do(t, f.srv, "GET", "/v1/attestation?nonce="+strings.Repeat("ab", 16), nil)
	if rec.Code != 503 || !strings.Contains(errBody(t, rec), "event log is not") {
		t.Fatalf("table without log: %d %s", rec.Code, rec.Body)
	}
	os.Remove(filepath.Join(acpi, "CCEL"))
	if r := get(); r.CCEL != nil || r.CCELAbsent != "no CCEL: "+filepath.Join(acpi, "CCEL")+" does not exist and initd left no reason in "+CCELAbsentFile {
		t.Fatalf("no reason from initd: absent %q", r.CCELAbsent)
	}
	why := "no CCEL ACPI table: /sys/firmware/acpi/tables/CCEL does not exist (the firmware did not publish its event log)"
	os.WriteFile(filepath.Join(acpi, CCELAbsentFile), []byte(why+"\n"), 0o640)
	if r := get(); r.CCEL != nil || r.CCELAbsent != why {
		t.Fatalf("initd's reason not served: absent %q", r.CCELAbsent)
	}
}

func TestAttestationMissingRuntimeLog(t *testing.T) {
	f := newFixture(t, "http://127.0.0.1:1", func(c *Config) { c.Evidence.RuntimeLog = "/nonexistent/runtime-log.cel" })
	rec := do(t, f.srv, "GET", "/v1/attestation?nonce="+strings.Repeat("ab", 16), nil)
	if rec.Code != 503 || !strings.Contains(errBody(t, rec), "runtime event log unavailable") {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}

func TestNonceValidation(t *testing.T) {
	f := newFixture(t, "http://127.0.0.1:1", nil)
	for _, tc := range []struct {
		name, query, want string
		code              int
	}{
		{"missing", "", "missing nonce", 400},
		{"empty", "?nonce=", "missing nonce", 400},
		{"odd hex", "?nonce=" + strings.Repeat("a", 33), "not valid hex", 400},
		{"not hex", "?nonce=" + strings.Repeat("zz", 16), "not valid hex", 400},
		{"too short", "?nonce=" + strings.Repeat("ab", 15), "15 bytes", 400},
		{"too long", "?nonce=" + strings.Repeat("ab", 65), "65 bytes", 400},
		{"twice", "?nonce=" + strings.Repeat("ab", 16) + "&nonce=" + strings.Repeat("cd", 16), "more than once", 400},
		{"min", "?nonce=" + strings.Repeat("ab", 16), "", 200},
		{"max", "?nonce=" + strings.Repeat("AB", 64), "", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := do(t, f.srv, "GET", "/v1/attestation"+tc.query, nil)
			if rec.Code != tc.code {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.code, rec.Body)
			}
			if tc.code != 200 && !strings.Contains(errBody(t, rec), tc.want) {
				t.Fatalf("error %q does not mention %q", errBody(t, rec), tc.want)
			}
			// The compat endpoint validates a given nonce the same way.
			if tc.query != "" && tc.query != "?nonce=" {
				rec := do(t, f.srv, "GET", "/api/v1/tee/quote"+tc.query, nil)
				if rec.Code != tc.code {
					t.Fatalf("tee quote status %d, want %d", rec.Code, tc.code)
				}
			}
		})
	}
	if rec := do(t, f.srv, "POST", "/v1/attestation?nonce="+strings.Repeat("ab", 16), nil); rec.Code != 405 {
		t.Fatalf("POST: %d", rec.Code)
	}
}

func TestTEEQuoteCompat(t *testing.T) {
	f := newFixture(t, "http://127.0.0.1:1", nil)
	var out TEEQuote
	rec := do(t, f.srv, "GET", "/api/v1/tee/quote", nil)
	if rec.Code != 200 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	json.Unmarshal(rec.Body.Bytes(), &out)
	q, err := hex.DecodeString(out.Quote)
	if err != nil {
		t.Fatal(err)
	}
	rd, _ := sim.ReportData(q)
	want, _ := attestation.ReportData(make([]byte, 32), testSPKIHash)
	if rd != want || rd == ([64]byte{}) || out.Fresh {
		t.Fatalf("no-nonce REPORTDATA %x fresh=%v", rd, out.Fresh)
	}
	if len(out.QuoteParse) == 0 || !bytes.Contains(out.QuoteParse, []byte("tdQuoteBody")) || out.ID == "" || out.Timestamp == "" {
		t.Fatalf("compat fields: %s", rec.Body)
	}
	nonce := strings.Repeat("42", 20)
	rec = do(t, f.srv, "GET", "/api/v1/tee/quote?nonce="+nonce, nil)
	json.Unmarshal(rec.Body.Bytes(), &out)
	q, _ = hex.DecodeString(out.Quote)
	rd, _ = sim.ReportData(q)
	nb, _ := hex.DecodeString(nonce)
	want, _ = attestation.ReportData(nb, testSPKIHash)
	if rd != want || !out.Fresh || out.Nonce != nonce {
		t.Fatal("compat quote not bound to the nonce")
	}
}

func TestRefusedEndpoints(t *testing.T) {
	up, hits := ollamatest.Fake(t, nil)
	f := newFixture(t, up.URL, nil)
	for _, tc := range []struct{ method, path string }{
		{"POST", "/api/pull"}, {"POST", "/api/push"}, {"POST", "/api/create"}, {"DELETE", "/api/delete"},
		{"POST", "/api/copy"}, {"POST", "/api/blobs/sha256:0123"}, {"HEAD", "/api/blobs/sha256:0123"},
	} {
		rec := do(t, f.srv, tc.method, tc.path, strings.NewReader(`{"model":"x"}`))
		if rec.Code != 403 {
			t.Fatalf("%s %s: %d", tc.method, tc.path, rec.Code)
		}
		if tc.method != "HEAD" && !strings.Contains(errBody(t, rec), "measured") {
			t.Fatalf("%s: unclear refusal %s", tc.path, rec.Body)
		}
	}
	if rec := do(t, f.srv, "GET", "/api/unknown", nil); rec.Code != 404 {
		t.Fatalf("unknown API: %d", rec.Code)
	}
	if hits.Load() != 0 {
		t.Fatalf("refused requests reached Ollama %d times", hits.Load())
	}
}

func TestProxyRewritesHostAndOrigin(t *testing.T) {
	type seen struct{ host, origin, xff string }
	got := make(chan seen, 4)
	up, _ := ollamatest.Fake(t, func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Host, r.Header.Get("Origin"), r.Header.Get("X-Forwarded-For")}
		io.WriteString(w, `{"models":[]}`)
	})
	f := newFixture(t, up.URL, nil)
	agent := httptest.NewServer(f.srv)
	defer agent.Close()
	u, _ := url.Parse(agent.URL)
	for _, tc := range []struct{ origin, want string }{
		{agent.URL, ""}, // same origin: the agent's own web UI
		{"http://evil.example", "http://evil.example"}, // left for Ollama to judge
	} {
		req, _ := http.NewRequest("GET", agent.URL+"/api/tags", nil)
		req.Header.Set("Origin", tc.origin)
		req.Host = u.Host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		s := <-got
		upu, _ := url.Parse(up.URL)
		if s.host != upu.Host || s.origin != tc.want || s.xff != "" {
			t.Fatalf("upstream saw %+v (origin sent %q)", s, tc.origin)
		}
	}
}

func TestStreamingPassThrough(t *testing.T) {
	release := make(chan struct{})
	up, _ := ollamatest.Fake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		io.WriteString(w, `{"message":{"content":"first"},"done":false}`+"\n")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, `{"done":true}`+"\n")
	})
	f := newFixture(t, up.URL, nil)
	agent := httptest.NewServer(f.srv)
	defer agent.Close()
	for _, path := range []string{"/api/chat", "/v1/chat/completions"} {
		resp, err := http.Post(agent.URL+path, "application/json", strings.NewReader(`{"stream":true}`))
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(resp.Body)
		lineCh := make(chan string, 1)
		go func() { l, _ := br.ReadString('\n'); lineCh <- l }()
		select {
		case l := <-lineCh:
			if !strings.Contains(l, "first") {
				t.Fatalf("first chunk %q", l)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: first chunk did not arrive before the upstream finished", path)
		}
		release <- struct{}{}
		rest, _ := io.ReadAll(br)
		resp.Body.Close()
		if !strings.Contains(string(rest), `"done":true`) {
			t.Fatalf("rest %q", rest)
		}
	}
}

func TestClientDisconnectCancelsUpstream(t *testing.T) {
	canceled := make(chan struct{})
	started := make(chan struct{})
	up, _ := ollamatest.Fake(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "{}\n")
		w.(http.Flusher).Flush()
		close(started)
		select {
		case <-r.Context().Done():
			close(canceled)
		case <-time.After(10 * time.Second):
		}
	})
	f := newFixture(t, up.URL, nil)
	agent := httptest.NewServer(f.srv)
	defer agent.Close()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", agent.URL+"/api/generate", strings.NewReader(`{}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	cancel()
	resp.Body.Close()
	select {
	case <-canceled:
	case <-time.After(5 * time.Second):
		t.Fatal("upstream generation not canceled after the client disconnected")
	}
}

func TestUpstreamDown(t *testing.T) {
	f := newFixture(t, "http://"+netutil.FreeAddr(t), nil)
	rec := do(t, f.srv, "POST", "/api/chat", strings.NewReader(`{}`))
	if rec.Code != 502 || !strings.HasPrefix(errBody(t, rec), "upstream Ollama unavailable: ") {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	rec = do(t, f.srv, "GET", "/readyz", nil)
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "upstream Ollama unavailable") {
		t.Fatalf("readyz: %d %s", rec.Code, rec.Body)
	}
}

func TestBodyLimit(t *testing.T) {
	var upstreamRead atomic.Int64
	up, _ := ollamatest.Fake(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		upstreamRead.Add(n)
		io.WriteString(w, "{}")
	})
	f := newFixture(t, up.URL, func(c *Config) { c.MaxBody = 1024 })
	agent := httptest.NewServer(f.srv)
	defer agent.Close()
	// Declared length over the limit.
	resp, err := http.Post(agent.URL+"/api/chat", "application/json", bytes.NewReader(make([]byte, 2048)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("declared: %d", resp.StatusCode)
	}
	// Chunked body over the limit.
	pr, pw := io.Pipe()
	go func() { pw.Write(make([]byte, 4096)); pw.Close() }()
	resp, err = http.Post(agent.URL+"/api/chat", "application/json", pr)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 || !strings.Contains(string(b), "exceeds 1024 bytes") {
		t.Fatalf("chunked: %d %s", resp.StatusCode, b)
	}
	// Under the limit passes.
	resp, err = http.Post(agent.URL+"/api/chat", "application/json", bytes.NewReader(make([]byte, 1000)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || upstreamRead.Load() < 1000 {
		t.Fatalf("small body: %d", resp.StatusCode)
	}
}

func TestHealthAndReady(t *testing.T) {
	up, _ := ollamatest.Fake(t, nil)
	f := newFixture(t, up.URL, func(c *Config) { c.QuoteProbeTTL = 20 * time.Millisecond })
	if rec := do(t, f.srv, "GET", "/healthz", nil); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"ok"`) {
		t.Fatalf("healthz %d %s", rec.Code, rec.Body)
	}
	// The first call starts the model probe; readiness follows once it passed.
	rec := do(t, f.srv, "GET", "/readyz", nil)
	for i := 0; i < 100 && rec.Code != 200; i++ {
		time.Sleep(20 * time.Millisecond)
		rec = do(t, f.srv, "GET", "/readyz", nil)
	}
	var r map[string]any
	json.Unmarshal(rec.Body.Bytes(), &r)
	if rec.Code != 200 || r["status"] != "ready" || r["ollama_version"] != "0.5.7" || r["quote_provider"] != "simulator" {
		t.Fatalf("readyz %d %s", rec.Code, rec.Body)
	}
	// A broken quote backend makes the agent not ready once the last
	// quote's outcome is older than QuoteProbeTTL.
	os.WriteFile(filepath.Join(f.dir, "sim", sim.RegistersFile), []byte("{"), 0o644)
	time.Sleep(30 * time.Millisecond)
	rec = do(t, f.srv, "GET", "/readyz", nil)
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "quote backend failed") {
		t.Fatalf("readyz with broken quotes: %d %s", rec.Code, rec.Body)
	}
}

func TestWebUI(t *testing.T) {
	dir := t.TempDir()
	ui := filepath.Join(dir, "ui")
	os.MkdirAll(filepath.Join(ui, "assets"), 0o755)
	os.MkdirAll(filepath.Join(ui, "docs"), 0o755)
	os.WriteFile(filepath.Join(ui, "index.html"), []byte("<html>chat</html>"), 0o644)
	os.WriteFile(filepath.Join(ui, "assets", "app.js"), []byte("console.log(1)"), 0o644)
	os.WriteFile(filepath.Join(ui, "docs", "index.html"), []byte("docs"), 0o644)
	os.WriteFile(filepath.Join(dir, "secret"), []byte("secret"), 0o644)
	os.Symlink(filepath.Join(dir, "secret"), filepath.Join(ui, "escape"))
	f := newFixture(t, "http://127.0.0.1:1", func(c *Config) { c.WebUIDir = ui })
	for _, tc := range []struct {
		path string
		code int
		body string
	}{
		{"/", 200, "chat"},
		{"/assets/app.js", 200, "console.log"},
		{"/docs/", 200, "docs"},
		{"/assets/", 404, ""},
		{"/escape", 404, ""},
		{"/secret", 404, ""},
		{"/missing.css", 404, ""},
	} {
		rec := do(t, f.srv, "GET", tc.path, nil)
		if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.body) {
			t.Fatalf("GET %s: %d %q", tc.path, rec.Code, rec.Body)
		}
		if strings.Contains(rec.Body.String(), "app.js") || strings.Contains(rec.Body.String(), "secret") {
			t.Fatalf("GET %s leaked a listing or an outside file: %s", tc.path, rec.Body)
		}
	}
	if rec := do(t, f.srv, "POST", "/", nil); rec.Code != 405 {
		t.Fatalf("POST /: %d", rec.Code)
	}
	g := newFixture(t, "http://127.0.0.1:1", nil)
	if rec := do(t, g.srv, "GET", "/", nil); rec.Code != 404 || !strings.Contains(errBody(t, rec), "no web UI") {
		t.Fatalf("no UI: %d %s", rec.Code, rec.Body)
	}
	// A failed web-UI payload must not stop the agent: attestation keeps
	// working and the UI answers 503 with the reason.
	h, err := New(Config{Policy: testPolicy("http://x"), Provider: g.srv.cfg.Provider, Upstream: g.srv.cfg.Upstream, WebUIDir: filepath.Join(dir, "nope")})
	if err != nil {
		t.Fatalf("missing UI dir stopped the agent: %v", err)
	}
	if rec := do(t, h, "GET", "/", nil); rec.Code != 503 || !strings.Contains(errBody(t, rec), "webui_payload") {
		t.Fatalf("missing UI dir: %d %s", rec.Code, rec.Body)
	}
	if rec := do(t, h, "GET", "/healthz", nil); rec.Code != 200 {
		t.Fatalf("healthz without a UI: %d", rec.Code)
	}
}

// A payload initd left locked makes the agent not ready, saying why in
// the words of the measured payload-locked event.
func TestReadyLockedPayload(t *testing.T) {
	up, _ := ollamatest.Fake(t, nil)
	f := newFixture(t, up.URL, nil)
	l := event.NewLog()
	for _, e := range []event.Event{
		{Version: event.Version, Kind: event.KindPayload, Name: "model", Alg: event.AlgVerity, Digest: bytes.Repeat([]byte{9}, 32)},
		event.Locked("model", "broker refused: RTMR2 mismatch"),
	} {
		if err := l.Append(e, func([48]byte) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	raw, _ := l.MarshalBinary()
	if err := os.WriteFile(f.srv.cfg.Evidence.RuntimeLog, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	rec := do(t, f.srv, "GET", "/readyz", nil)
	var r map[string]any
	json.Unmarshal(rec.Body.Bytes(), &r)
	if rec.Code != 503 || r["error"] != "model: locked (broker refused: RTMR2 mismatch)" {
		t.Fatalf("readyz %d %s", rec.Code, rec.Body)
	}
}
