// Package server is the agent's HTTP handler: attestation endpoints, the
// chat proxy to the measured Ollama, the web UI and health checks.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tdforge/tdforge/agent/convstore"
	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/policy"
	"github.com/tdforge/tdforge/internal/tdx/quote"
)

// DefaultMaxBody limits proxied request bodies.
const DefaultMaxBody = 8 << 20

// Config configures the handler.
type Config struct {
	Policy *policy.Policy
	// Provider quotes over attestation.ReportData(nonce, SPKIHash): initd's
	// quoting socket in the guest.
	Provider quote.Attester
	// SPKIHash is SHA-256 of the agent's TLS SubjectPublicKeyInfo; every
	// quote's REPORTDATA binds it.
	SPKIHash [32]byte
	Evidence Evidence
	// Upstream is the Ollama base URL (policy.Agent.Upstream).
	Upstream *url.URL
	// WebUIDir is the web UI root ("" when the image has none).
	WebUIDir string
	// MaxBody bounds proxied request bodies (default DefaultMaxBody).
	MaxBody int64
	// UpstreamHeaderTimeout bounds the wait for Ollama's response headers
	// (a non-streamed generation answers only when done). Default 10 min.
	UpstreamHeaderTimeout time.Duration
	// BodyTimeout bounds the wait for a whole request body (default
	// DefaultBodyTimeout). Proxied bodies are read in full before a
	// connection to Ollama is opened.
	BodyTimeout time.Duration
	// QuoteRate (quotes per second) and QuoteBurst bound the quotes that
	// /v1/attestation and /api/v1/tee/quote take together (defaults
	// DefaultQuoteRate, DefaultQuoteBurst); a negative rate means no limit.
	QuoteRate  float64
	QuoteBurst int
	// QuoteProbeTTL is how long /readyz relies on the last quote's outcome
	// (default DefaultQuoteProbeTTL).
	QuoteProbeTTL time.Duration
	// History says where conversations are kept (the zero value: none).
	History History
	Log     *log.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Server is the agent's http.Handler.
type Server struct {
	cfg       Config
	mux       *http.ServeMux
	proxy     http.Handler
	client    *http.Client // readiness probe
	transport *http.Transport
	quoteMu   sync.Mutex
	quotes    *bucket // nil: no rate limit
	readyMu   sync.Mutex
	lastQuote struct {
		sync.Mutex
		at  time.Time
		err error
	}
	webui     http.Handler
	closeFns  []func() error
	models    modelHealth
	historyMu sync.Mutex
	conv      *convstore.Store // nil until the volume is open
	// convTampered is why the store failed its check at open
	// (convstore.ErrTampered): never retried.
	convTampered *historyError
}

// New builds the handler.
func New(cfg Config) (*Server, error) {
	if cfg.Policy == nil || cfg.Provider == nil || cfg.Upstream == nil {
		return nil, errors.New("agent server: policy, quote provider and upstream are required")
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.UpstreamHeaderTimeout <= 0 {
		cfg.UpstreamHeaderTimeout = 10 * time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = log.New(os.Stderr, "agent: ", log.LstdFlags)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = DefaultBodyTimeout
	}
	if cfg.QuoteRate == 0 {
		cfg.QuoteRate = DefaultQuoteRate
	}
	if cfg.QuoteBurst <= 0 {
		cfg.QuoteBurst = DefaultQuoteBurst
	}
	if cfg.QuoteProbeTTL <= 0 {
		cfg.QuoteProbeTTL = DefaultQuoteProbeTTL
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux()}
	if cfg.QuoteRate > 0 {
		s.quotes = newBucket(cfg.QuoteRate, cfg.QuoteBurst)
	}
	tr := newTransport(cfg.UpstreamHeaderTimeout)
	s.transport = tr
	s.proxy = newProxy(cfg.Upstream, tr, cfg.Log)
	s.client = &http.Client{Transport: tr, Timeout: 3 * time.Second}

	if cfg.WebUIDir != "" {
		h, closeFn, err := newWebUI(cfg.WebUIDir)
		if err != nil {
			// The web-UI payload failed (initd attested that); the agent
			// keeps serving attestation so the failure can be seen.
			log.Printf("%v; serving attestation and the API without the web UI", err)
			h = webUIUnavailable(err)
			closeFn = func() error { return nil }
		}
		s.webui = h
		s.closeFns = append(s.closeFns, closeFn)
	}

	s.mux.Handle(attestation.PathAttestation, allow(http.HandlerFunc(s.handleAttestation), "GET", "HEAD"))
	s.mux.Handle(attestation.PathTEEQuote, allow(http.HandlerFunc(s.handleTEEQuote), "GET", "HEAD"))
	s.mux.Handle(attestation.PathHealth, allow(http.HandlerFunc(s.handleHealth), "GET", "HEAD"))
	s.mux.Handle(attestation.PathReady, allow(http.HandlerFunc(s.handleReady), "GET", "HEAD"))
	s.mux.Handle(PathConversations, allow(http.HandlerFunc(s.handleConversations), "GET", "HEAD", "POST"))
	s.mux.Handle(PathConversations+"/", allow(http.HandlerFunc(s.handleConversation), "GET", "HEAD", "DELETE"))
	s.closeFns = append(s.closeFns, s.closeStore)
	for _, p := range ProxiedPaths {
		s.mux.Handle(p.Pattern, allow(s.forward(), p.Methods...))
	}
	for _, p := range RefusedPaths {
		s.mux.HandleFunc(p, s.handleRefused)
	}
	s.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown API endpoint %s", r.URL.Path))
	})
	s.mux.HandleFunc("/", s.handleWebUI)
	return s, nil
}

