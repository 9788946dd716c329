// Package service is the attestation service behind `verifier serve`:
// net/http handlers that appraise a TD's evidence against a directory of
// reference documents and answer with a signed EAR attestation result.
//
//	GET  /v1/nonce               {"nonce": HEX, "expires": RFC3339}
//	POST /v1/attest              body: the agent's /v1/attestation document
//	POST /attestation            Trustee RESTful AS request shape
//	GET  /.well-known/jwks.json  the result-signing public keys
//	GET  /healthz, /readyz, /metrics
//	POST /kbs/v0/auth, /kbs/v0/attest; GET /kbs/v0/resource/...
//	                             the key broker (Config.Resources; package broker)
//
// Appraisal is stateless: replicas share only the signing key and the
// nonce secret. Bad input is a 4xx JSON error naming the field, never a
// signed result.
package service

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/go-tdx-guest/verify/trust"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/veraison/ear"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/internal/tdx/signing"
	"github.com/tdforge/tdforge/verifier/broker"
	"github.com/tdforge/tdforge/verifier/collateral"
	"github.com/tdforge/tdforge/verifier/nonce"
	"github.com/tdforge/tdforge/verifier/poll"
	"github.com/tdforge/tdforge/verifier/result"
	"github.com/tdforge/tdforge/verifier/verify"
)

// DefaultMaxBody is the default request body limit (bytes).
const DefaultMaxBody = 4 << 20

// API paths.
const (
	PathNonce    = "/v1/nonce"
	PathAttest   = "/v1/attest"
	PathTrustee  = "/attestation"
	PathJWKS     = "/.well-known/jwks.json"
	PathHealthz  = "/healthz"
	PathReadyz   = "/readyz"
	PathMetrics  = "/metrics"
	ContentJWT   = "application/jwt"
	contentJSON  = "application/json"
	statusRefuse = "refused"
)

// Config configures a Service.
type Config struct {
	// ReferenceDir holds the reference documents; evidence matching any
	// one that is not revoked is accepted.
	ReferenceDir string
	// ReferenceKey is the public key file the documents must be signed
	// with; empty only with Dev.
	ReferenceKey string
	Dev          bool
	// AllowSimulated accepts simulated quotes chaining to SimRoots (dev
	// references only, as in the CLI).
	AllowSimulated bool
	SimRoots       *x509.CertPool
	// Collateral is an offline Intel PCS bundle; nil fetches online
	// through Cache.
	Collateral *collateral.Bundle
	// Cache keeps online collateral per FMSPC until its nextUpdate (nil
	// without a bundle: a collateral.NewCache on the service's clock).
	// Watch refreshes it in the background.
	Cache *collateral.Cache
	// AcceptUnpinned lists registers the operator accepts unpinned in a
	// reference (--accept-unpinned): a trusted verdict is then `warning`,
	// and the result lists them.
	AcceptUnpinned []register.Register
	Keys           *result.KeySet
	Nonces         *nonce.Issuer
	// MaxBody limits request bodies (0: DefaultMaxBody).
	MaxBody int64
	// VerifierBuild goes into ear.verifier-id.
	VerifierBuild string
	Log           *log.Logger
	// Now is the verification time (nil: the current time).
	Now func() time.Time
	// CORSOrigins are the exact web origins (e.g. the agent's web UI,
	// https://agent.example:8443) allowed to call the nonce, attest and
	// JWKS endpoints from a page; none by default.
	CORSOrigins []string
	// Resources, when set, is the key broker's resource directory: the
	// KBS endpoints (package broker) are served too.
	Resources string
}

// Service is the attestation service.
type Service struct {
	cfg     Config
	refs    atomic.Pointer[refSet]
	metrics *metrics
	mux     *http.ServeMux
}

// CollateralCheck is how often Watch looks for cached collateral due for
// a refresh.
const CollateralCheck = time.Minute

// Errors of New that name a setting the caller must change.
var (
	ErrNoReferenceDir  = errors.New("no reference directory")
	ErrNoReferenceKey  = errors.New("reference documents must be signed, and no reference key was given")
	ErrBadReferenceKey = errors.New("not the publisher's PEM public key")
)

