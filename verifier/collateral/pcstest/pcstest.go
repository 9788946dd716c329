// Package pcstest runs a local stand-in for Intel's PCS in tests: an
// httptest server answering go-tdx-guest's collateral URLs with the real
// sample collateral from go-tdx-guest's testdata, and a client transport
// that sends those URLs to it. It can be taken down to test outages.
package pcstest

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tt "github.com/google/go-tdx-guest/testing"

	"github.com/tdforge/tdforge/verifier/collateral"
)

// Server is the fake PCS.
type Server struct {
	*httptest.Server
	down     atomic.Bool
	requests atomic.Int64
	// Delay slows every answer (to make concurrent requests overlap).
	Delay time.Duration

	mu     sync.Mutex
	bodies map[string]tt.HTTPResponse
}

// New starts a fake PCS serving go-tdx-guest's sample collateral (for the
// FMSPC of testdata.RawQuote, valid on 2023-07-01); it stops with t.
func New(t testing.TB) *Server {
	s := &Server{bodies: map[string]tt.HTTPResponse{}}
	for u, r := range tt.TestGetter.Responses {
		s.bodies[key(u)] = r
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func key(u string) string {
	r, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		panic(err)
	}
	return r.URL.Host + r.URL.RequestURI()
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if s.Delay > 0 {
		time.Sleep(s.Delay)
	}
	if s.down.Load() {
		// An outage: the connection drops without an answer.
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				return
			}
		}
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	s.requests.Add(1)
	s.mu.Lock()
	resp, ok := s.bodies[r.Header.Get("X-Pcstest-Host")+r.URL.RequestURI()]
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.Write(resp.Body)
}

// SetDown takes the PCS down (connections drop) or brings it back.
func (s *Server) SetDown(down bool) { s.down.Store(down) }

// Requests counts the requests answered.
func (s *Server) Requests() int64 { return s.requests.Load() }

// Online returns the production online getter, its HTTP client sending
// every request to this server.
func (s *Server) Online() *collateral.Online {
	o := collateral.NewOnline()
	o.Client = &http.Client{Timeout: 5 * time.Second, Transport: redirect{s}}
	return o
}

// redirect sends requests to the fake PCS, naming the original host.
type redirect struct{ s *Server }

func (rt redirect) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Pcstest-Host", r.URL.Host)
	r.URL.Scheme = "http"
	r.URL.Host = rt.s.Listener.Addr().String()
	r.Host = r.URL.Host
	return rt.s.Client().Transport.RoundTrip(r)
}
