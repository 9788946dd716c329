package netutil

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