// New checks cfg and loads the reference directory.
func New(cfg Config) (*Service, error) {
	switch {
	case cfg.ReferenceDir == "":
		return nil, ErrNoReferenceDir
	case cfg.ReferenceKey == "" && !cfg.Dev:
		return nil, ErrNoReferenceKey
	case cfg.AllowSimulated && cfg.SimRoots == nil:
		return nil, verify.ErrNoSimRoot
	case cfg.Keys == nil || cfg.Nonces == nil:
		return nil, errors.New("a signing key and a nonce secret are required")
	}
	for _, o := range cfg.CORSOrigins {
		if err := CheckOrigin(o); err != nil {
			return nil, err
		}
	}
	if cfg.ReferenceKey != "" {
		pub, err := os.ReadFile(cfg.ReferenceKey)
		if err == nil {
			_, err = signing.ParsePublicKey(pub)
		}
		if err != nil {
			return nil, fmt.Errorf("reference key %s: %v: %w", cfg.ReferenceKey, err, ErrBadReferenceKey)
		}
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.Log == nil {
		cfg.Log = log.New(log.Writer(), "verifier serve: ", log.LstdFlags)
	}
	s := &Service{cfg: cfg}
	if cfg.Collateral == nil && cfg.Cache == nil {
		s.cfg.Cache = collateral.NewCache()
		s.cfg.Cache.Now = s.now
	}
	s.metrics = newMetrics(s.collateralFetched, s.now, s.collateralErrors, func() float64 { return float64(s.cfg.Nonces.Remembered()) })
	rs, err := loadRefs(cfg.ReferenceDir, cfg.ReferenceKey)
	if err != nil {
		return nil, err
	}
	s.setRefs(rs)
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET "+PathNonce, s.handleNonce)
	s.mux.HandleFunc("POST "+PathAttest, s.handleAttest)
	s.mux.HandleFunc("POST "+PathTrustee, s.handleTrustee)
	s.mux.HandleFunc("GET "+PathJWKS, s.handleJWKS)
	s.mux.HandleFunc("GET "+PathHealthz, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	})
	s.mux.HandleFunc("GET "+PathReadyz, s.handleReady)
	s.mux.Handle("GET "+PathMetrics, promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	if cfg.Resources != "" {
		b, err := broker.New(broker.Config{ResourceDir: cfg.Resources, Appraise: s.appraiseRCAR, Log: cfg.Log, MaxBody: cfg.MaxBody, Now: cfg.Now})
		if err != nil {
			return nil, err
		}
		b.Register(s.mux)
	}
	return s, nil
}

// Handler serves the API. Unknown paths and methods get JSON errors.
func (s *Service) Handler() http.Handler {
	return s.cors(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := s.mux.Handler(r)
		if pattern == "" {
			rec := &statusRecorder{header: http.Header{}}
			h.ServeHTTP(rec, r)
			msg := "no such endpoint: " + r.URL.Path
			if rec.code == http.StatusMethodNotAllowed {
				msg = fmt.Sprintf("%s does not take %s (allowed: %s)", r.URL.Path, r.Method, rec.header.Get("Allow"))
				w.Header().Set("Allow", rec.header.Get("Allow"))
			}
			writeError(w, &apiError{status: rec.code, field: "path", msg: msg})
			return
		}
		h.ServeHTTP(w, r)
	}))
}

// statusRecorder captures the mux's own 404/405 answer.
type statusRecorder struct {
	header http.Header
	code   int
}

func (r *statusRecorder) Header() http.Header         { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *statusRecorder) WriteHeader(code int)        { r.code = code }

func (s *Service) setRefs(rs *refSet) {
	s.refs.Store(rs)
	s.metrics.setReferences(rs)
	for _, p := range rs.problems {
		s.cfg.Log.Printf("reference directory: %s", p)
	}
	active, revoked := rs.counts()
	s.cfg.Log.Printf("reference directory %s: %d active, %d revoked, %d unusable", s.cfg.ReferenceDir, active, revoked, len(rs.problems))
}

// Reload re-reads the reference directory if its content changed. A
// directory that cannot be read keeps the documents loaded before; an
// unusable revocation list does not (loadRefs fails closed).
func (s *Service) Reload() error {
	fp, err := dirFingerprint(s.cfg.ReferenceDir)
	if err != nil {
		return err
	}
	if fp == s.refs.Load().fingerprint {
		return nil
	}
	rs, err := loadRefs(s.cfg.ReferenceDir, s.cfg.ReferenceKey)
	if err != nil {
		return err
	}
	s.setRefs(rs)
	return nil
}

