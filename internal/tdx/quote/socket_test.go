package quote

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/internal/testutil/tsmtest"
)

// A request carries a nonce and an SPKI hash, never REPORTDATA, and reads
// back as sent.
func TestSocketRequestRoundTrip(t *testing.T) {
	for _, n := range []int{0, attestation.MinNonce, attestation.MaxNonce} {
		req := &SocketRequest{Op: OpQuote, Nonce: bytes.Repeat([]byte{7}, n), SPKIHash: attestation.SPKIHash([]byte("k"))}
		b, err := req.marshal()
		if err != nil || len(b) != SocketRequestSize {
			t.Fatalf("nonce %d: %d bytes, %v", n, len(b), err)
		}
		got, err := ReadSocketRequest(bytes.NewReader(b))
		if err != nil || got.Op != req.Op || !bytes.Equal(got.Nonce, req.Nonce) || got.SPKIHash != req.SPKIHash {
			t.Fatalf("nonce %d: read back %+v, %v", n, got, err)
		}
	}
	if _, err := (&SocketRequest{Op: OpQuote, Nonce: make([]byte, attestation.MaxNonce+1)}).marshal(); err == nil {
		t.Fatal("a 65-byte nonce was encoded")
	}
}

// DomainAttester (what initd's socket serves) quotes over
// ReportData(nonce, spki) and refuses nonces out of bounds; the client
// refuses them before asking initd.
func TestDomainAttester(t *testing.T) {
	dir, _ := tsmtest.SimState(t)
	p, err := OpenSimulator(dir)
	if err != nil {
		t.Fatal(err)
	}
	a := DomainAttester{Provider: p}
	n, h := bytes.Repeat([]byte{1}, 32), attestation.SPKIHash([]byte("k"))
	q, err := a.Attest(n, h)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := attestation.ReportData(n, h)
	if got, _ := sim.ReportData(q); got != want || a.Name() != NameSimulator {
		t.Fatalf("REPORTDATA %x, want ReportData(nonce, spki) %x", got, want)
	}
	if _, err := a.Attest(make([]byte, attestation.MinNonce-1), h); err == nil || !strings.Contains(err.Error(), "nonce must be 16..64 bytes") {
		t.Fatalf("short nonce: %v", err)
	}
	c := &SocketClient{path: filepath.Join(t.TempDir(), "none")}
	if _, err := c.Attest(make([]byte, attestation.MaxNonce+1), h); err == nil || !strings.Contains(err.Error(), "nonce must be") {
		t.Fatalf("client with a long nonce: %v", err)
	}
}
