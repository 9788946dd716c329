// Package client attests a tdforge agent over the very TLS connection it
// then uses: it captures the server certificate's SubjectPublicKeyInfo from
// the handshake (the CA system is not used; the quote is the identity),
// fetches /v1/attestation with a fresh nonce on that connection, verifies
// the evidence with package verify and pins the key. Pinned is a dialer for
// http.Transport that attests every new connection before any request byte
// is sent on it; Proxy is a local attested reverse proxy built on it.
package client

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/verifier/verify"
)

// maxResponse bounds the attestation response (quote + logs).
const maxResponse = 32 << 20

// NetworkError is a failure to reach or talk to the agent (not a
// verification verdict).
// A NetworkError with Service set failed to reach the attestation service.
type NetworkError struct {
	Err     error
	Service bool
}

func (e *NetworkError) Error() string {
	if e.Service {
		return "cannot reach the attestation service: " + e.Err.Error()
	}
	return "cannot reach the agent: " + e.Err.Error()
}
func (e *NetworkError) Unwrap() error { return e.Err }

// AttestError is a connection that could not be attested (not trusted,
// key changed, protocol error); nothing may be sent on it.
type AttestError struct{ Err error }

func (e *AttestError) Error() string { return "attestation failed: " + e.Err.Error() }
func (e *AttestError) Unwrap() error { return e.Err }

// NotTrustedError carries a failed verification.
type NotTrustedError struct{ Result *Result }

func (e *NotTrustedError) Error() string {
	var reasons []string
	for _, c := range e.Result.Report.Checks {
		if c.Status == verify.Fail {
			reasons = append(reasons, c.Name+": "+c.Reason)
		}
	}
	if len(reasons) == 0 {
		reasons = append(reasons, "no authenticity check passed")
	}
	return "agent is NOT TRUSTED: " + strings.Join(reasons, "; ")
}

// Result is one attestation of one connection.
type Result struct {
	Report   *verify.Report
	SPKIHash [32]byte
	Response *attestation.Response
	// Service is the attestation service's signed result, when the
	// connection was appraised through one (Config.Service).
	Service *ServiceResult
}

// Config configures attestation. Options.Nonce and Options.SPKIHash are set
// per connection.
type Config struct {
	Options verify.Options
	// Timeout bounds dialing plus the attestation exchange (default 60 s).
	Timeout time.Duration
	// Service, when set, appraises every connection through that
	// attestation service (its nonce, its signed verdict, the key binding
	// checked here) instead of in-process; Options are then unused.
	Service *RemoteService
}

func (c *Config) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return 60 * time.Second
}

// hostPort validates an agent base URL and returns host:port.
func hostPort(u *url.URL) (string, error) {
	if u.Scheme != "https" {
		return "", fmt.Errorf("agent URL %q: scheme must be https (the quote is bound to the TLS key)", u.String())
	}
	if u.Host == "" {
		return "", fmt.Errorf("agent URL %q has no host", u.String())
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "443"), nil
	}
	return u.Host, nil
}

// ParseURL parses and checks an agent base URL.
func ParseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("agent URL %q: %v", s, err)
	}
	if _, err := hostPort(u); err != nil {
		return nil, err
	}
	return u, nil
}

// dialTLS opens a TLS connection without CA verification; the caller
// attests it.
func dialTLS(ctx context.Context, addr, serverName string) (*tls.Conn, error) {
	d := &tls.Dialer{Config: &tls.Config{
		InsecureSkipVerify: true, // identity comes from the attested SPKI, checked before use
		ServerName:         serverName,
		NextProtos:         []string{"http/1.1"},
		MinVersion:         tls.VersionTLS12,
	}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &NetworkError{Err: err}
	}
	return c.(*tls.Conn), nil
}

// spkiOf returns the SHA-256 of the peer certificate's SPKI.
func spkiOf(c *tls.Conn) ([32]byte, error) {
	st := c.ConnectionState()
	if len(st.PeerCertificates) == 0 {
		return [32]byte{}, errors.New("the agent presented no TLS certificate")
	}
	return attestation.SPKIHash(st.PeerCertificates[0].RawSubjectPublicKeyInfo), nil
}