// Watch polls the reference directory every interval, and refreshes the
// collateral cache in the background, until ctx ends.
func (s *Service) Watch(ctx context.Context, interval time.Duration) {
	if s.cfg.Cache != nil {
		go s.cfg.Cache.Run(ctx, CollateralCheck, s.cfg.Log.Printf)
	}
	poll.Every(ctx, interval, func() {
		if err := s.Reload(); err != nil {
			s.cfg.Log.Printf("reference directory: reload failed, keeping the documents loaded before: %v", err)
		}
	})
}

func (s *Service) now() time.Time {
	if s.cfg.Now != nil {
		return s.cfg.Now()
	}
	return time.Now()
}

func (s *Service) handleNonce(w http.ResponseWriter, r *http.Request) {
	n, exp, err := s.cfg.Nonces.Issue()
	if err != nil {
		writeError(w, &apiError{status: http.StatusServiceUnavailable, msg: "no randomness: " + err.Error()})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]string{"nonce": hex.EncodeToString(n), "expires": exp.UTC().Format(time.RFC3339)})
}

func (s *Service) handleJWKS(w http.ResponseWriter, r *http.Request) {
	b, err := s.cfg.Keys.JWKS()
	if err != nil {
		writeError(w, &apiError{status: http.StatusServiceUnavailable, msg: err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "max-age=60")
	w.Write(b)
}

func (s *Service) handleReady(w http.ResponseWriter, r *http.Request) {
	rs := s.refs.Load()
	active, revoked := rs.counts()
	body := map[string]any{"ready": active > 0, "references": active, "revoked": revoked}
	if len(rs.problems) > 0 {
		body["reference_problems"] = rs.problems
	}
	if active == 0 {
		body["reason"] = "no usable reference document in " + s.cfg.ReferenceDir
	}
	if rs.revokedErr != "" {
		body["reason"] = rs.revokedErr
	}
	coll, collReady := s.collateralStatus()
	body["collateral"] = coll
	if !collReady {
		body["ready"] = false
		body["reason"] = "Intel PCS unreachable and no cached collateral is still valid (see collateral.cache.outage)"
	}
	code := http.StatusOK
	if active == 0 || !collReady {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, body)
}

// apiError is a refused request: a 4xx (or 503) JSON error naming the
// field at fault.
type apiError struct {
	status int
	field  string
	msg    string
}

func (e *apiError) Error() string { return e.field + ": " + e.msg }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", contentJSON)
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *apiError) {
	body := map[string]string{"error": e.msg}
	if e.field != "" {
		body["field"] = e.field
		body["error"] = e.field + ": " + e.msg
	}
	writeJSON(w, e.status, body)
}

func badField(field, format string, a ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, field: field, msg: fmt.Sprintf(format, a...)}
}

// Outcome is the answer of POST /v1/attest.
type Outcome struct {
	// Token is the signed EAR attestation result (compact JWS).
	Token string `json:"token"`
	// Status repeats the result's ear.status, unsigned: relying parties
	// read it from the token.
	Status   string    `json:"status"`
	PolicyID string    `json:"policy_id,omitempty"`
	Expires  time.Time `json:"expires"`
	// Report is the appraisal report (the same as `verifier quote --json`).
	Report *verify.Report `json:"report"`
}

// appraisal is one evidence to appraise, with the names of its fields in
// the request (for errors).
type appraisal struct {
	ev                    verify.Evidence
	nonceHex, spkiHex     string
	simulatedClaim        bool
	image                 attestation.Image
	policyIDs             []string
	fieldQuote, fieldRD   string
	fieldNonce, fieldSPKI string
}

