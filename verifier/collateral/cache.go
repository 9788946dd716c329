package collateral

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tdx-guest/verify/trust"

	"github.com/tdforge/tdforge/verifier/poll"
)

// DefaultRefresh is how long a cached PCS response is used before the
// background refresh fetches it again (Intel's nextUpdate is about a month
// away; a day bounds how long a revocation or TCB recovery goes unseen).
const DefaultRefresh = 12 * time.Hour

// Cache is an online collateral source for a long-running service: it
// keeps each Intel PCS response (TCB info per FMSPC, QE identity, CRLs)
// until its own nextUpdate, refreshes it in the background before then,
// and keeps serving it while the PCS cannot be reached. A response past
// its nextUpdate is never served: without the PCS it is a network error.
//
// The cache stores what the upstream returned; go-tdx-guest checks
// Intel's signatures on every appraisal, so a forged response fails
// verification and is replaced at the next refresh.
type Cache struct {
	// Upstream fetches from the PCS (an *Online in production).
	Upstream trust.HTTPSGetter
	// Refresh bounds how long an entry is used before it is fetched again
	// (0: DefaultRefresh); an entry is also refetched in the last tenth of
	// its validity.
	Refresh time.Duration
	// Backoff is how long after a failed fetch of a URL an appraisal that
	// needs it fails at once instead of waiting on the PCS again (0:
	// DefaultBackoff). The background refresh always tries.
	Backoff time.Duration
	// Now is the clock (nil: time.Now).
	Now func() time.Time

	mu       sync.Mutex
	failed   map[string]failure
	entries  map[string]*cached
	inflight map[string]*call
	outage   *Outage
	errors   uint64
}

type cached struct {
	header     map[string][]string
	body       []byte
	fetchedAt  time.Time
	nextUpdate time.Time
	refreshAt  time.Time
}

type failure struct {
	at  time.Time
	err *NetworkError
}

// DefaultBackoff is Cache.Backoff's default.
const DefaultBackoff = 30 * time.Second

// maxFailed bounds the failed URLs a Cache remembers for backoff and
// retry.
const maxFailed = 64

type call struct {
	done chan struct{}
	ent  *cached
	err  error
}

// Outage describes the PCS failing: since the first failed fetch after
// the last successful one.
type Outage struct {
	Since     time.Time `json:"since"`
	LastError string    `json:"last_error"`
	LastAt    time.Time `json:"last_error_at"`
}

// EntryStatus is one cached response, for /readyz.
type EntryStatus struct {
	Kind       string    `json:"kind"`
	FMSPC      string    `json:"fmspc,omitempty"`
	FetchedAt  time.Time `json:"fetched_at"`
	NextUpdate time.Time `json:"next_update"`
	RefreshAt  time.Time `json:"refresh_at"`
	Expired    bool      `json:"expired,omitempty"`
}

// CacheStatus is the cache's state.
type CacheStatus struct {
	Entries []EntryStatus `json:"entries"`
	Outage  *Outage       `json:"outage,omitempty"`
	// FetchErrors counts failed upstream fetches since start.
	FetchErrors uint64 `json:"fetch_errors"`
}

// NewCache returns a cache over an online getter with bounded timeouts.
func NewCache() *Cache { return &Cache{Upstream: NewOnline()} }

func (c *Cache) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Get implements trust.HTTPSGetter: a cached response before its
// nextUpdate, else a fetch (one at a time per URL).
func (c *Cache) Get(u string) (map[string][]string, []byte, error) {
	now := c.now()
	c.mu.Lock()
	if e, ok := c.entries[u]; ok && now.Before(e.nextUpdate) {
		c.mu.Unlock()
		return e.header, e.body, nil
	}
	backoff := c.Backoff
	if backoff <= 0 {
		backoff = DefaultBackoff
	}
	if f, ok := c.failed[u]; ok && now.Sub(f.at) < backoff {
		c.mu.Unlock()
		return nil, nil, f.err
	}
	c.mu.Unlock()
	e, err := c.fetch(u)
	if err != nil {
		return nil, nil, err
	}
	return e.header, e.body, nil
}

