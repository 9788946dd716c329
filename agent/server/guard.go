package server

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/netutil"
)

// Defaults for the request limits in Config.
const (
	// DefaultBodyTimeout bounds the time a client has to send a request
	// body (and the headers of the next keep-alive request start afresh).
	DefaultBodyTimeout = 30 * time.Second
	// DefaultQuoteRate and DefaultQuoteBurst bound unauthenticated quoting
	// (/v1/attestation and /api/v1/tee/quote together): quotes per second
	// and the burst allowed after a quiet period.
	DefaultQuoteRate  = 5.0
	DefaultQuoteBurst = 32
	// DefaultQuoteProbeTTL is how long /readyz trusts the last quote
	// outcome before it takes a probe quote of its own.
	DefaultQuoteProbeTTL = 30 * time.Second
	// MaxConns caps the agent's concurrent client connections per
	// listener (LimitListener); further clients wait in the accept queue.
	MaxConns = 256
)

// LimitListener caps ln at n concurrent connections.
func LimitListener(ln net.Listener, n int) net.Listener { return netutil.LimitListener(ln, n) }

// checkTarget refuses, before routing, request targets that could mean
// one path to the agent and another to Ollama: CONNECT, encoded slashes or
// backslashes, dot segments, empty segments and control characters. What
// passes is a clean absolute path, which the proxy forwards re-encoded
// from its decoded form (see newProxy).
func checkTarget(r *http.Request) (int, string) {
	if r.Method == http.MethodConnect {
		return http.StatusMethodNotAllowed, "CONNECT is not supported: the agent is not a forward proxy; send an ordinary request such as GET /v1/attestation?nonce=<hex>"
	}
	p := r.URL.Path
	if !strings.HasPrefix(p, "/") {
		return http.StatusBadRequest, fmt.Sprintf("request target %q is not an absolute path", r.RequestURI)
	}
	esc := strings.ToLower(r.URL.EscapedPath())
	if strings.Contains(esc, "%2f") || strings.Contains(esc, "%5c") || strings.Contains(p, `\`) {
		return http.StatusBadRequest, fmt.Sprintf("request path %q contains an encoded slash or a backslash; send the path unencoded", r.RequestURI)
	}
	for _, c := range p {
		if c < 0x20 || c == 0x7f {
			return http.StatusBadRequest, fmt.Sprintf("request path %q contains a control character", r.RequestURI)
		}
	}
	for i, seg := range strings.Split(p[1:], "/") {
		switch {
		case seg == "." || seg == "..":
			return http.StatusBadRequest, fmt.Sprintf("request path %q contains a dot segment; send the resolved path", r.RequestURI)
		case seg == "" && i < strings.Count(p, "/")-1:
			return http.StatusBadRequest, fmt.Sprintf("request path %q contains an empty segment (//); send the path without it", r.RequestURI)
		}
	}
	return 0, ""
}

// allow answers 405 with an Allow header to methods other than those
// listed (HEAD goes with GET).
func allow(h http.Handler, methods ...string) http.Handler {
	allowed := strings.Join(methods, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, m := range methods {
			if r.Method == m {
				h.ServeHTTP(w, r)
				return
			}
		}
		w.Header().Set("Allow", allowed)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s: use %s", r.Method, r.URL.Path, allowed))
	})
}

// readBody reads the whole request body within the body deadline and at
// most maxBody bytes. On failure it has answered the client (408, 413 or
// 400) and returns false; the connection then closes, since its read
// deadline stays in the past.
func readBody(w http.ResponseWriter, r *http.Request, maxBody int64, timeout time.Duration) ([]byte, bool) {
	if r.ContentLength > maxBody {
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is %d bytes; the limit is %d", r.ContentLength, maxBody))
		return nil, false
	}
	rc := http.NewResponseController(w)
	deadline := time.Now().Add(timeout)
	_ = rc.SetReadDeadline(deadline) // not supported by test recorders
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err == nil {
		_ = rc.SetReadDeadline(time.Time{}) // streams may run for minutes
		return body, true
	}
	w.Header().Set("Connection", "close")
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", mbe.Limit))
	case errors.As(err, &ne) && ne.Timeout() || time.Now().After(deadline):
		writeError(w, http.StatusRequestTimeout, fmt.Sprintf("request body not received within %v; send the whole body at once", timeout))
	default:
		writeError(w, http.StatusBadRequest, "reading the request body: "+err.Error())
	}
	return nil, false
}

// bucket is a token bucket: rate tokens per second, at most burst.
type bucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newBucket(rate float64, burst int) *bucket {
	return &bucket{rate: rate, burst: float64(burst), tokens: float64(burst)}
}

// take removes a token, or says how long until one is available.
func (b *bucket) take(now time.Time) (bool, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() {
		b.tokens = math.Min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}

// allowQuote takes a token from the shared quote bucket for a client's
// quote; when none is left it answers 429 with Retry-After and returns false.
func (s *Server) allowQuote(w http.ResponseWriter) bool {
	if s.quotes == nil {
		return true
	}
	ok, wait := s.quotes.take(s.cfg.Now())
	if ok {
		return true
	}
	secs := int(math.Ceil(wait.Seconds()))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeError(w, http.StatusTooManyRequests, fmt.Sprintf(
		"too many quote requests (limit %g per second, burst %d): retry after %d s (Retry-After)", s.cfg.QuoteRate, s.cfg.QuoteBurst, secs))
	return false
}
