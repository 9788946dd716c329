package service

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
)

// corsPaths are the endpoints a web page may call from another origin:
// the agent's web UI asks for a nonce, posts the evidence and fetches the
// key set to check the token itself.
var corsPaths = []string{PathNonce, PathAttest, PathJWKS}

// CheckOrigin validates a CORS origin: an exact origin,
// scheme://host[:port], with nothing after it ("*" is refused: a result
// any page may request is not what an operator means to allow).
func CheckOrigin(o string) error {
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("origin %q: want an exact origin such as https://agent.example:8443 (scheme, host, port; no path, no wildcard)", o)
	}
	return nil
}

// cors answers preflights and adds Access-Control-Allow-Origin for the
// origins in Config.CORSOrigins, on corsPaths only. Other origins get no
// CORS headers (the browser then withholds the answer) and a refused
// preflight.
func (s *Service) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" || !slices.Contains(corsPaths, r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		allowed := slices.Contains(s.cfg.CORSOrigins, origin)
		w.Header().Add("Vary", "Origin")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			if !allowed {
				writeError(w, &apiError{status: http.StatusForbidden, field: "origin", msg: fmt.Sprintf("%q may not call this service from a web page: start the service with --cors-origin %s", origin, origin)})
				return
			}
			w.Header().Set("Access-Control-Allow-Origin", origin)
			w.Header().Set("Access-Control-Allow-Methods", "GET, POST")
			w.Header().Set("Access-Control-Allow-Headers", "Content-Type")
			w.Header().Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if allowed {
			w.Header().Set("Access-Control-Allow-Origin", origin)
		}
		next.ServeHTTP(w, r)
	})
}