// PathConversations is the conversation API's collection.
const PathConversations = "/v1/conversations"

// Close releases the web UI root and closes the conversation store.
func (s *Server) Close() error {
	var first error
	for _, f := range s.closeFns {
		if err := f(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// CloseIdleConnections closes idle keep-alive connections to Ollama.
func (s *Server) CloseIdleConnections() { s.transport.CloseIdleConnections() }

// ServeHTTP implements http.Handler: it refuses unclean request targets
// (checkTarget) before routing and gives every request body the body
// deadline.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if code, msg := checkTarget(r); code != 0 {
		if code == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", "GET, HEAD, POST")
		}
		w.Header().Set("Connection", "close")
		writeError(w, code, msg)
		return
	}
	// Handlers that ignore the body still must not let a client hold the
	// connection by trickling it; the proxy lifts the deadline once it
	// has read the body.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout))
	s.mux.ServeHTTP(w, r)
}

// Route is a proxied Ollama endpoint: a ServeMux pattern and its methods.
type Route struct {
	Pattern string
	Methods []string
}

var (
	getRoute  = []string{"GET", "HEAD"}
	postRoute = []string{"POST"}
)

// ProxiedPaths are the Ollama endpoints passed through, each with the only
// methods it accepts; other methods get 405 and never reach Ollama.
var ProxiedPaths = []Route{
	{"/api/chat", postRoute}, {"/api/generate", postRoute}, {"/api/show", postRoute},
	{"/api/embed", postRoute}, {"/api/embeddings", postRoute},
	{"/api/tags", getRoute}, {"/api/ps", getRoute}, {"/api/version", getRoute},
	{"/v1/chat/completions", postRoute}, {"/v1/completions", postRoute}, {"/v1/embeddings", postRoute},
	{"/v1/models", getRoute}, {"/v1/models/", getRoute},
}

// RefusedPaths are Ollama's model-management endpoints: the model set is
// measured, so the agent refuses to change it.
var RefusedPaths = []string{"/api/pull", "/api/push", "/api/create", "/api/delete", "/api/copy", "/api/blobs/"}

func (s *Server) handleRefused(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusForbidden, fmt.Sprintf(
		"%s is disabled: the model set of this image is measured into RTMR3 at boot and cannot change at run time; build a new image to change models",
		r.URL.Path))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// parseNonce reads the hex nonce query parameter.
func parseNonce(r *http.Request, required bool) ([]byte, error) {
	v, ok := r.URL.Query()["nonce"]
	if !ok || len(v) == 0 || v[0] == "" {
		if required {
			return nil, fmt.Errorf("missing nonce: pass ?nonce=<hex>, %d..%d random bytes", attestation.MinNonce, attestation.MaxNonce)
		}
		return nil, nil
	}
	if len(v) > 1 {
		return nil, errors.New("nonce given more than once")
	}
	n, err := hex.DecodeString(v[0])
	if err != nil {
		return nil, fmt.Errorf("nonce is not valid hex (%v): pass an even number of hex digits", err)
	}
	if len(n) < attestation.MinNonce || len(n) > attestation.MaxNonce {
		return nil, fmt.Errorf("nonce is %d bytes; it must be %d..%d bytes (%d..%d hex digits)",
			len(n), attestation.MinNonce, attestation.MaxNonce, 2*attestation.MinNonce, 2*attestation.MaxNonce)
	}
	return n, nil
}

