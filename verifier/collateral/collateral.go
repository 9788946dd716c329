// Package collateral provides the Intel PCS collateral go-tdx-guest needs to
// judge a quote's TCB status: an online getter with bounded timeouts that
// remembers network failures, and an offline bundle directory written by
// `verifier collateral fetch` and read back as a trust.HTTPSGetter.
//
// Bundle layout (DIR):
//
//	index.json          {"schema": "tdforge.collateral/v1", "fmspc", "ca",
//	                     "fetched_at", "entries": [{"url", "file", "header"}]}
//	tcb-info.json       TDX TCB info for the quote's FMSPC
//	qe-identity.json    TD QE identity
//	pck-crl.der         PCK CRL of the PCK certificate's issuing CA
//	root-ca-crl.der     Intel SGX Root CA CRL
//
// Each entry keeps the HTTP headers that carry the issuer chains.
package collateral

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tdforge/tdforge/internal/canonjson"

	"github.com/google/go-tdx-guest/pcs"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/verify"
	"github.com/google/go-tdx-guest/verify/trust"

	"github.com/tdforge/tdforge/internal/fsutil"
	"github.com/tdforge/tdforge/internal/tdx/quote"
)

// Schema identifies a bundle's index.json.
const Schema = "tdforge.collateral/v1"

// IndexFile is the bundle's index file name.
const IndexFile = "index.json"

// Index is the bundle's index.json.
type Index struct {
	Schema    string  `json:"schema"`
	FMSPC     string  `json:"fmspc"`
	CA        string  `json:"ca"`
	FetchedAt string  `json:"fetched_at"` // RFC 3339
	Entries   []Entry `json:"entries"`
}

// Entry is one recorded PCS response.
type Entry struct {
	URL    string              `json:"url"`
	File   string              `json:"file"`
	Header map[string][]string `json:"header,omitempty"`
}

// NetworkError marks a failure to reach the collateral service.
type NetworkError struct {
	URL string
	Err error
}

func (e *NetworkError) Error() string {
	return fmt.Sprintf("cannot fetch collateral %s: %v", e.URL, e.Err)
}

func (e *NetworkError) Unwrap() error { return e.Err }

// FailureReporter is a getter that remembers its first network failure
// (Online, CacheView): verify asks it after go-tdx-guest flattened the
// getter's error into a string.
type FailureReporter interface {
	Failure() *NetworkError
}

// Online fetches collateral over HTTPS with a bounded timeout and records
// the first network failure (go-tdx-guest flattens getter errors into
// strings, so callers ask Failure afterwards).
type Online struct {
	Client *http.Client

	mu   sync.Mutex
	fail *NetworkError
}

// NewOnline returns an online getter with a 20-second per-request timeout.
func NewOnline() *Online {
	return &Online{Client: &http.Client{Timeout: 20 * time.Second}}
}

