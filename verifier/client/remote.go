package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/veraison/ear"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/verifier/result"
	"github.com/tdforge/tdforge/verifier/verify"
)

// Paths of the attestation service (`verifier serve`) that clients use.
const (
	servicePathNonce  = "/v1/nonce"
	servicePathAttest = "/v1/attest"
	servicePathJWKS   = "/.well-known/jwks.json"
)

// CheckConnBinding is the check the client adds to a service's verdict: the
// service cannot see the agent's TLS connection, so only the client can
// check that REPORTDATA binds the key of the connection it pinned.
const CheckConnBinding = "TLS key of this connection"

// ServiceError is a request the attestation service refused (a 4xx with a
// JSON error naming the field): no verdict was signed.
type ServiceError struct {
	Status int
	Field  string
	Msg    string
}

func (e *ServiceError) Error() string {
	return fmt.Sprintf("the attestation service refused the evidence (HTTP %d): %s", e.Status, e.Msg)
}

// RemoteService appraises evidence through an attestation service
// (`verifier serve`) instead of in-process: nonce from the service, the
// agent's document posted unchanged, the signed EAR result checked against
// the service's JWKS and its nonce, and the TLS key binding checked
// locally.
type RemoteService struct {
	URL  *url.URL
	HTTP *http.Client
}

// NewRemoteService returns a client of the service at rawURL. The service
// is trusted through roots (nil: the system roots); plain http is allowed
// only to a loopback address (tests, demos), since a result fetched in the
// clear could be anyone's.
func NewRemoteService(rawURL string, roots *x509.CertPool) (*RemoteService, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("attestation service URL %q: %v", rawURL, err)
	}
	if u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, fmt.Errorf("attestation service URL %q: want the service's base URL, https://HOST[:PORT]", rawURL)
	}
	if !AllowedServiceURL(u) {
		return nil, fmt.Errorf("attestation service URL %q: want an https:// URL (plain http only to a loopback address)", rawURL)
	}
	u.Path = ""
	return newRemote(u, roots), nil
}

func newRemote(u *url.URL, roots *x509.CertPool) *RemoteService {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	return &RemoteService{URL: u, HTTP: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
}

// AllowedServiceURL reports whether a service's answers (results, key
// sets) may be fetched from u: over HTTPS, or plain HTTP to a loopback
// address only (anything fetched in the clear could be anyone's).
func AllowedServiceURL(u *url.URL) bool {
	ip := net.ParseIP(u.Hostname())
	return u.Scheme == "https" || (u.Scheme == "http" && (u.Hostname() == "localhost" || (ip != nil && ip.IsLoopback())))
}

// FetchJWKS fetches a service's result-signing key set from its full URL
// (e.g. https://SERVICE/.well-known/jwks.json; see AllowedServiceURL),
// checking the server's certificate against roots (nil: the system
// roots). Transport failures and 5xx answers are a *NetworkError.
func FetchJWKS(ctx context.Context, rawURL string, roots *x509.CertPool) ([]byte, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Host == "" || !AllowedServiceURL(u) {
		return nil, errors.New("want an https:// URL (plain http only to a loopback address)")
	}
	b, err := newRemote(u, roots).doURL(ctx, http.MethodGet, u, u.Path, nil)
	if err != nil {
		return nil, err
	}
	if !json.Valid(b) {
		return nil, errors.New("not JSON")
	}
	return b, nil
}

// ServiceResult is what the client verified of a service's answer.
type ServiceResult struct {
	// Token is the signed EAR attestation result (compact JWS).
	Token  string
	Claims *result.Claims
	// Status is the signed ear.status of the tdx submod.
	Status   ear.TrustTier
	PolicyID string
}

// StatusName is the status as EAR spells it (affirming, warning,
// contraindicated).
func (r *ServiceResult) StatusName() string { return ear.TrustTierToString[r.Status] }

func (s *RemoteService) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	return s.doURL(ctx, method, s.URL.JoinPath(path), path, body)
}

// doURL sends a request to u; path names it in errors.
func (s *RemoteService) doURL(ctx context.Context, method string, u *url.URL, path string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return nil, &NetworkError{Err: err, Service: true}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, &NetworkError{Err: fmt.Errorf("%s %s: %v", method, path, err), Service: true}
	}
	if len(raw) > maxResponse {
		return nil, fmt.Errorf("attestation service: %s %s: answer exceeds %d bytes", method, path, maxResponse)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error, Field string }
		json.Unmarshal(raw, &e)
		if e.Error == "" {
			e.Error = strings.TrimSpace(string(raw[:min(len(raw), 512)]))
		}
		if resp.StatusCode >= 500 {
			return nil, &NetworkError{Err: fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, e.Error), Service: true}
		}
		return nil, &ServiceError{Status: resp.StatusCode, Field: e.Field, Msg: e.Error}
	}
	return raw, nil
}

// Nonce gets a fresh nonce from the service (GET /v1/nonce).
func (s *RemoteService) Nonce(ctx context.Context) ([]byte, error) {
	raw, err := s.do(ctx, http.MethodGet, servicePathNonce, nil)
	if err != nil {
		return nil, err
	}
	var out struct{ Nonce string }
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("attestation service: GET %s: not a nonce document: %v", servicePathNonce, err)
	}
	n, err := hex.DecodeString(out.Nonce)
	if err != nil || len(n) < attestation.MinNonce || len(n) > attestation.MaxNonce {
		return nil, fmt.Errorf("attestation service: GET %s: nonce %q is not %d..%d bytes of hex", servicePathNonce, out.Nonce, attestation.MinNonce, attestation.MaxNonce)
	}
	return n, nil
}