func (s *Server) quote(nonce []byte) ([]byte, [64]byte, error) {
	rd, err := attestation.ReportData(nonce, s.cfg.SPKIHash)
	if err != nil {
		return nil, rd, err
	}
	s.quoteMu.Lock()
	defer s.quoteMu.Unlock()
	q, err := s.cfg.Provider.Attest(nonce, s.cfg.SPKIHash)
	s.lastQuote.Lock()
	s.lastQuote.at, s.lastQuote.err = s.cfg.Now(), err
	s.lastQuote.Unlock()
	return q, rd, err
}

// clientQuote quotes nonce for a client's request, within the shared
// quote rate (allowQuote), and returns the quote and its REPORTDATA. When
// it cannot, it answers (429 or 503), logs the backend's error after
// logPrefix, and returns false.
func (s *Server) clientQuote(w http.ResponseWriter, nonce []byte, logPrefix string) ([]byte, [64]byte, bool) {
	if !s.allowQuote(w) {
		return nil, [64]byte{}, false
	}
	q, rd, err := s.quote(nonce)
	if err != nil {
		s.cfg.Log.Printf("%s: %v", logPrefix, err)
		writeError(w, http.StatusServiceUnavailable, "quote backend failed: "+err.Error())
		return nil, rd, false
	}
	return q, rd, true
}

// quoteHealth is the outcome of the last quote when it is younger than
// QuoteProbeTTL; otherwise it takes a probe quote. Readiness probes thus
// cost at most one quote per TTL, whatever their rate.
func (s *Server) quoteHealth() error {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	s.lastQuote.Lock()
	at, err := s.lastQuote.at, s.lastQuote.err
	s.lastQuote.Unlock()
	if !at.IsZero() && s.cfg.Now().Sub(at) < s.cfg.QuoteProbeTTL {
		return err
	}
	_, _, err = s.quote([]byte("tdforge-readyz-probe"))
	return err
}

func (s *Server) simulated() bool { return s.cfg.Provider.Name() == quote.NameSimulator }

