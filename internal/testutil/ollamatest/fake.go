package ollamatest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// Fake starts an HTTP server playing Ollama's API for tests that need no
// model. /api/version answers 0.5.7; any other path goes to extra when it is
// given; otherwise /api/tags lists tiny:latest, /api/generate answers one
// response, /api/chat streams three tokens and a final record, and anything
// else is 404. It counts the requests it gets and stops when the test ends.
func Fake(tb testing.TB, extra http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		switch {
		case r.URL.Path == "/api/version":
			io.WriteString(w, `{"version":"0.5.7"}`)
		case extra != nil:
			extra(w, r)
		case r.URL.Path == "/api/tags":
			io.WriteString(w, `{"models":[{"name":"tiny:latest"}]}`)
		case r.URL.Path == "/api/generate":
			io.WriteString(w, `{"response":"x","done":true}`)
		case r.URL.Path == "/api/chat":
			w.Header().Set("Content-Type", "application/x-ndjson")
			for i := 0; i < 3; i++ {
				fmt.Fprintf(w, `{"message":{"role":"assistant","content":"t%d"},"done":false}`+"\n", i)
				w.(http.Flusher).Flush()
			}
			io.WriteString(w, `{"done":true,"eval_count":3}`+"\n")
		default:
			http.NotFound(w, r)
		}
	}))
	tb.Cleanup(up.Close)
	return up, &n
}
