package server

import (
	"bytes"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"
)

// newTransport is the connection pool to Ollama: no environment proxies,
// bounded dials and header waits, keep-alive for concurrent streams.
func newTransport(headerTimeout time.Duration) *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: headerTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
}

// newProxy forwards requests to Ollama. Responses stream through unbuffered
// (flush after every write); the outbound request carries the client's
// context, so a client disconnect cancels the generation upstream. The
// path sent is the request's decoded path, re-encoded: checkTarget has
// already refused every path whose raw form could differ in meaning.
func newProxy(upstream *url.URL, tr http.RoundTripper, logger *log.Logger) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream) // also sets Host to Ollama's, which it checks
			pr.Out.URL.Path = strings.TrimSuffix(upstream.Path, "/") + pr.In.URL.Path
			pr.Out.URL.RawPath = ""
			// The web UI is served by the agent itself: a same-origin
			// request is not cross-origin for Ollama either.
			if o := pr.In.Header.Get("Origin"); o != "" && sameOrigin(o, pr.In) {
				pr.Out.Header.Del("Origin")
			}
			// The bearer secret is the conversation owner's (owner.go):
			// it stays in the agent; Ollama needs none.
			pr.Out.Header.Del("Authorization")
		},
		Transport:     tr,
		FlushInterval: -1,
		ErrorLog:      logger,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the client went away; nobody is left to answer
			}
			logger.Printf("proxy %s: %v", r.URL.Path, err)
			writeError(w, http.StatusBadGateway, "upstream Ollama unavailable: "+err.Error())
		},
	}
}

// forward is the handler of every proxied route: it reads the whole body
// within the body deadline (so a slow client never holds a connection to
// Ollama), applies the operator's option limits, then proxies.
func (s *Server) forward() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := readBody(w, r, s.cfg.MaxBody, s.cfg.BodyTimeout)
		if !ok {
			return
		}
		body, err := applyLimits(s.cfg.Policy.Agent.Limits, r.URL.Path, body)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		save, ok := s.beginSave(w, r, body)
		if !ok {
			return
		}
		r.Body, r.ContentLength, r.TransferEncoding = http.NoBody, 0, nil
		if len(body) > 0 {
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		}
		if save == nil {
			s.proxy.ServeHTTP(w, r)
			return
		}
		s.proxy.ServeHTTP(save, r)
		save.finish(r.Context(), s.cfg.Log.Printf)
	})
}

func sameOrigin(origin string, r *http.Request) bool {
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return u.Scheme == scheme && u.Host == r.Host
}

// HTTPServer wraps h with the agent's connection limits. There is no
// overall read or write timeout: chat streams may legitimately run for
// minutes, and a ReadTimeout would cancel them.
func HTTPServer(h http.Handler, logger *log.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          logger,
	}
}
