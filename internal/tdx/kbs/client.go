package kbs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/go-jose/go-jose/v4"

	"github.com/tdforge/tdforge/internal/inputs/secret"
)

// maxResponse bounds every answer of the broker.
const maxResponse = 1 << 20

// Client fetches resources from a key broker as an attested TD. It does not
// retry: the caller retries with backoff.
type Client struct {
	URL string // broker base URL, e.g. https://10.0.2.2:8444
	// CASHA256 pins the broker: the SHA-256 of its certificate (DER) or of
	// a CA certificate its chain verifies to.
	CASHA256 [32]byte
	// Quote quotes the TD with this REPORTDATA.
	Quote func(reportData [64]byte) ([]byte, error)
	// Extra gives the evidence sent beside the quote (nil: none).
	Extra func() (runtimeLog, ccel, ccelTable []byte, ccelAbsent string)
	// HTTP is optional (timeouts); its transport, if any, must be an
	// *http.Transport, whose TLS settings are replaced by the pinned ones.
	HTTP *http.Client
}

// RefusedError is the broker's refusal, with its reason verbatim.
type RefusedError struct {
	Status int
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("broker refused (HTTP %d): %s", e.Status, e.Reason)
}

// Summary is a short account of the refusal for a status line, e.g.
// "RTMR2 mismatch" for "RTMR2: the quote's RTMR2 is …"; otherwise the
// reason up to its first ": " or " (", at most 100 bytes.
func (e *RefusedError) Summary() string {
	head, _, _ := strings.Cut(e.Reason, ": ")
	head, _, _ = strings.Cut(head, " (")
	switch head {
	case "MRTD", "RTMR0", "RTMR1", "RTMR2", "RTMR3":
		return head + " mismatch"
	}
	if len(head) > 100 {
		head = head[:100] + "…"
	}
	return head
}

// ErrPinMismatch: no certificate of the broker matches the pin.
var ErrPinMismatch = errors.New("the broker's certificate does not match the pinned ca_sha256")

// TransportError is a failure to reach the broker over pinned TLS (a pin
// mismatch wraps ErrPinMismatch). Nothing was said to or by the broker.
type TransportError struct {
	URL string
	Pin string // hex
	Err error
}

func (e *TransportError) Error() string {
	return fmt.Sprintf("key broker %s (pinned ca_sha256 %s): %v", e.URL, e.Pin, e.Err)
}

func (e *TransportError) Unwrap() error { return e.Err }

// Fetch runs RCAR and returns resource id ("<repo>/<type>/<tag>")
// decrypted with a fresh ephemeral key.
func (c *Client) Fetch(ctx context.Context, id string) ([]byte, error) {
	if err := secret.CheckID(id); err != nil {
		return nil, err
	}
	if c.Quote == nil {
		return nil, errors.New("kbs client: no Quote function")
	}
	if c.CASHA256 == ([32]byte{}) {
		return nil, errors.New("kbs client: no ca_sha256 pin: the broker cannot be authenticated")
	}
	base, err := url.Parse(strings.TrimRight(c.URL, "/"))
	if err != nil || base.Scheme != "https" || base.Host == "" {
		return nil, fmt.Errorf("key broker URL %q: want https://HOST[:PORT]", c.URL)
	}
	hc, err := c.httpClient(base.Hostname())
	if err != nil {
		return nil, err
	}
	s := &session{c: c, hc: hc, base: base.String()}

	// Request -> Challenge.
	extra, _ := json.Marshal(map[string]any{"supported-hash-algorithms": []string{"sha256", "sha384", "sha512"}})
	var ch Challenge
	if err := s.do(ctx, http.MethodPost, PathAuth, Request{Version: Version, TEE: TEE, ExtraParams: extra}, &ch); err != nil {
		return nil, err
	}
	if ch.Nonce == "" {
		return nil, fmt.Errorf("key broker %s: the challenge has no nonce", s.base)
	}
	if s.cookie == "" {
		return nil, fmt.Errorf("key broker %s: the challenge set no %s cookie", s.base, Cookie)
	}

	// Attestation: a fresh key, bound into REPORTDATA with the nonce.
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	rd := RuntimeData{Nonce: ch.Nonce, TEEPubKey: ecJWK(&priv.PublicKey)}
	reportData, err := ReportData(rd, "", SelectedHash(ch.ExtraParams))
	if err != nil {
		return nil, fmt.Errorf("key broker %s: %v", s.base, err)
	}
	q, err := c.Quote(reportData)
	if err != nil {
		return nil, fmt.Errorf("quoting for the key broker: %w", err)
	}
	ev := TDXEvidence{Quote: q}
	if c.Extra != nil {
		ev.RuntimeLog, ev.CCEventLog, ev.CCELTable, ev.CCELAbsent = c.Extra()
	}
	primary, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	var tok Token
	if err := s.do(ctx, http.MethodPost, PathAttest, Attestation{RuntimeData: rd, TEEEvidence: CompositeEvidence{PrimaryEvidence: primary}}, &tok); err != nil {
		return nil, err
	}

	// Response: the resource as a JWE to the ephemeral key.
	var raw json.RawMessage
	if err := s.do(ctx, http.MethodGet, PathResource+id, nil, &raw); err != nil {
		return nil, err
	}
	jwe, err := jose.ParseEncryptedJSON(string(raw), []jose.KeyAlgorithm{jose.ECDH_ES_A256KW}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return nil, fmt.Errorf("key broker %s: resource %s: not a JWE (%s, %s): %v", s.base, id, KeyAlg, ContentEnc, err)
	}
	plain, err := jwe.Decrypt(priv)
	if err != nil {
		return nil, fmt.Errorf("key broker %s: resource %s: the JWE does not decrypt with this session's key: %v", s.base, id, err)
	}
	return plain, nil
}

