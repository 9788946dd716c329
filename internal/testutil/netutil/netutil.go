// Package netutil has the network helpers tests share: a loopback address
// nothing listens on, a plain HTTP GET and JSON POST, and a wait for a
// server to answer.
package netutil

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// FreeAddr returns a 127.0.0.1:port address that was free a moment ago: for
// a server the test starts, or for a connection that must be refused.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Get fetches url and returns the status code and body; a request that
// fails to complete fails the test.
func Get(tb testing.TB, url string) (int, []byte) {
	tb.Helper()
	return do(tb, http.MethodGet, url, nil)
}

// Post sends body to url as application/json and returns the status code
// and the answer's body; a request that fails to complete fails the test.
func Post(tb testing.TB, url, body string) (int, []byte) {
	tb.Helper()
	return do(tb, http.MethodPost, url, strings.NewReader(body))
}

func do(tb testing.TB, method, url string, body io.Reader) (int, []byte) {
	tb.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		tb.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	return resp.StatusCode, b
}

// FreePort is FreeAddr's port.
func FreePort(tb testing.TB) int {
	tb.Helper()
	_, p, _ := net.SplitHostPort(FreeAddr(tb))
	n, _ := strconv.Atoi(p)
	return n
}
