package unlock

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/guest/devmapper"
	resource "github.com/tdforge/tdforge/internal/inputs/secret"
	"github.com/tdforge/tdforge/internal/tdx/policy"
	"github.com/tdforge/tdforge/internal/testutil/simtd"
	"github.com/tdforge/tdforge/verifier/broker"
	"github.com/tdforge/tdforge/verifier/verify"
)

const resID = "tdforge/dev/model"

// fixture is a real RCAR broker (verifier/broker) over TLS whose appraisal
// answers with verdict, and a simulated TD quoting for initd.
type fixture struct {
	srv      *httptest.Server
	key      []byte
	appraise atomic.Value // func() (*broker.Appraisal, error)
	log      bytes.Buffer
	quote    func([64]byte) ([]byte, error)
	evidence chan verify.Evidence
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{evidence: make(chan verify.Evidence, 10)}
	res := t.TempDir()
	r, err := resource.Create(res, resID, []resource.Grant{{Image: "tdforge-dev"}})
	if err != nil {
		t.Fatal(err)
	}
	f.key = r.Value
	f.appraise.Store(func() (*broker.Appraisal, error) {
		return &broker.Appraisal{Trusted: true, Reason: "trusted: the evidence matches dev.json", PolicyID: "dev.json", Image: "tdforge-dev", Version: "0.1.0", Dev: true}, nil
	})
	b, err := broker.New(broker.Config{ResourceDir: res, Log: log.New(&f.log, "", 0),
		Appraise: func(_ context.Context, ev verify.Evidence, _ []byte, _ string) (*broker.Appraisal, error) {
			f.evidence <- ev
			return f.appraise.Load().(func() (*broker.Appraisal, error))()
		}})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	b.Register(mux)
	f.srv = httptest.NewTLSServer(mux)
	t.Cleanup(f.srv.Close)
	f.quote = simtd.New(t, nil, simtd.Registers(1, 2)).Quote
	return f
}

func (f *fixture) pin() string {
	h := sha256.Sum256(f.srv.Certificate().Raw)
	return hex.EncodeToString(h[:])
}

func (f *fixture) unlocker(url, pin string) (*Unlocker, *[]devmapper.Target, *bytes.Buffer) {
	var tables []devmapper.Target
	var logs bytes.Buffer
	return &Unlocker{Broker: policy.KeyBroker{URL: url, CASHA256: pin}, Quote: f.quote,
		Tries: 3, Backoff: 10 * time.Millisecond, TryTimeout: 2 * time.Second,
		Logf: func(format string, a ...any) { logs.WriteString(strings.TrimSpace(format) + "\n") },
		Map: func(name string, t devmapper.Target) (string, error) {
			tables = append(tables, t)
			return "/dev/mapper/" + name, nil
		}}, &tables, &logs
}

func encPayload() policy.Payload {
	return policy.Payload{Name: "model", DataSize: 1 << 20, Encryption: &policy.Encryption{Cipher: policy.EncryptionCipher,
		KeyBits: policy.EncryptionKeyBits, SectorSize: policy.EncryptionSectorSize, IVLargeSectors: true, Resource: resID}}
}

func TestUnlockReleased(t *testing.T) {
	f := newFixture(t)
	u, tables, _ := f.unlocker(f.srv.URL, f.pin())
	dev, err := u.Unlock(context.Background(), encPayload(), "253:0", []byte("runtime log"))
	if err != nil {
		t.Fatal(err)
	}
	if dev != "/dev/mapper/model-crypt" || len(*tables) != 1 {
		t.Fatalf("mapped %s with %v", dev, *tables)
	}
	tb := (*tables)[0]
	if tb.Type != "crypt" || tb.Length != (1<<20)/512 ||
		tb.Params != "aes-xts-plain64 "+hex.EncodeToString(f.key)+" 0 253:0 0 2 sector_size:4096 iv_large_sectors" {
		t.Fatalf("table %+v", tb)
	}
	ev := <-f.evidence
	if string(ev.RuntimeLog) != "runtime log" || ev.CCELAbsent == "" {
		t.Fatalf("the broker got runtime log %q, CCEL absent %q", ev.RuntimeLog, ev.CCELAbsent)
	}
}

// A refusal for the evidence is final: one try, and the measured reason
// names the register.
func TestUnlockRefused(t *testing.T) {
	f := newFixture(t)
	f.appraise.Store(func() (*broker.Appraisal, error) {
		return &broker.Appraisal{Trusted: false, Reason: "RTMR2: the quote's RTMR2 is 00…, the reference expects 11… (appraisal against dev.json)", PolicyID: "dev.json"}, nil
	})
	u, tables, logs := f.unlocker(f.srv.URL, f.pin())
	_, err := u.Unlock(context.Background(), encPayload(), "253:0", nil)
	if err == nil || err.Error() != "broker refused: RTMR2 mismatch" {
		t.Fatalf("Unlock = %v", err)
	}
	if len(*tables) != 0 || strings.Count(logs.String(), "try") != 1 {
		t.Fatalf("tables %v, tries:\n%s", *tables, logs.String())
	}
}

// Something at the broker's address without the pinned certificate is
// refused by initd before anything is sent.
func TestUnlockManInTheMiddle(t *testing.T) {
	f := newFixture(t)
	// httptest's servers share one certificate: the impostor has its own.
	mitm := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the client talked to the impostor: %s %s", r.Method, r.URL)
	}))
	mitm.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
	mitm.StartTLS()
	defer mitm.Close()
	u, tables, _ := f.unlocker(mitm.URL, f.pin())
	_, err := u.Unlock(context.Background(), encPayload(), "253:0", nil)
	if err == nil || !strings.Contains(err.Error(), "does not match the pinned ca_sha256") || len(*tables) != 0 {
		t.Fatalf("Unlock = %v, tables %v", err, *tables)
	}
}