func (s *Server) handleAttestation(w http.ResponseWriter, r *http.Request) {
	nonce, err := parseNonce(r, true)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	logs, err := s.cfg.Evidence.Read()
	if err != nil {
		s.cfg.Log.Printf("attestation: %v", err)
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	q, rd, ok := s.clientQuote(w, nonce, "attestation: quote")
	if !ok {
		return
	}
	p := s.cfg.Policy
	state, gen := s.historyState(r.Context())
	writeJSON(w, http.StatusOK, attestation.Response{
		Version:       1,
		Quote:         q,
		QuoteProvider: s.cfg.Provider.Name(),
		Simulated:     s.simulated(),
		ReportData: attestation.ReportDataInfo{
			Scheme:   attestation.Scheme,
			Nonce:    hex.EncodeToString(nonce),
			SPKIHash: hex.EncodeToString(s.cfg.SPKIHash[:]),
			Value:    hex.EncodeToString(rd[:]),
		},
		RuntimeLog:         logs.RuntimeLog,
		RuntimeLogJSON:     logs.RuntimeLogJSON,
		CCEL:               logs.CCEL,
		CCELTable:          logs.CCELTable,
		CCELAbsent:         logs.CCELAbsent,
		Image:              attestation.Image{Name: p.Image.Name, Version: p.Image.Version, Dev: p.Image.Dev, Simulated: p.TDX.Simulate},
		ReferenceURL:       p.Image.ReferenceURL,
		AttestationService: p.Agent.AttestationService,
		State:              state,
		StateGeneration:    gen,
		Timestamp:          s.cfg.Now().UTC().Format(time.RFC3339),
	})
}

// CompatNoNonce is the nonce the compatibility endpoint binds when the
// client sends none: 32 zero bytes. REPORTDATA is still
// SHA-512(domain || nonce || SPKI hash), so it is never all zero and always
// binds the TLS key, but such a quote is not fresh.
var CompatNoNonce = make([]byte, 32)

// TEEQuote is the body of GET /api/v1/tee/quote, the shape the original
// confidential-AI demo's web UI expects, plus the binding details.
type TEEQuote struct {
	Quote         string          `json:"quote"` // hex
	QuoteParse    json.RawMessage `json:"quote_parse,omitempty"`
	Timestamp     string          `json:"timestamp"`
	ID            string          `json:"id"`
	Nonce         string          `json:"nonce"`
	Fresh         bool            `json:"fresh"` // false when no nonce was given
	ReportData    string          `json:"report_data"`
	SPKIHash      string          `json:"spki_hash"`
	Scheme        string          `json:"report_data_scheme"`
	QuoteProvider string          `json:"quote_provider"`
	Simulated     bool            `json:"simulated"`
}

func (s *Server) handleTEEQuote(w http.ResponseWriter, r *http.Request) {
	nonce, err := parseNonce(r, false)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	fresh := nonce != nil
	if !fresh {
		nonce = CompatNoNonce
	}
	q, rd, ok := s.clientQuote(w, nonce, "tee quote")
	if !ok {
		return
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	out := TEEQuote{
		Quote: hex.EncodeToString(q), Timestamp: s.cfg.Now().UTC().Format(time.RFC3339), ID: hex.EncodeToString(id),
		Nonce: hex.EncodeToString(nonce), Fresh: fresh, ReportData: hex.EncodeToString(rd[:]),
		SPKIHash: hex.EncodeToString(s.cfg.SPKIHash[:]), Scheme: attestation.Scheme,
		QuoteProvider: s.cfg.Provider.Name(), Simulated: s.simulated(),
	}
	if parsed, err := abi.QuoteToProto(q); err == nil {
		if qv4, ok := parsed.(*pb.QuoteV4); ok {
			if b, err := protojson.Marshal(qv4); err == nil {
				out.QuoteParse = b
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// Ready reports whether no payload is locked, Ollama answers /api/version
// and the quote backend can quote.
func (s *Server) Ready(ctx context.Context) (map[string]any, error) {
	out := map[string]any{"quote_provider": s.cfg.Provider.Name()}
	// The volume's state is reported, not required: chat works without
	// history, and a locked volume must be visible, not hidden by a
	// restart loop.
	if state, gen := s.historyState(ctx); state != "" {
		out["state"] = state
		if gen != nil {
			out["state_generation"] = *gen
		}
	}
	if s.cfg.Evidence.RuntimeLog != "" {
		if locked, err := s.cfg.Evidence.Locked(); err == nil && len(locked) > 0 {
			out["locked"] = locked
			return out, errors.New(LockedStatus(locked))
		}
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.cfg.Upstream.JoinPath("/api/version").String(), nil)
	resp, err := s.client.Do(req)
	if err != nil {
		return out, fmt.Errorf("upstream Ollama unavailable: %w", err)
	}
	defer resp.Body.Close()
	var v struct {
		Version string `json:"version"`
	}
	if resp.StatusCode != http.StatusOK {
		return out, fmt.Errorf("upstream Ollama /api/version answered %s", resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&v); err != nil {
		return out, fmt.Errorf("upstream Ollama /api/version: %w", err)
	}
	out["ollama_version"] = v.Version
	if err := s.quoteHealth(); err != nil {
		return out, fmt.Errorf("quote backend failed: %w", err)
	}
	models, err := s.modelStatus()
	out["models"] = models
	if err != nil {
		return out, err
	}
	return out, nil
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	out, err := s.Ready(ctx)
	if err != nil {
		out["status"] = "not ready"
		out["error"] = err.Error()
		writeJSON(w, http.StatusServiceUnavailable, out)
		return
	}
	out["status"] = "ready"
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleWebUI(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "the web UI is read-only: use GET")
		return
	}
	if s.webui == nil {
		writeError(w, http.StatusNotFound, "this image has no web UI (policy agent.webui_payload is empty)")
		return
	}
	if strings.HasPrefix(r.URL.Path, "/v1/") {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown API endpoint %s", r.URL.Path))
		return
	}
	s.webui.ServeHTTP(w, r)
}
