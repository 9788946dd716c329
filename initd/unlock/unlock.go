// Package unlock opens initd's encrypted payloads: it asks the key broker
// named in the boot policy for each payload's key over RCAR (package
// internal/tdx/kbs, TLS pinned by the measured ca_sha256, a fresh quote
// from initd's own quoting backend), retrying with backoff for a bounded
// time, then stacks dm-crypt (crypt.Table) on the payload's verity device.
// The key lives in TD memory only: the released slice, zeroed once the
// table is loaded; the table's params string (crypt.Table), which holds it
// in hex and, being a Go string, is not zeroed but left to the garbage
// collector; and the kernel. Never in a file or a log. It implements
// payload.Unlocker.
package unlock

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tdforge/tdforge/internal/guest/devmapper"
	"github.com/tdforge/tdforge/internal/image/crypt"
	"github.com/tdforge/tdforge/internal/tdx/kbs"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// Defaults of the retry schedule: 6 tries, waiting 1, 2, 4, 8 and 15 s
// between them (about 30 s, plus up to TryTimeout per try).
const (
	DefaultTries      = 6
	DefaultBackoff    = time.Second
	DefaultMaxBackoff = 15 * time.Second
	DefaultTryTimeout = 10 * time.Second
)

// Unlocker fetches keys from Broker and maps dm-crypt devices. initd uses
// one Unlocker for the whole boot (encrypted payloads, then sealed
// volumes): once a fetch has found the broker unreachable, or not the
// pinned one, every later fetch tries once instead of running the whole
// schedule again, until a fetch succeeds.
type Unlocker struct {
	Broker policy.KeyBroker
	// Quote quotes the TD (initd's quoting backend).
	Quote func(reportData [64]byte) ([]byte, error)
	// The CCEL initd republished (quoted.PublishCCEL): its table and
	// log, or why there is none; sent beside the quote.
	CCELTable, CCELLog []byte
	CCELAbsent         string
	// Retry schedule; zero values take the defaults.
	Tries                           int
	Backoff, MaxBackoff, TryTimeout time.Duration
	// Logf receives one line per try.
	Logf func(format string, a ...any)
	// Map stacks the dm-crypt table; nil: device-mapper (devmapper.Create).
	Map func(name string, t devmapper.Target) (string, error)

	mu   sync.Mutex
	down error // why the last finished fetch found no usable broker; nil: none did
}

// CryptName is the name of payload name's plaintext device-mapper device.
func CryptName(name string) string { return name + "-crypt" }

// Unlock fetches pl's key and maps /dev/mapper/<name>-crypt over verityDev.
// Its errors are the short reasons initd measures in payload-locked.
func (u *Unlocker) Unlock(ctx context.Context, pl policy.Payload, verityDev string, runtimeLog []byte) (string, error) {
	if pl.Encryption == nil {
		return "", errors.New("not an encrypted payload")
	}
	key, err := u.Fetch(ctx, pl.Encryption.Resource, runtimeLog)
	if err != nil {
		return "", err
	}
	defer clear(key)
	dev := verityDev
	if u.Map == nil {
		if dev, err = devmapper.DevNum(verityDev); err != nil {
			return "", fmt.Errorf("verity device: %v", err)
		}
	}
	length, params, err := crypt.Table(*pl.Encryption, key, dev, pl.DataSize)
	if err != nil {
		return "", err
	}
	m := u.Map
	if m == nil {
		m = func(name string, t devmapper.Target) (string, error) {
			return devmapper.Create(name, "TDFORGE-CRYPT-"+name, true, t)
		}
	}
	node, err := m(CryptName(pl.Name), devmapper.Target{Length: length, Type: "crypt", Params: params})
	if err != nil {
		// The error never holds the table (it holds the key).
		return "", fmt.Errorf("dm-crypt: %v", err)
	}
	return node, nil
}

// Lock removes pl's plaintext mapping.
func (u *Unlocker) Lock(pl policy.Payload) error {
	if u.Map != nil {
		return nil
	}
	return devmapper.Remove(CryptName(pl.Name))
}

