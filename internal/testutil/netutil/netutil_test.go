package netutil

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestFreeAddr(t *testing.T) {
	addr := FreeAddr(t)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatal(addr)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatalf("something listens on %s", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the address is not usable: %v", err)
	}
	l.Close()
	if p := FreePort(t); p <= 0 || p > 65535 {
		t.Fatal(p)
	}
}

// WaitOK returns once the server answers 200, reports the last status when
// it never does, and stops at once when alive reports the server gone.
func TestWaitOK(t *testing.T) {
	var ready atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	time.AfterFunc(300*time.Millisecond, func() { ready.Store(true) })
	if err := WaitOK(srv.Client(), srv.URL, 10*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	ready.Store(false)
	if err := WaitOK(srv.Client(), srv.URL, 300*time.Millisecond, nil); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("never ready: %v, want the 503 named", err)
	}
	gone := errors.New("server exited")
	start := time.Now()
	if err := WaitOK(srv.Client(), srv.URL, time.Minute, func() error { return gone }); err != gone || time.Since(start) > 5*time.Second {
		t.Fatalf("exited server: %v after %s", err, time.Since(start))
	}
}

// Get and Post send what they say and return the status and whole body.
func TestGetPost(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusTeapot)
		fmt.Fprintf(w, "%s %s %q %s", r.Method, r.URL.Path, r.Header.Get("Content-Type"), b)
	}))
	defer srv.Close()
	if code, b := Get(t, srv.URL+"/g"); code != http.StatusTeapot || string(b) != `GET /g "" ` {
		t.Errorf("Get: %d %s", code, b)
	}
	if code, b := Post(t, srv.URL+"/p", `{"a":1}`); code != http.StatusTeapot || string(b) != `POST /p "application/json" {"a":1}` {
		t.Errorf("Post: %d %s", code, b)
	}
}
