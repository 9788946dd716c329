package nonce

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newIssuer(t *testing.T, secret string, c *clock) *Issuer {
	t.Helper()
	is, err := New([]byte(secret), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	is.Now = c.now
	return is
}

const secret = "0123456789abcdef0123456789abcdef"

func TestIssueCheck(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	is := newIssuer(t, secret, c)
	n, exp, err := is.Issue()
	if err != nil {
		t.Fatal(err)
	}
	if len(n) != Size || Size != attestation.MaxNonce {
		t.Fatalf("nonce is %d bytes, want %d (the agent's maximum %d)", len(n), Size, attestation.MaxNonce)
	}
	if !exp.Equal(c.t.Add(time.Minute)) {
		t.Fatalf("expires %v", exp)
	}
	back, err := Decode(hex.EncodeToString(n))
	if err != nil || !bytes.Equal(back, n) {
		t.Fatalf("Decode: %v", err)
	}
	if err := is.Check(n); err != nil {
		t.Fatalf("fresh nonce refused: %v", err)
	}
	if err := is.Check(n); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay: got %v, want ErrReplayed", err)
	}
	m, _, _ := is.Issue()
	if bytes.Equal(m[:ValueSize], n[:ValueSize]) {
		t.Fatal("two nonces share their random value")
	}
}

func TestForged(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	is := newIssuer(t, secret, c)
	other := newIssuer(t, "another secret, also 32 bytes long", c)
	n, _, _ := other.Issue()
	if err := is.Check(n); !errors.Is(err, ErrForged) {
		t.Fatalf("nonce of another secret: got %v, want ErrForged", err)
	}
	// Extending the expiry of a genuine nonce breaks its MAC.
	g, _, _ := is.Issue()
	g[ValueSize+expirySize-1]++
	if err := is.Check(g); !errors.Is(err, ErrForged) {
		t.Fatalf("changed expiry: got %v, want ErrForged", err)
	}
	for _, s := range []string{"", "zz", hex.EncodeToString(make([]byte, Size-1))} {
		if _, err := Decode(s); !errors.Is(err, ErrMalformed) {
			t.Fatalf("Decode(%q) = %v, want ErrMalformed", s, err)
		}
	}
	if err := is.Check(make([]byte, 16)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short nonce: %v", err)
	}
}

func TestExpired(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	is := newIssuer(t, secret, c)
	n, exp, _ := is.Issue()
	c.t = exp
	if err := is.Check(n); !errors.Is(err, ErrExpired) {
		t.Fatalf("at expiry: got %v, want ErrExpired", err)
	}
}

// Two replicas share the secret, not a store: each accepts the other's
// nonces once; a replay to the other replica is caught only by expiry.
func TestCrossReplica(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	a, b := newIssuer(t, secret, c), newIssuer(t, secret, c)
	n, exp, _ := a.Issue()
	if err := b.Check(n); err != nil {
		t.Fatalf("replica b refuses a's nonce: %v", err)
	}
	if err := b.Check(n); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay on b: %v", err)
	}
	if err := a.Check(n); err != nil {
		t.Fatalf("documented limit: a does not know b saw it, got %v", err)
	}
	c.t = exp.Add(time.Second)
	for _, is := range []*Issuer{a, b} {
		if err := is.Check(n); !errors.Is(err, ErrExpired) {
			t.Fatalf("after expiry: %v", err)
		}
	}
}

// The replay set keeps nothing past expiry: memory stays flat.
func TestReplaySetBounded(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	is := newIssuer(t, secret, c)
	for round := 0; round < 5; round++ {
		for i := 0; i < 1000; i++ {
			n, _, _ := is.Issue()
			if err := is.Check(n); err != nil {
				t.Fatal(err)
			}
		}
		if got := is.Remembered(); got > 1000 {
			t.Fatalf("round %d: %d nonces remembered, want at most one window (1000)", round, got)
		}
		c.t = c.t.Add(time.Minute + time.Second)
	}
}

func TestNewRefusesShortSecret(t *testing.T) {
	if _, err := New([]byte("short"), 0); err == nil {
		t.Fatal("short secret accepted")
	}
	is, err := New([]byte(secret), 0)
	if err != nil || is.TTL() != DefaultTTL {
		t.Fatalf("default TTL: %v %v", is, err)
	}
}