// Fetch runs RCAR for resource until the broker answers, a try is refused
// for good, or the tries run out. A refusal for the TD's evidence (HTTP
// 4xx) is final for this boot: its measurements will not change.
func (u *Unlocker) Fetch(ctx context.Context, resource string, runtimeLog []byte) ([]byte, error) {
	pin, err := hex.DecodeString(u.Broker.CASHA256)
	if err != nil || len(pin) != 32 {
		return nil, fmt.Errorf("key_broker ca_sha256 %q is not 64 hex digits", u.Broker.CASHA256)
	}
	c := &kbs.Client{URL: u.Broker.URL, Quote: u.Quote, HTTP: &http.Client{Timeout: or(u.TryTimeout, DefaultTryTimeout)}}
	copy(c.CASHA256[:], pin)
	c.Extra = func() ([]byte, []byte, []byte, string) {
		return runtimeLog, u.CCELLog, u.CCELTable, u.ccelAbsent()
	}
	tries := u.Tries
	if tries <= 0 {
		tries = DefaultTries
	}
	if down := u.brokerDown(); down != nil {
		u.logf("key broker %s: one try for %s, as an earlier fetch this boot found it %v", u.Broker.URL, resource, down)
		tries = 1
	}
	wait := or(u.Backoff, DefaultBackoff)
	var last error
	for i := 1; i <= tries; i++ {
		start := time.Now()
		key, err := c.Fetch(ctx, resource)
		if err == nil {
			u.setDown(nil)
			u.logf("key broker %s released %s (try %d, %dms)", u.Broker.URL, resource, i, time.Since(start).Milliseconds())
			return key, nil
		}
		last = err
		u.logf("key broker %s, resource %s, try %d/%d: %v", u.Broker.URL, resource, i, tries, err)
		var ref *kbs.RefusedError
		if errors.As(err, &ref) && ref.Status < 500 {
			break
		}
		if i == tries {
			break
		}
		select {
		case <-ctx.Done():
			return nil, Reason(ctx.Err(), i)
		case <-time.After(wait):
		}
		wait = min(2*wait, or(u.MaxBackoff, DefaultMaxBackoff))
	}
	var te *kbs.TransportError
	var ref *kbs.RefusedError
	switch {
	case errors.Is(last, kbs.ErrPinMismatch):
		u.setDown(errors.New("not trusted (certificate not the pinned one)"))
	case errors.As(last, &te):
		u.setDown(errors.New("unreachable"))
	case errors.As(last, &ref):
		u.setDown(nil) // it answered: reachable and the pinned one
	}
	return nil, Reason(last, tries)
}

func (u *Unlocker) brokerDown() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.down
}

func (u *Unlocker) setDown(err error) {
	u.mu.Lock()
	u.down = err
	u.mu.Unlock()
}

// Reason turns a failed fetch into the short reason initd measures and
// /readyz shows, e.g. "broker refused: RTMR2 mismatch".
func Reason(err error, tries int) error {
	var ref *kbs.RefusedError
	var te *kbs.TransportError
	switch {
	case errors.As(err, &ref):
		return fmt.Errorf("broker refused: %s", ref.Summary())
	case errors.Is(err, kbs.ErrPinMismatch):
		return errors.New("broker not trusted: its certificate does not match the pinned ca_sha256")
	case errors.As(err, &te):
		msg := te.Err.Error()
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:] // "dial tcp …: connect: connection refused" -> "connection refused"
		}
		return fmt.Errorf("broker unreachable after %d tries: %s", tries, msg)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fmt.Errorf("key request abandoned after %d tries: %v", tries, err)
	}
	return fmt.Errorf("key release failed: %v", err)
}

func (u *Unlocker) logf(format string, a ...any) {
	if u.Logf != nil {
		u.Logf(format, a...)
	}
}

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// ccelAbsent is why the evidence carries no CCEL ("" when it does).
func (u *Unlocker) ccelAbsent() string {
	switch {
	case u.CCELAbsent != "":
		return u.CCELAbsent
	case u.CCELTable == nil || u.CCELLog == nil:
		return "no CCEL: initd gave its key broker client none"
	}
	return ""
}