// JWKS fetches the service's result-signing keys.
func (s *RemoteService) JWKS(ctx context.Context) ([]byte, error) {
	return s.do(ctx, http.MethodGet, servicePathJWKS, nil)
}

// Appraise posts doc (the agent's /v1/attestation document, unchanged) and
// checks the answer: the token's signature, kid and expiry against the
// service's JWKS, its eat_nonce against nonce, and that the signed
// evidence binds spki, the TLS key of the connection doc came over (checked
// here: the service cannot see that connection). The returned report is
// the service's, whose verdict and checks must equal the signed ones, with
// the client's binding check added; it is trusted only when the signed
// status is affirming or warning and the binding holds.
func (s *RemoteService) Appraise(ctx context.Context, doc, nonce []byte, spki [32]byte) (*verify.Report, *ServiceResult, error) {
	raw, err := s.do(ctx, http.MethodPost, servicePathAttest, doc)
	if err != nil {
		return nil, nil, err
	}
	var out struct {
		Token    string         `json:"token"`
		PolicyID string         `json:"policy_id"`
		Report   *verify.Report `json:"report"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || out.Token == "" || out.Report == nil {
		return nil, nil, fmt.Errorf("attestation service: POST %s: not an attestation outcome (want token and report): %v", servicePathAttest, err)
	}
	jwks, err := s.JWKS(ctx)
	if err != nil {
		return nil, nil, err
	}
	claims, err := result.Verify([]byte(out.Token), jwks)
	if err != nil {
		return nil, nil, fmt.Errorf("the attestation service's result does not verify against its JWKS: %v", err)
	}
	got, err := claims.Nonce()
	if err != nil || !bytes.Equal(got, nonce) {
		return nil, nil, fmt.Errorf("the attestation service's result answers nonce %x, not ours (%x…): a replayed result", got, nonce[:8])
	}
	a := claims.TDX()
	if a.Status == nil {
		return nil, nil, errors.New("the attestation service's result has no ear.status")
	}
	sr := &ServiceResult{Token: out.Token, Claims: claims, Status: *a.Status}
	if a.AppraisalPolicyID != nil {
		sr.PolicyID = *a.AppraisalPolicyID
	}
	var ev map[string]any
	if a.VeraisonAnnotatedEvidence != nil {
		ev = *a.VeraisonAnnotatedEvidence
	}
	r := out.Report
	if err := sameAsSigned(r, ev); err != nil {
		return nil, nil, fmt.Errorf("the attestation service's report differs from its signed result: %v", err)
	}
	for i := range r.Checks {
		r.Checks[i].Cause = nil
	}
	if sr.Status == ear.TrustTierContraindicated {
		r.Trusted, r.Verdict = false, verify.VerdictNotTrusted
	}
	want, _ := attestation.ReportData(nonce, spki)
	switch {
	case ev["tls_spki_sha256"] != hex.EncodeToString(spki[:]):
		r.Checks = append(r.Checks, verify.Check{Name: CheckConnBinding, Status: verify.Fail,
			Reason: fmt.Sprintf("the service appraised evidence for TLS key %v, but this connection's key is %x: a man in the middle, or evidence from another TD", ev["tls_spki_sha256"], spki)})
		r.Trusted, r.Verdict = false, verify.VerdictNotTrusted
	case ev["report_data"] != hex.EncodeToString(want[:]):
		r.Checks = append(r.Checks, verify.Check{Name: CheckConnBinding, Status: verify.Fail,
			Reason: "the signed REPORTDATA does not bind our nonce and this connection's TLS key"})
		r.Trusted, r.Verdict = false, verify.VerdictNotTrusted
	default:
		r.Checks = append(r.Checks, verify.Check{Name: CheckConnBinding, Status: verify.Pass,
			Reason: fmt.Sprintf("the signed REPORTDATA binds our nonce and this connection's TLS key (SPKI sha256 %x…)", spki[:8])})
	}
	return r, sr, nil
}

// sameAsSigned checks that the unsigned report r says what the signed
// annotated evidence ev says: the same verdict line (Headline, which names
// accepted unpinned registers), simulation flag, accepted unpinned
// registers and checks.
func sameAsSigned(r *verify.Report, ev map[string]any) error {
	if v, _ := ev["verdict"].(string); v != r.Headline() {
		return fmt.Errorf("verdict %q, signed %q", r.Headline(), v)
	}
	if s, _ := ev["simulated"].(bool); s != r.Simulated {
		return fmt.Errorf("simulated %v, signed %v", r.Simulated, s)
	}
	un, _ := ev["accepted_unpinned"].(map[string]any)
	if len(un) != len(r.Unpinned) {
		return fmt.Errorf("accepted unpinned %v, signed %v", r.Unpinned, ev["accepted_unpinned"])
	}
	for _, k := range r.Unpinned {
		if _, ok := un[k]; !ok {
			return fmt.Errorf("accepted unpinned %v, signed %v", r.Unpinned, ev["accepted_unpinned"])
		}
	}
	signed, _ := ev["checks"].([]any)
	if len(signed) != len(r.Checks) {
		return fmt.Errorf("%d checks, %d signed", len(r.Checks), len(signed))
	}
	for i, x := range signed {
		m, _ := x.(map[string]any)
		c := r.Checks[i]
		if m["name"] != c.Name || m["status"] != string(c.Status) || m["reason"] != c.Reason {
			return fmt.Errorf("check %q %s, signed %v %v", c.Name, c.Status, m["name"], m["status"])
		}
	}
	return nil
}