func ecJWK(k *ecdsa.PublicKey) JWK {
	b, _ := k.Bytes() // uncompressed: 0x04 || X || Y
	n := (len(b) - 1) / 2
	enc := base64.RawURLEncoding.EncodeToString
	return JWK{Kty: "EC", Crv: k.Curve.Params().Name, Alg: KeyAlg, X: enc(b[1 : 1+n]), Y: enc(b[1+n:])}
}

// httpClient is c.HTTP (or a new client) on a transport that accepts only
// a broker matching the pin.
func (c *Client) httpClient(host string) (*http.Client, error) {
	hc := &http.Client{}
	if c.HTTP != nil {
		*hc = *c.HTTP
	}
	var tr *http.Transport
	switch t := hc.Transport.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		tr = t.Clone()
	default:
		return nil, fmt.Errorf("kbs client: HTTP.Transport is a %T; give an *http.Transport (its TLS settings are replaced by the pin)", t)
	}
	pin := c.CASHA256
	tr.TLSClientConfig = &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The chain is checked against the pin below, not system roots.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPin(cs.PeerCertificates, pin, host)
		},
	}
	tr.Proxy = nil
	hc.Transport = tr
	hc.Jar = nil
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return hc, nil
}

// verifyPin accepts a leaf whose DER hashes to pin, or a chain that
// verifies (server auth, for host) to a presented CA certificate whose DER
// hashes to pin. A CA's presence alone proves nothing: anyone can send it.
func verifyPin(certs []*x509.Certificate, pin [32]byte, host string) error {
	if len(certs) == 0 {
		return ErrPinMismatch
	}
	if sha256.Sum256(certs[0].Raw) == pin {
		return nil
	}
	for _, ca := range certs[1:] {
		if sha256.Sum256(ca.Raw) != pin {
			continue
		}
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		roots.AddCert(ca)
		for _, x := range certs[1:] {
			inter.AddCert(x)
		}
		if ip := net.ParseIP(host); ip != nil {
			host = ip.String()
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return fmt.Errorf("%w: the pinned CA is presented but the certificate does not verify to it: %v", ErrPinMismatch, err)
		}
		return nil
	}
	leaf := sha256.Sum256(certs[0].Raw)
	return fmt.Errorf("%w (the broker presented %s…)", ErrPinMismatch, hex.EncodeToString(leaf[:8]))
}

// session is one RCAR exchange: its cookie.
type session struct {
	c      *Client
	hc     *http.Client
	base   string
	cookie string
}

// do sends body (JSON; nil: none) and decodes a 200 answer into out; any
// other status is a *RefusedError with the broker's detail.
func (s *session) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if s.cookie != "" {
		req.AddCookie(&http.Cookie{Name: Cookie, Value: s.cookie})
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &TransportError{URL: s.base, Pin: hex.EncodeToString(s.c.CASHA256[:]), Err: err}
	}
	defer resp.Body.Close()
	for _, ck := range resp.Cookies() {
		if ck.Name == Cookie && ck.Value != "" {
			s.cookie = ck.Value
		}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return &TransportError{URL: s.base, Pin: hex.EncodeToString(s.c.CASHA256[:]), Err: err}
	}
	if len(b) > maxResponse {
		return fmt.Errorf("key broker %s%s: answer larger than %d bytes", s.base, path, maxResponse)
	}
	if resp.StatusCode != http.StatusOK {
		var ei ErrorInfo
		reason := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &ei) == nil && ei.Detail != "" {
			reason = ei.Detail
		}
		if reason == "" {
			reason = http.StatusText(resp.StatusCode)
		}
		return &RefusedError{Status: resp.StatusCode, Reason: reason}
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("key broker %s%s: malformed answer: %v", s.base, path, err)
	}
	return nil
}