func (s *Service) handleAttest(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var resp attestation.Response
	if e := s.decode(w, r, &resp); e != nil {
		s.refuse(w, e)
		return
	}
	if resp.Version != 1 {
		s.refuse(w, badField("version", "%d is not supported: want 1 (the agent's /v1/attestation document, unchanged)", resp.Version))
		return
	}
	a := &appraisal{
		ev:             verify.Evidence{Quote: resp.Quote, CCEL: resp.CCEL, CCELTable: resp.CCELTable, CCELAbsent: resp.CCELAbsent, RuntimeLog: resp.RuntimeLog, Claimed: &resp.ReportData},
		nonceHex:       resp.ReportData.Nonce,
		spkiHex:        resp.ReportData.SPKIHash,
		simulatedClaim: resp.Simulated || resp.QuoteProvider == "simulator",
		image:          resp.Image,
		fieldQuote:     "quote", fieldRD: "report_data.value",
		fieldNonce: "report_data.nonce", fieldSPKI: "report_data.spki_hash",
	}
	out, e := s.run(r.Context(), a, start)
	if e != nil {
		s.refuse(w, e)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// decode reads a JSON body within the size limit into v. It decodes with
// the JSON v2 implementation (github.com/go-json-experiment/json): its
// scanner is several times faster on the large base64 strings of evidence
// (a 64-256 KiB CCEL), the bulk of the service's own cost, and it refuses
// duplicate member names and invalid UTF-8 (no parser differentials).
func (s *Service) decode(w http.ResponseWriter, r *http.Request, v any) *apiError {
	// Read into one pooled buffer with room for Content-Length (within the
	// limit): growing a fresh one by doubling copies and zeroes a large
	// body several times. The decoder copies what it keeps.
	buf := bodyBuffers.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= maxPooledBody {
			buf.Reset()
			bodyBuffers.Put(buf)
		}
	}()
	// Content-Length is the client's claim: pre-grow at most growAhead,
	// so idle connections that declare a large body and send nothing
	// cannot pin MaxBody each.
	if r.ContentLength > 0 {
		buf.Grow(int(min(r.ContentLength, s.cfg.MaxBody, growAhead)) + bytes.MinRead)
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, s.cfg.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &apiError{status: http.StatusRequestEntityTooLarge, field: "body", msg: fmt.Sprintf("larger than the limit of %d bytes", s.cfg.MaxBody)}
		}
		return badField("body", "cannot read the request: %v", err)
	}
	return decodeJSON(buf.Bytes(), v)
}

// bodyBuffers holds request body buffers of up to maxPooledBody bytes.
var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

const maxPooledBody = 1 << 20

// growAhead is how much of a declared Content-Length a request buffer is
// grown by before any byte arrives.
const growAhead = 256 << 10

// decodeJSON unmarshals one JSON document, naming the field at fault.
func decodeJSON(body []byte, v any) *apiError {
	err := jsonv2.Unmarshal(body, v)
	if err == nil {
		return nil
	}
	var sem *jsonv2.SemanticError
	var syn *jsontext.SyntacticError
	switch {
	case errors.As(err, &syn) && strings.Contains(syn.Error(), "after top-level value"):
		return badField("body", "malformed JSON: data after the document")
	case errors.As(err, &syn):
		return badField("body", "malformed JSON at byte %d: %v", syn.ByteOffset, syn.Err)
	case errors.As(err, &sem) && sem.JSONPointer != "":
		field := strings.ReplaceAll(strings.TrimPrefix(string(sem.JSONPointer), "/"), "/", ".")
		if sem.Err != nil && sem.GoType != nil {
			return badField(field, "not a valid %v: %v", sem.GoType, sem.Err)
		}
		if sem.GoType != nil && sem.JSONKind != 0 {
			return badField(field, "want a JSON %v, got %s", sem.GoType, kindName(sem.JSONKind))
		}
		return badField(field, "%v", sem.Err)
	default:
		return badField("body", "malformed JSON: %v", err)
	}
}

// kindName names a JSON kind as encoding/json's errors do.
func kindName(k jsontext.Kind) string {
	switch k {
	case 'n':
		return "null"
	case 'f', 't':
		return "bool"
	case '"':
		return "string"
	case '0':
		return "number"
	case '{':
		return "object"
	case '[':
		return "array"
	}
	return k.String()
}

func (s *Service) refuse(w http.ResponseWriter, e *apiError) {
	if e.status >= 500 {
		s.metrics.appraisals.WithLabelValues("error").Inc()
	} else {
		s.metrics.appraisals.WithLabelValues(statusRefuse).Inc()
	}
	writeError(w, e)
}