// A broker that is down is retried with backoff a bounded number of
// times; one that comes back within them releases the key.
func TestUnlockBrokerDown(t *testing.T) {
	f := newFixture(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: connection refused
	u, _, logs := f.unlocker("https://"+addr, f.pin())
	start := time.Now()
	_, err = u.Unlock(context.Background(), encPayload(), "253:0", nil)
	if err == nil || !strings.HasPrefix(err.Error(), "broker unreachable after 3 tries: ") || strings.Count(logs.String(), "try") != 3 {
		t.Fatalf("Unlock = %v\n%s", err, logs.String())
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("no backoff between tries (%v)", d)
	}

	// Transient refusals (503) are retried too, until the broker answers.
	var n atomic.Int32
	f.appraise.Store(func() (*broker.Appraisal, error) {
		if n.Add(1) < 3 {
			return nil, &broker.Refusal{Status: http.StatusServiceUnavailable, Reason: "Intel PCS collateral could not be fetched"}
		}
		return &broker.Appraisal{Trusted: true, Reason: "ok", PolicyID: "dev.json", Image: "tdforge-dev", Version: "0.1.0", Dev: true}, nil
	})
	u, tables, _ := f.unlocker(f.srv.URL, f.pin())
	if _, err := u.Unlock(context.Background(), encPayload(), "253:0", nil); err != nil || len(*tables) != 1 || n.Load() != 3 {
		t.Fatalf("Unlock = %v after %d appraisals", err, n.Load())
	}
}

// The CCEL initd published travels beside the quote as given: it is not
// read back from the files.
func TestUnlockSendsCCEL(t *testing.T) {
	f := newFixture(t)
	u, _, _ := f.unlocker(f.srv.URL, f.pin())
	u.CCELTable, u.CCELLog = []byte("table"), []byte("log")
	if _, err := u.Fetch(context.Background(), resID, []byte("runtime log")); err != nil {
		t.Fatal(err)
	}
	ev := <-f.evidence
	if string(ev.CCELTable) != "table" || string(ev.CCEL) != "log" || ev.CCELAbsent != "" {
		t.Fatalf("the broker got CCEL table %q, log %q, absent %q", ev.CCELTable, ev.CCEL, ev.CCELAbsent)
	}
	u, _, _ = f.unlocker(f.srv.URL, f.pin())
	u.CCELAbsent = "no CCEL ACPI table: the firmware did not publish its event log"
	if _, err := u.Fetch(context.Background(), resID, nil); err != nil {
		t.Fatal(err)
	}
	if ev := <-f.evidence; ev.CCELAbsent != u.CCELAbsent || ev.CCEL != nil {
		t.Fatalf("the broker got CCEL absent %q, log %q", ev.CCELAbsent, ev.CCEL)
	}
}

func TestReason(t *testing.T) {
	if got := Reason(errors.New("x"), 1).Error(); got != "key release failed: x" {
		t.Error(got)
	}
	if got := Reason(context.DeadlineExceeded, 2).Error(); !strings.Contains(got, "abandoned after 2 tries") {
		t.Error(got)
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "impostor"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// One Unlocker serves the whole boot: once a fetch found the broker
// unreachable or untrusted, later fetches try once, not the whole
// schedule again.
func TestUnlockRemembersBrokerDown(t *testing.T) {
	f := newFixture(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	u, _, logs := f.unlocker("https://"+addr, f.pin())
	if _, err := u.Unlock(context.Background(), encPayload(), "253:0", nil); err == nil || !strings.HasPrefix(err.Error(), "broker unreachable after 3 tries: ") {
		t.Fatalf("first Unlock = %v", err)
	}
	logs.Reset()
	_, err = u.Fetch(context.Background(), "tdforge/dev/volume", nil)
	if err == nil || !strings.HasPrefix(err.Error(), "broker unreachable after 1 tries: ") || strings.Count(logs.String(), "try %d/%d") != 1 {
		t.Fatalf("second Fetch = %v\n%s", err, logs.String())
	}

	// An impostor is remembered too.
	mitm := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the client talked to the impostor: %s %s", r.Method, r.URL)
	}))
	mitm.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
	mitm.StartTLS()
	defer mitm.Close()
	u, _, logs = f.unlocker(mitm.URL, f.pin())
	if _, err := u.Unlock(context.Background(), encPayload(), "253:0", nil); err == nil || strings.Count(logs.String(), "try %d/%d") != 3 {
		t.Fatalf("first Unlock = %v\n%s", err, logs.String())
	}
	logs.Reset()
	if _, err := u.Unlock(context.Background(), encPayload(), "253:0", nil); err == nil || !strings.HasPrefix(err.Error(), "broker not trusted") || strings.Count(logs.String(), "try %d/%d") != 1 {
		t.Fatalf("second Unlock = %v\n%s", err, logs.String())
	}

	// A refusal is per key, not a broker that is down: not remembered.
	f.appraise.Store(func() (*broker.Appraisal, error) {
		return &broker.Appraisal{Trusted: false, Reason: "RTMR2: the quote's RTMR2 is 00…, the reference expects 11… (appraisal against dev.json)", PolicyID: "dev.json"}, nil
	})
	u, _, _ = f.unlocker(f.srv.URL, f.pin())
	u.Unlock(context.Background(), encPayload(), "253:0", nil)
	if d := u.brokerDown(); d != nil {
		t.Fatalf("a refusal was remembered as %v", d)
	}
}