// Get implements trust.HTTPSGetter.
func (o *Online) Get(url string) (map[string][]string, []byte, error) {
	resp, err := o.Client.Get(url)
	if err != nil {
		return nil, nil, o.record(url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, nil, o.record(url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, &StatusError{URL: url, Code: resp.StatusCode}
	}
	return resp.Header, body, nil
}

func (o *Online) record(url string, err error) error {
	ne := &NetworkError{URL: url, Err: err}
	o.mu.Lock()
	if o.fail == nil {
		o.fail = ne
	}
	o.mu.Unlock()
	return ne
}

// Failure returns the first network failure seen, or nil.
func (o *Online) Failure() *NetworkError {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.fail
}

// StatusError is an HTTP answer other than 200 from the collateral
// service. A 4xx is its definitive answer (e.g. no TCB info for an FMSPC,
// as for a forged PCK certificate), not an outage.
type StatusError struct {
	URL  string
	Code int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("collateral %s: HTTP status %d", e.URL, e.Code)
}

// Definitive reports whether the status is the service's answer (4xx)
// rather than its failure.
func (e *StatusError) Definitive() bool { return e.Code >= 400 && e.Code < 500 }

// MissingError is a collateral request an offline bundle has no response
// for: the bundle was fetched for another platform (FMSPC).
type MissingError struct {
	Dir, URL, FMSPC string
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("collateral bundle %s has no response for %s (it was fetched for FMSPC %s)", e.Dir, e.URL, e.FMSPC)
}

// Bundle is an offline collateral directory loaded into memory; it
// implements trust.HTTPSGetter and, like Online, remembers the first
// request it could not answer (go-tdx-guest flattens getter errors).
type Bundle struct {
	Dir   string
	Index Index
	resp  map[string]response

	mu      sync.Mutex
	missing *MissingError
}

type response struct {
	header map[string][]string
	body   []byte
}

// Open loads a bundle directory.
func Open(dir string) (*Bundle, error) {
	raw, err := os.ReadFile(filepath.Join(dir, IndexFile))
	if err != nil {
		return nil, fmt.Errorf("collateral bundle %s: %w", dir, err)
	}
	var idx Index
	if err := canonjson.Decode(bytes.NewReader(raw), &idx); err != nil {
		return nil, fmt.Errorf("collateral bundle %s: %s: %w", dir, IndexFile, err)
	}
	if idx.Schema != Schema {
		return nil, fmt.Errorf("collateral bundle %s: schema %q is not supported (want %q)", dir, idx.Schema, Schema)
	}
	b := &Bundle{Dir: dir, Index: idx, resp: map[string]response{}}
	for _, e := range idx.Entries {
		if e.File == "" || filepath.Base(e.File) != e.File {
			return nil, fmt.Errorf("collateral bundle %s: entry %s has bad file name %q", dir, e.URL, e.File)
		}
		body, err := os.ReadFile(filepath.Join(dir, e.File))
		if err != nil {
			return nil, fmt.Errorf("collateral bundle %s: %w", dir, err)
		}
		b.resp[e.URL] = response{header: e.Header, body: body}
	}
	return b, nil
}

// Get implements trust.HTTPSGetter from the bundle.
func (b *Bundle) Get(url string) (map[string][]string, []byte, error) {
	r, ok := b.resp[url]
	if !ok {
		e := &MissingError{Dir: b.Dir, URL: url, FMSPC: b.Index.FMSPC}
		b.mu.Lock()
		if b.missing == nil {
			b.missing = e
		}
		b.mu.Unlock()
		return nil, nil, e
	}
	return r.header, r.body, nil
}

// Missing returns the first request the bundle could not answer, or nil.
func (b *Bundle) Missing() *MissingError {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.missing
}

// recorder records every response a getter returns.
type recorder struct {
	g       trust.HTTPSGetter
	entries []Entry
	bodies  map[string][]byte
	err     error
}

func (r *recorder) Get(url string) (map[string][]string, []byte, error) {
	h, body, err := r.g.Get(url)
	if err != nil {
		if r.err == nil {
			r.err = err
		}
		return nil, nil, err
	}
	name := fileFor(url)
	if slices.ContainsFunc(r.entries, func(e Entry) bool { return e.File == name }) {
		name = fmt.Sprintf("entry-%d.bin", len(r.entries))
	}
	keep := map[string][]string{}
	for k, v := range h {
		if strings.HasSuffix(strings.ToLower(k), "issuer-chain") {
			keep[http.CanonicalHeaderKey(k)] = v
		}
	}
	if len(keep) == 0 {
		keep = nil
	}
	r.entries = append(r.entries, Entry{URL: url, File: name, Header: keep})
	r.bodies[name] = body
	return h, body, nil
}

func fileFor(url string) string {
	switch {
	case strings.Contains(url, "/tcb?"):
		return "tcb-info.json"
	case strings.Contains(url, "/qe/identity"):
		return "qe-identity.json"
	case strings.Contains(url, "/pckcrl"):
		return "pck-crl.der"
	case strings.HasSuffix(url, "RootCA.der") || strings.Contains(url, "crl"):
		return "root-ca-crl.der"
	}
	return "entry.bin"
}

// quoteFMSPC returns the FMSPC and the PCK issuing CA ("platform" or
// "processor") from a quote's PCK certificate.
func quoteFMSPC(q *pb.QuoteV4) (fmspc, ca string, err error) {
	chain := q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
	leaf, err := firstCert(chain)
	if err != nil {
		return "", "", err
	}
	ext, err := pcs.PckCertificateExtensions(leaf)
	if err != nil {
		return "", "", fmt.Errorf("quote: PCK certificate: %v", err)
	}
	switch {
	case strings.Contains(leaf.Issuer.CommonName, "Platform"):
		ca = "platform"
	case strings.Contains(leaf.Issuer.CommonName, "Processor"):
		ca = "processor"
	default:
		return "", "", fmt.Errorf("quote: PCK certificate issuer %q is neither the platform nor the processor CA", leaf.Issuer.CommonName)
	}
	return ext.FMSPC, ca, nil
}

// Fetch collects, through g, every PCS response needed to verify rawQuote
// (TCB info for its FMSPC, QE identity, PCK CRL, root CA CRL) by running
// go-tdx-guest's verification with revocation checks, and writes them as a
// bundle in dir. A verification failure that is not a fetch failure is
// returned as verifyErr with the bundle written.
func Fetch(rawQuote []byte, g trust.HTTPSGetter, dir string, now time.Time) (verifyErr error, err error) {
	q, err := quote.Parse(rawQuote)
	if err != nil {
		return nil, fmt.Errorf("quote: %w", err)
	}
	fmspc, ca, err := quoteFMSPC(q)
	if err != nil {
		return nil, err
	}
	rec := &recorder{g: g, bodies: map[string][]byte{}}
	verr := verify.TdxQuote(q, &verify.Options{GetCollateral: true, CheckRevocations: true, Getter: rec, Now: now, TrustedRoots: IntelRoots()})
	if rec.err != nil {
		var ne *NetworkError
		if errors.As(rec.err, &ne) {
			return nil, ne
		}
		return nil, fmt.Errorf("fetching collateral: %w", rec.err)
	}
	if len(rec.entries) == 0 {
		return nil, fmt.Errorf("fetching collateral: nothing was fetched: %v", verr)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for _, e := range rec.entries {
		if err := fsutil.WriteFile(filepath.Join(dir, e.File), rec.bodies[e.File], 0o644); err != nil {
			return nil, err
		}
	}
	idx := Index{Schema: Schema, FMSPC: fmspc, CA: ca, FetchedAt: now.UTC().Format(time.RFC3339), Entries: rec.entries}
	raw, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := fsutil.WriteFile(filepath.Join(dir, IndexFile), append(raw, '\n'), 0o644); err != nil {
		return nil, err
	}
	return verr, nil
}