// run checks the request's form, binding and nonce, appraises the evidence
// against every reference document and signs the result.
func (s *Service) run(ctx context.Context, a *appraisal, start time.Time) (*Outcome, *apiError) {
	if len(a.ev.Quote) == 0 {
		return nil, badField(a.fieldQuote, "missing: want the raw TDX quote (base64)")
	}
	rd, regs, err := quoteFields(a.ev.Quote)
	if err != nil {
		return nil, badField(a.fieldQuote, "%v (%d bytes): want a TDX quote version 4 as the agent returns it", err, len(a.ev.Quote))
	}
	n, err := nonce.Decode(a.nonceHex)
	if err != nil {
		return nil, badField(a.fieldNonce, "%v", err)
	}
	spki, err := hex.DecodeString(a.spkiHex)
	if err != nil || len(spki) != 32 {
		return nil, badField(a.fieldSPKI, "want 64 hex digits (SHA-256 of the agent's TLS SubjectPublicKeyInfo)")
	}
	want, err := attestation.ReportData(n, [32]byte(spki))
	if err != nil {
		return nil, badField(a.fieldNonce, "%v", err)
	}
	if hex.EncodeToString(rd) != hex.EncodeToString(want[:]) {
		return nil, badField(a.fieldRD, "the quote's REPORTDATA does not bind %s and %s (want %s = %s): evidence for another nonce or TLS key", a.fieldNonce, a.fieldSPKI, attestation.Scheme, hex.EncodeToString(want[:8])+"…")
	}
	if a.simulatedClaim && !s.cfg.AllowSimulated {
		return nil, &apiError{status: http.StatusForbidden, field: a.fieldQuote, msg: "a simulated quote (TDX simulator): this service runs without --allow-simulated and accepts quotes from TDX hardware only"}
	}
	if err := s.cfg.Nonces.Check(n); err != nil {
		return nil, badField(a.fieldNonce, "%v", err)
	}

	pol := policy{
		allowSimulated: s.cfg.AllowSimulated, simRoots: s.cfg.SimRoots,
		getter: s.getter(), now: s.now(), nonce: n, spkiHash: [32]byte(spki),
		acceptUnpinned: s.cfg.AcceptUnpinned,
	}
	r, ref, e := s.match(ctx, a, pol)
	if e != nil {
		return nil, e
	}
	if r.ErrorKind == verify.ErrNetwork {
		return nil, &apiError{status: http.StatusServiceUnavailable, field: "collateral", msg: "Intel PCS collateral could not be fetched: " + reason(r, verify.CheckAuthenticity) + "; try again later (see /readyz)"}
	}
	for _, c := range r.Checks {
		if c.Name == verify.CheckAuthenticity && errors.Is(c.Cause, verify.ErrSimulated) {
			return nil, &apiError{status: http.StatusForbidden, field: a.fieldQuote, msg: "a simulated quote (signed by the simulator root): this service runs without --allow-simulated"}
		}
	}
	if r.ErrorKind == verify.ErrInput {
		return nil, badField(a.fieldQuote, "unusable evidence: %s", firstFailure(r))
	}
	in := result.Input{Nonce: n, SPKIHash: a.spkiHex, ReportData: hex.EncodeToString(rd), VerifierBuild: s.cfg.VerifierBuild, Registers: map[string]string{}}
	if ref != nil {
		in.PolicyID = ref.id
	}
	for k, v := range regs {
		in.Registers[k] = hex.EncodeToString(v)
	}
	ar, err := result.New(r, in, pol.now)
	if err != nil {
		return nil, &apiError{status: http.StatusServiceUnavailable, msg: "building the result: " + err.Error()}
	}
	tok, exp, err := s.cfg.Keys.Sign(ar)
	if err != nil {
		return nil, &apiError{status: http.StatusServiceUnavailable, msg: "signing the result: " + err.Error()}
	}
	status := ear.TrustTierToString[*ar.Submods[result.Submod].Status]
	s.metrics.appraisals.WithLabelValues(status).Inc()
	s.metrics.latency.Observe(time.Since(start).Seconds())
	return &Outcome{Token: string(tok), Status: status, PolicyID: in.PolicyID, Expires: exp, Report: r}, nil
}

// getter is the collateral source for one appraisal: the bundle, or a
// view of the cache (which reports its network failures to verify).
func (s *Service) getter() trust.HTTPSGetter {
	if s.cfg.Collateral != nil {
		return s.cfg.Collateral
	}
	return s.cfg.Cache.View()
}

