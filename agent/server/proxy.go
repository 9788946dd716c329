package server

import (
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
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
// context, so a client disconnect cancels the generation upstream.
func newProxy(upstream *url.URL, tr http.RoundTripper, maxBody int64, logger *log.Logger) http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream) // also sets Host to Ollama's, which it checks
			// The web UI is served by the agent itself: a same-origin
			// request is not cross-origin for Ollama either.
			if o := pr.In.Header.Get("Origin"); o != "" && sameOrigin(o, pr.In) {
				pr.Out.Header.Del("Origin")
			}
		},
		Transport:     tr,
		FlushInterval: -1,
		ErrorLog:      logger,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var mbe *http.MaxBytesError
			switch {
			case errors.As(err, &mbe):
				writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", mbe.Limit))
			case r.Context().Err() != nil:
				// The client went away; nobody is left to answer.
			default:
				logger.Printf("proxy %s: %v", r.URL.Path, err)
				writeError(w, http.StatusBadGateway, "upstream Ollama unavailable: "+err.Error())
			}
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > maxBody {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is %d bytes; the limit is %d", r.ContentLength, maxBody))
			return
		}
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		}
		rp.ServeHTTP(w, r)
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
