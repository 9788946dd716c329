package netutil

import (
	"net"
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
