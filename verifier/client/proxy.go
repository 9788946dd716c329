package client

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httputil"
)

// Proxy is a local reverse proxy to an attested agent: any Ollama or
// OpenAI client can talk plain HTTP to it. Every upstream connection is
// attested (and the agent's key pinned) before a request byte is sent;
// responses stream through unbuffered. When attestation fails the client
// gets 502 with a JSON error naming the reason and nothing is forwarded.
type Proxy struct {
	Pinned *Pinned
	rp     *httputil.ReverseProxy
}

// NewProxy returns a proxy to the agent behind p.
func NewProxy(p *Pinned) *Proxy {
	up := p.URL
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(up)
			pr.Out.Host = up.Host
		},
		Transport:     p.Transport(),
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			msg := "upstream agent unavailable: " + err.Error()
			if errors.As(err, new(*AttestError)) {
				msg = "refusing to forward: " + err.Error()
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadGateway)
			json.NewEncoder(w).Encode(map[string]string{"error": msg})
		},
	}
	return &Proxy{Pinned: p, rp: rp}
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.rp.ServeHTTP(w, r) }

// CloseIdleConnections drops idle upstream connections; the next request
// dials (and attests) afresh.
func (p *Proxy) CloseIdleConnections() { p.rp.Transport.(*http.Transport).CloseIdleConnections() }