// fetch gets u from upstream and caches it; concurrent fetches of one URL
// share the result.
func (c *Cache) fetch(u string) (*cached, error) {
	c.mu.Lock()
	if cl, ok := c.inflight[u]; ok {
		c.mu.Unlock()
		<-cl.done
		return cl.ent, cl.err
	}
	cl := &call{done: make(chan struct{})}
	if c.inflight == nil {
		c.inflight = map[string]*call{}
	}
	c.inflight[u] = cl
	c.mu.Unlock()

	cl.ent, cl.err = c.fetchOnce(u)

	c.mu.Lock()
	delete(c.inflight, u)
	c.mu.Unlock()
	close(cl.done)
	return cl.ent, cl.err
}

func (c *Cache) fetchOnce(u string) (*cached, error) {
	h, body, err := c.Upstream.Get(u)
	now := c.now()
	if err == nil {
		var next time.Time
		next, err = nextUpdate(body)
		if err == nil && !now.Before(next) {
			err = fmt.Errorf("expired at %s (its nextUpdate): the collateral service returned stale data", next.UTC().Format(time.RFC3339))
		}
		if err != nil {
			err = &NetworkError{URL: u, Err: err}
		}
		if err == nil {
			e := &cached{header: h, body: body, fetchedAt: now, nextUpdate: next, refreshAt: c.refreshAt(now, next)}
			c.mu.Lock()
			if c.entries == nil {
				c.entries = map[string]*cached{}
			}
			c.entries[u] = e
			delete(c.failed, u)
			c.outage = nil
			c.mu.Unlock()
			return e, nil
		}
	}
	var se *StatusError
	if errors.As(err, &se) && se.Definitive() {
		// The PCS answered: nothing to cache, retry or report. (The
		// FMSPC comes from a PCK certificate that is not verified yet,
		// so anyone can make the service ask for one that does not exist.)
		return nil, err
	}
	var ne *NetworkError
	if !errors.As(err, &ne) {
		// A 5xx or stale data from the PCS is an outage too.
		ne = &NetworkError{URL: u, Err: err}
		err = ne
	}
	c.mu.Lock()
	if c.failed == nil {
		c.failed = map[string]failure{}
	}
	// Remember a bounded number of failed URLs (each is retried in the
	// background): during an outage, quotes naming made-up FMSPCs must not
	// grow the set.
	if _, ok := c.failed[u]; ok || len(c.failed) < maxFailed {
		c.failed[u] = failure{at: now, err: ne}
	}
	c.errors++
	if c.outage == nil {
		c.outage = &Outage{Since: now}
	}
	c.outage.LastError, c.outage.LastAt = err.Error(), now
	c.mu.Unlock()
	return nil, err
}

// refreshAt is when an entry fetched at now is due again: after Refresh,
// or in the last tenth of its validity, whichever is first.
func (c *Cache) refreshAt(now, next time.Time) time.Time {
	every := c.Refresh
	if every <= 0 {
		every = DefaultRefresh
	}
	at := now.Add(every)
	if late := next.Add(-next.Sub(now) / 10); late.Before(at) {
		at = late
	}
	return at
}

// RefreshDue fetches again every entry whose refresh time has come, and
// retries every URL whose last fetch failed (so a replica that reports
// not ready recovers without traffic). A failed fetch keeps the entry
// (served until its nextUpdate) and is reported by Status; the first
// failure is returned.
func (c *Cache) RefreshDue() error {
	now := c.now()
	var due []string
	c.mu.Lock()
	for u, e := range c.entries {
		if !now.Before(e.refreshAt) {
			due = append(due, u)
		}
	}
	for u := range c.failed {
		if _, ok := c.entries[u]; !ok {
			due = append(due, u)
		}
	}
	c.mu.Unlock()
	sort.Strings(due)
	var first error
	for _, u := range due {
		if _, err := c.fetch(u); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Run refreshes due entries every interval until ctx ends.
func (c *Cache) Run(ctx context.Context, interval time.Duration, logf func(string, ...any)) {
	poll.Every(ctx, interval, func() {
		if err := c.RefreshDue(); err != nil && logf != nil {
			logf("collateral refresh failed, serving the cached collateral until its nextUpdate: %v", err)
		}
	})
}

// Status reports the cached entries and any PCS outage.
func (c *Cache) Status() CacheStatus {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	st := CacheStatus{FetchErrors: c.errors, Entries: []EntryStatus{}}
	if c.outage != nil {
		o := *c.outage
		st.Outage = &o
	}
	for u, e := range c.entries {
		kind, fmspc := describe(u)
		st.Entries = append(st.Entries, EntryStatus{Kind: kind, FMSPC: fmspc, FetchedAt: e.fetchedAt, NextUpdate: e.nextUpdate, RefreshAt: e.refreshAt, Expired: !now.Before(e.nextUpdate)})
	}
	sort.Slice(st.Entries, func(i, j int) bool {
		a, b := st.Entries[i], st.Entries[j]
		return a.Kind+a.FMSPC < b.Kind+b.FMSPC
	})
	return st
}

// OldestFetch is the fetch time of the oldest cached entry (false when the
// cache is empty).
func (c *Cache) OldestFetch() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var t time.Time
	for _, e := range c.entries {
		if t.IsZero() || e.fetchedAt.Before(t) {
			t = e.fetchedAt
		}
	}
	return t, !t.IsZero()
}

// FetchErrors counts failed upstream fetches.
func (c *Cache) FetchErrors() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.errors
}