// bufConn is a connection whose first bytes were read into a buffer.
type bufConn struct {
	*tls.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// attestConn runs the attestation exchange on conn. On success the
// returned connection (sharing conn) is ready for further requests.
func attestConn(ctx context.Context, conn *tls.Conn, host string, cfg Config) (*Result, net.Conn, error) {
	spki, err := spkiOf(conn)
	if err != nil {
		return nil, nil, err
	}
	var nonce []byte
	if cfg.Service != nil {
		if nonce, err = cfg.Service.Nonce(ctx); err != nil {
			return nil, nil, err
		}
	} else {
		nonce = make([]byte, 32)
		if _, err := rand.Read(nonce); err != nil {
			return nil, nil, err
		}
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(cfg.timeout()))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+attestation.PathAttestation+"?nonce="+hex.EncodeToString(nonce), nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/json")
	if err := req.Write(conn); err != nil {
		return nil, nil, &NetworkError{Err: err}
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, nil, &NetworkError{Err: fmt.Errorf("reading the attestation response: %w", err)}
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	resp.Body.Close()
	if err != nil {
		return nil, nil, &NetworkError{Err: fmt.Errorf("reading the attestation response: %w", err)}
	}
	if len(raw) > maxResponse {
		return nil, nil, fmt.Errorf("attestation response exceeds %d bytes", maxResponse)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("agent answered %s %s: HTTP %d: %s", req.Method, attestation.PathAttestation, resp.StatusCode, strings.TrimSpace(string(raw[:min(len(raw), 512)])))
	}
	var ar attestation.Response
	if err := json.Unmarshal(raw, &ar); err != nil {
		return nil, nil, fmt.Errorf("attestation response is not valid JSON: %v", err)
	}
	res := &Result{SPKIHash: spki, Response: &ar}
	if cfg.Service != nil {
		if res.Report, res.Service, err = cfg.Service.Appraise(ctx, raw, nonce, spki); err != nil {
			return nil, nil, err
		}
	} else {
		opts := cfg.Options
		opts.Nonce = nonce
		opts.SPKIHash = &spki
		ev := verify.Evidence{Quote: ar.Quote, CCEL: ar.CCEL, CCELTable: ar.CCELTable, CCELAbsent: ar.CCELAbsent, RuntimeLog: ar.RuntimeLog, Claimed: &ar.ReportData}
		res.Report = verify.Verify(ctx, ev, opts)
	}
	conn.SetDeadline(time.Time{})
	if resp.Close {
		return res, nil, nil
	}
	return res, &bufConn{Conn: conn, r: br}, nil
}

// Attest connects to the agent at baseURL, attests the connection and
// closes it. The error is non-nil only when no verdict could be reached
// (a *NetworkError for transport failures); a NOT TRUSTED verdict is in the
// report.
func Attest(ctx context.Context, baseURL string, cfg Config) (*Result, error) {
	u, err := ParseURL(baseURL)
	if err != nil {
		return nil, err
	}
	addr, _ := hostPort(u)
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout())
	defer cancel()
	conn, err := dialTLS(ctx, addr, u.Hostname())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	res, _, err := attestConn(ctx, conn, u.Host, cfg)
	return res, err
}

// Pinned dials attested connections to one agent. The first trusted
// attestation pins the agent's TLS key for the session; every later
// connection must present that key and attest again before it is used.
type Pinned struct {
	URL *url.URL
	Cfg Config
	// OnAttest, when set, is called after every attestation.
	OnAttest func(*Result, error)

	mu  sync.Mutex
	pin *[32]byte
}

// NewPinned returns a dialer for the agent at baseURL.
func NewPinned(baseURL string, cfg Config) (*Pinned, error) {
	u, err := ParseURL(baseURL)
	if err != nil {
		return nil, err
	}
	return &Pinned{URL: u, Cfg: cfg}, nil
}

// Pin returns the pinned SPKI hash, if any.
func (p *Pinned) Pin() (spki [32]byte, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pin == nil {
		return spki, false
	}
	return *p.pin, true
}

// DialTLSContext implements http.Transport.DialTLSContext: it dials the
// agent (whatever addr the transport asks for), attests the connection and
// returns it only when the verdict is trusted and the key matches the pin.
func (p *Pinned) DialTLSContext(ctx context.Context, _, _ string) (net.Conn, error) {
	addr, _ := hostPort(p.URL)
	actx, cancel := context.WithTimeout(ctx, p.Cfg.timeout())
	defer cancel()
	conn, err := dialTLS(actx, addr, p.URL.Hostname())
	if err != nil {
		p.report(nil, err)
		return nil, err
	}
	res, c, err := p.attest(actx, conn)
	if err != nil && !errors.As(err, new(*NetworkError)) {
		err = &AttestError{err}
	}
	p.report(res, err)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func (p *Pinned) report(res *Result, err error) {
	if p.OnAttest != nil {
		p.OnAttest(res, err)
	}
}

func (p *Pinned) attest(ctx context.Context, conn *tls.Conn) (*Result, net.Conn, error) {
	spki, err := spkiOf(conn)
	if err != nil {
		return nil, nil, err
	}
	if pin, ok := p.Pin(); ok && pin != spki {
		return nil, nil, fmt.Errorf("the agent's TLS key changed (SPKI %x…, pinned %x…) since this session verified it; restart to attest the new key", spki[:8], pin[:8])
	}
	res, c, err := attestConn(ctx, conn, p.URL.Host, p.Cfg)
	if err != nil {
		return res, nil, err
	}
	if !res.Report.Trusted {
		return res, nil, &NotTrustedError{res}
	}
	if c == nil {
		return res, nil, errors.New("the agent closed the connection after attestation; cannot use an attested connection")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pin == nil {
		p.pin = &res.SPKIHash
	} else if *p.pin != res.SPKIHash {
		return res, nil, errors.New("the agent's TLS key changed during attestation")
	}
	return res, c, nil
}

// Transport returns an HTTP/1.1 transport whose every connection is
// attested by p.
func (p *Pinned) Transport() *http.Transport {
	return &http.Transport{
		DialTLSContext:        p.DialTLSContext,
		ForceAttemptHTTP2:     false,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // model responses may take long to start
		ExpectContinueTimeout: time.Second,
	}
}
