package service

import (
	"net/http"
	"strings"
	"testing"
)

// Only the configured origins may call the service from a page, and only
// the endpoints a page needs.
func TestCORS(t *testing.T) {
	const page = "https://agent.example:8443"
	f := newFixture(t, func(c *Config) { c.CORSOrigins = []string{page} })
	do := func(method, path, origin string, preflight bool) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, f.srv.URL+path, nil)
		req.Header.Set("Origin", origin)
		if preflight {
			req.Header.Set("Access-Control-Request-Method", "POST")
			req.Header.Set("Access-Control-Request-Headers", "content-type")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	r := do(http.MethodOptions, PathAttest, page, true)
	if r.StatusCode != http.StatusNoContent || r.Header.Get("Access-Control-Allow-Origin") != page ||
		!strings.Contains(r.Header.Get("Access-Control-Allow-Methods"), "POST") || !strings.Contains(r.Header.Get("Access-Control-Allow-Headers"), "Content-Type") {
		t.Fatalf("preflight from %s: %d %v", page, r.StatusCode, r.Header)
	}
	for _, p := range []string{PathNonce, PathJWKS} {
		if r := do(http.MethodGet, p, page, false); r.StatusCode != 200 || r.Header.Get("Access-Control-Allow-Origin") != page {
			t.Errorf("GET %s from %s: %d %v", p, page, r.StatusCode, r.Header)
		}
	}
	const other = "https://evil.example"
	if r := do(http.MethodOptions, PathAttest, other, true); r.StatusCode != http.StatusForbidden || r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from %s: %d %v", other, r.StatusCode, r.Header)
	}
	if r := do(http.MethodGet, PathNonce, other, false); r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("GET from %s allowed: %v", other, r.Header)
	}
	if r := do(http.MethodGet, PathMetrics, page, false); r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("metrics readable cross-origin: %v", r.Header)
	}
	for _, bad := range []string{"*", "https://agent.example/ui", "agent.example", "null"} {
		if CheckOrigin(bad) == nil {
			t.Errorf("--cors-origin %q accepted", bad)
		}
	}
}