// View returns a getter for one appraisal that remembers the first
// network failure it saw (go-tdx-guest flattens getter errors, so verify
// asks Failure afterwards, as with Online).
func (c *Cache) View() *CacheView { return &CacheView{c: c} }

// CacheView is one appraisal's use of a Cache.
type CacheView struct {
	c    *Cache
	mu   sync.Mutex
	fail *NetworkError
}

// Get implements trust.HTTPSGetter.
func (v *CacheView) Get(u string) (map[string][]string, []byte, error) {
	h, b, err := v.c.Get(u)
	var ne *NetworkError
	if errors.As(err, &ne) {
		v.mu.Lock()
		if v.fail == nil {
			v.fail = ne
		}
		v.mu.Unlock()
	}
	return h, b, err
}

// Failure returns the first network failure seen, or nil.
func (v *CacheView) Failure() *NetworkError {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.fail
}

// describe names a PCS URL's kind and FMSPC.
func describe(u string) (kind, fmspc string) {
	p, err := url.Parse(u)
	if err != nil {
		return "other", ""
	}
	switch {
	case strings.HasSuffix(p.Path, "/tcb"):
		return "tcb-info", p.Query().Get("fmspc")
	case strings.HasSuffix(p.Path, "/qe/identity"):
		return "qe-identity", ""
	case strings.HasSuffix(p.Path, "/pckcrl"):
		return "pck-crl-" + p.Query().Get("ca"), ""
	case strings.HasSuffix(strings.ToLower(p.Path), ".der") || strings.Contains(strings.ToLower(p.Path), "crl"):
		return "root-ca-crl", ""
	}
	return "other", ""
}

// nextUpdate reads a PCS response's validity end: tcbInfo.nextUpdate,
// enclaveIdentity.nextUpdate, or a DER CRL's NextUpdate.
func nextUpdate(body []byte) (time.Time, error) {
	var j struct {
		TCBInfo  *struct{ NextUpdate time.Time } `json:"tcbInfo"`
		Identity *struct{ NextUpdate time.Time } `json:"enclaveIdentity"`
	}
	if len(body) > 0 && body[0] == '{' {
		if err := json.Unmarshal(body, &j); err != nil {
			return time.Time{}, fmt.Errorf("not a PCS JSON response: %v", err)
		}
		switch {
		case j.TCBInfo != nil && !j.TCBInfo.NextUpdate.IsZero():
			return j.TCBInfo.NextUpdate, nil
		case j.Identity != nil && !j.Identity.NextUpdate.IsZero():
			return j.Identity.NextUpdate, nil
		}
		return time.Time{}, errors.New("PCS JSON response without tcbInfo.nextUpdate or enclaveIdentity.nextUpdate")
	}
	crl, err := x509.ParseRevocationList(body)
	if err != nil {
		return time.Time{}, fmt.Errorf("neither PCS JSON nor a DER CRL: %v", err)
	}
	if crl.NextUpdate.IsZero() {
		return time.Time{}, errors.New("CRL without nextUpdate")
	}
	return crl.NextUpdate, nil
}