// collateralFetched is when the oldest collateral in use was fetched.
func (s *Service) collateralFetched() (time.Time, bool) {
	if b := s.cfg.Collateral; b != nil {
		t, err := time.Parse(time.RFC3339, b.Index.FetchedAt)
		return t, err == nil
	}
	return s.cfg.Cache.OldestFetch()
}

// collateralErrors counts failed PCS fetches (none with a bundle).
func (s *Service) collateralErrors() float64 {
	if s.cfg.Cache == nil {
		return 0
	}
	return float64(s.cfg.Cache.FetchErrors())
}

// collateralStatus is /readyz's collateral section; ready is false only
// while the PCS is unreachable and no cached TCB info is still valid (no
// real-TDX quote can be appraised then).
func (s *Service) collateralStatus() (body any, ready bool) {
	if b := s.cfg.Collateral; b != nil {
		return map[string]string{"source": b.Dir, "fmspc": b.Index.FMSPC, "fetched_at": b.Index.FetchedAt}, true
	}
	st := s.cfg.Cache.Status()
	ready = true
	if st.Outage != nil {
		ready = false
		for _, e := range st.Entries {
			if e.Kind == "tcb-info" && !e.Expired {
				ready = true
			}
		}
	}
	return map[string]any{"source": "Intel PCS online, cached per FMSPC until nextUpdate", "cache": st}, ready
}

// match appraises the evidence against every reference document (those
// named in a.policyIDs, if any) and returns the first that trusts it, or,
// when none does, the most telling failure: a revoked match, else the
// document of the image the agent claims to run, else the one with the
// fewest failed checks.
func (s *Service) match(ctx context.Context, a *appraisal, p policy) (*verify.Report, *refDoc, *apiError) {
	rs := s.refs.Load()
	// The documents of the image the agent claims to run go first (the
	// claim is untrusted: it only orders the search).
	var docs, rest []*refDoc
	for _, d := range rs.docs {
		switch {
		case len(a.policyIDs) > 0 && !contains(a.policyIDs, d.id):
		case d.doc.Image.Name == a.image.Name && d.doc.Image.Version == a.image.Version:
			docs = append(docs, d)
		default:
			rest = append(rest, d)
		}
	}
	docs = append(docs, rest...)
	if len(docs) == 0 {
		if len(a.policyIDs) > 0 {
			return nil, nil, badField("policy_ids", "%q name no reference document of this service", a.policyIDs)
		}
		return nil, nil, &apiError{status: http.StatusServiceUnavailable, field: "reference", msg: "the service has no usable reference document (see /readyz)"}
	}
	var best *verify.Report
	var bestRef *refDoc
	score := func(r *verify.Report, d *refDoc) int {
		n := 0
		for _, c := range r.Checks {
			if c.Status == verify.Fail {
				n++
			}
		}
		if d.doc.Image.Name == a.image.Name && d.doc.Image.Version == a.image.Version {
			n -= 1000
		}
		return n
	}
	// The quote is parsed and its signatures, collateral and binding are
	// checked once; each document then checks registers, logs and policy.
	cq := checkQuote(ctx, a.ev, p)
	for _, d := range docs {
		r := appraise(cq, d, p)
		if r.ErrorKind != "" {
			return r, d, nil // the evidence or the network failed, not the match
		}
		if r.Trusted && d.revoked == "" {
			return r, d, nil
		}
		if r.Trusted {
			r.Checks = append(r.Checks, verify.Check{Name: result.CheckRevoked, Status: verify.Fail, Reason: fmt.Sprintf("the matching reference %s (%s %s) is revoked: %s", d.id, d.doc.Image.Name, d.doc.Image.Version, d.revoked)})
			r.Trusted, r.Verdict = false, verify.VerdictNotTrusted
			best, bestRef = r, d
			continue
		}
		if best == nil || (!best.Failed(result.CheckRevoked) && score(r, d) < score(best, bestRef)) {
			best, bestRef = r, d
		}
	}
	return best, bestRef, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func reason(r *verify.Report, name string) string {
	for _, c := range r.Checks {
		if c.Name == name {
			return c.Reason
		}
	}
	return firstFailure(r)
}

func firstFailure(r *verify.Report) string {
	for _, c := range r.Checks {
		if c.Status == verify.Fail {
			return c.Name + ": " + c.Reason
		}
	}
	return r.Verdict
}
