// Package nonce issues and checks the attestation service's stateless
// nonces. A nonce is 64 bytes: 32 random bytes, the expiry (8 bytes, big
// endian Unix seconds) and the first 24 bytes of HMAC-SHA256(secret,
// value || expiry). Replicas that share the secret accept each other's
// nonces without sharing any store.
//
// Replay: each Issuer remembers the nonces it has accepted until they
// expire (memory grows with the accept rate times the validity window,
// never beyond). A nonce replayed to a different replica is not in that
// replica's set; it is refused only once it expires, so the validity window
// bounds a cross-replica replay. Keep it short (the default is 2 minutes).
package nonce

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Sizes of a nonce's parts (bytes). Size equals attestation.MaxNonce, the
// longest nonce an agent quotes.
const (
	ValueSize  = 32
	expirySize = 8
	MACSize    = 24 // HMAC-SHA256 truncated to 192 bits
	Size       = ValueSize + expirySize + MACSize
	// MinSecret is the shortest accepted HMAC secret.
	MinSecret = 32
)

// DefaultTTL is how long a nonce is valid by default.
const DefaultTTL = 2 * time.Minute

// Errors of Check; each says what the client must do.
var (
	ErrMalformed = fmt.Errorf("not a nonce of this service: want %d hex digits from GET /v1/nonce", 2*Size)
	ErrForged    = errors.New("not issued by this service (bad MAC): get a fresh one from GET /v1/nonce")
	ErrExpired   = errors.New("expired: get a fresh one from GET /v1/nonce and attest again")
	ErrReplayed  = errors.New("already used: every attestation needs a fresh nonce from GET /v1/nonce")
)

// Issuer issues and checks nonces with one secret.
type Issuer struct {
	secret []byte
	ttl    time.Duration
	// Now is the clock (tests set it); nil means time.Now.
	Now func() time.Time

	mu        sync.Mutex
	seen      map[[ValueSize]byte]time.Time
	nextSweep time.Time
}

// New returns an Issuer; secret must be at least MinSecret bytes and ttl
// positive (zero means DefaultTTL).
func New(secret []byte, ttl time.Duration) (*Issuer, error) {
	if len(secret) < MinSecret {
		return nil, fmt.Errorf("nonce secret is %d bytes, want at least %d (make one with `head -c 32 /dev/urandom > FILE`)", len(secret), MinSecret)
	}
	if ttl < 0 {
		return nil, fmt.Errorf("nonce validity %v is negative", ttl)
	}
	if ttl == 0 {
		ttl = DefaultTTL
	}
	return &Issuer{secret: append([]byte(nil), secret...), ttl: ttl, seen: map[[ValueSize]byte]time.Time{}}, nil
}

// TTL is how long issued nonces are valid.
func (is *Issuer) TTL() time.Duration { return is.ttl }

func (is *Issuer) now() time.Time {
	if is.Now != nil {
		return is.Now()
	}
	return time.Now()
}

func (is *Issuer) mac(valueExpiry []byte) []byte {
	m := hmac.New(sha256.New, is.secret)
	m.Write(valueExpiry)
	return m.Sum(nil)[:MACSize]
}

// Issue returns a fresh nonce and its expiry (whole seconds).
func (is *Issuer) Issue() ([]byte, time.Time, error) {
	b := make([]byte, Size)
	if _, err := rand.Read(b[:ValueSize]); err != nil {
		return nil, time.Time{}, err
	}
	exp := is.now().Add(is.ttl).Truncate(time.Second)
	binary.BigEndian.PutUint64(b[ValueSize:], uint64(exp.Unix()))
	copy(b[ValueSize+expirySize:], is.mac(b[:ValueSize+expirySize]))
	return b, exp, nil
}

// Decode parses a nonce's wire form (hex).
func Decode(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != Size {
		return nil, ErrMalformed
	}
	return b, nil
}

// Check verifies n's MAC and expiry and consumes it: a second Check of the
// same nonce on this Issuer fails with ErrReplayed.
func (is *Issuer) Check(n []byte) error {
	if len(n) != Size {
		return ErrMalformed
	}
	if !hmac.Equal(n[ValueSize+expirySize:], is.mac(n[:ValueSize+expirySize])) {
		return ErrForged
	}
	exp := time.Unix(int64(binary.BigEndian.Uint64(n[ValueSize:])), 0)
	now := is.now()
	if !now.Before(exp) {
		return ErrExpired
	}
	var v [ValueSize]byte
	copy(v[:], n)
	is.mu.Lock()
	defer is.mu.Unlock()
	is.sweep(now)
	if _, ok := is.seen[v]; ok {
		return ErrReplayed
	}
	is.seen[v] = exp
	return nil
}

// sweep drops expired entries, at most once a second (they are refused by
// expiry anyway).
func (is *Issuer) sweep(now time.Time) {
	if now.Before(is.nextSweep) {
		return
	}
	for v, exp := range is.seen {
		if !now.Before(exp) {
			delete(is.seen, v)
		}
	}
	is.nextSweep = now.Add(time.Second)
}

// Remembered is the size of the replay set (the service's
// tdforge_nonces_remembered gauge).
func (is *Issuer) Remembered() int {
	is.mu.Lock()
	defer is.mu.Unlock()
	return len(is.seen)
}
