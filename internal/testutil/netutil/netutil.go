// Package netutil has the network helpers tests share: a loopback address
// nothing listens on.
package netutil

import (
	"net"
	"strconv"
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

// FreePort is FreeAddr's port.
func FreePort(tb testing.TB) int {
	tb.Helper()
	_, p, _ := net.SplitHostPort(FreeAddr(tb))
	n, _ := strconv.Atoi(p)
	return n
}
