// Package broker is the key broker of `verifier serve --resources DIR`: the
// server side of Trustee's KBS attestation protocol (RCAR, wire types in
// internal/tdx/kbs). A TD authenticates (auth), proves its state with a
// quote whose REPORTDATA binds the broker's nonce and its ephemeral key
// (attest: the service's appraisal against the reference directory), and
// then receives resources (DIR/<repo>/<type>/<tag>, package
// internal/inputs/secret) as JWEs to that key, each only if the resource
// file allows the matched reference document's image and version.
//
// The auth challenge is stateless (package verifier/nonce): its cookie
// carries the challenge's random value, its expiry and an HMAC under a
// per-process secret bound to the protocol parameters, so auth, which
// needs no evidence, stores nothing. attest checks the MAC and the expiry
// and records the challenge as used until it expires: one attestation per
// challenge. Only a successful attestation (which costs an appraisal)
// stores a session, in memory, bounded, for AttestedTTL. Every decision is
// logged with its reason; resource values never are.
package broker

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"math/big"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/mod/semver"

	"github.com/tdforge/tdforge/internal/inputs/secret"
	"github.com/tdforge/tdforge/internal/tdx/kbs"
	"github.com/tdforge/tdforge/verifier/nonce"
	"github.com/tdforge/tdforge/verifier/verify"
)

// Defaults.
const (
	DefaultSessionTTL  = 2 * time.Minute
	DefaultAttestedTTL = 2 * time.Minute
	DefaultMaxSessions = 4096
	DefaultMaxBody     = 4 << 20
)

// Appraisal is the service's verdict on one attestation.
type Appraisal struct {
	Trusted bool
	// Reason says why: the failing check ("RTMR2: …") or the match.
	Reason string
	// PolicyID is the reference document that matched (or came closest).
	PolicyID string
	// Image, Version and Dev are the matched document's image.
	Image, Version string
	Dev            bool
	// Token is the signed attestation result (EAR JWT) for the TD.
	Token string
}

// Refusal is an appraisal that could not be made (bad evidence: 4xx;
// collateral unreachable: 503).
type Refusal struct {
	Status int
	Reason string
}

func (r *Refusal) Error() string { return r.Reason }

// AppraiseFunc appraises evidence whose REPORTDATA the broker has already
// checked against the runtime data (binding describes it, for the report).
type AppraiseFunc func(ctx context.Context, ev verify.Evidence, nonce []byte, binding string) (*Appraisal, error)

// Config configures a Broker.
type Config struct {
	// ResourceDir holds the resource files (read per request).
	ResourceDir string
	Appraise    AppraiseFunc
	Log         *log.Logger
	// SessionTTL bounds auth -> attest; AttestedTTL attest -> resources.
	SessionTTL, AttestedTTL time.Duration
	// MaxSessions bounds the attested sessions (auth stores nothing).
	MaxSessions int
	MaxBody     int64
	Now         func() time.Time
}

// Broker serves the KBS endpoints.
type Broker struct {
	cfg        Config
	challenges *nonce.Issuer
	mu         sync.Mutex
	sessions   map[string]*session
}

// session is an attested session.
type session struct {
	expires  time.Time
	attested *Appraisal
	teeKey   crypto.PublicKey
	keyAlg   jose.KeyAlgorithm
}

// ErrNoResourceDir is returned by New when Config.ResourceDir is not a
// directory.
var ErrNoResourceDir = errors.New("not a directory of resource files (<repo>/<type>/<tag>)")

// New checks cfg.
func New(cfg Config) (*Broker, error) {
	if cfg.ResourceDir == "" || cfg.Appraise == nil {
		return nil, errors.New("key broker: a resource directory and an appraisal are required")
	}
	if cfg.Log == nil {
		cfg.Log = log.New(log.Writer(), "key broker: ", log.LstdFlags)
	}
	if fi, err := os.Stat(cfg.ResourceDir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("resource directory %s: %w", cfg.ResourceDir, ErrNoResourceDir)
	} else if fi.Mode().Perm()&0o077 != 0 {
		cfg.Log.Printf("warning: resource directory %s is open to other users (mode %v): its files are keys; chmod 700 it", cfg.ResourceDir, fi.Mode().Perm())
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.AttestedTTL <= 0 {
		cfg.AttestedTTL = DefaultAttestedTTL
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// The challenges' MAC secret is per process: a TD's auth and attest
	// go to one replica, as its attested session does.
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("key broker: no randomness for the challenge secret: %v", err)
	}
	// The MAC key binds the protocol parameters of the challenge: a
	// challenge is good for this protocol only.
	m := hmac.New(sha256.New, secret)
	fmt.Fprintf(m, "tdforge kbs challenge\x00version>=0.1.1\x00tee=%s\x00hash=%s", kbs.TEE, kbs.DefaultHash)
	ch, err := nonce.New(m.Sum(nil), cfg.SessionTTL)
	if err != nil {
		return nil, err
	}
	ch.Now = func() time.Time { return cfg.Now() }
	return &Broker{cfg: cfg, challenges: ch, sessions: map[string]*session{}}, nil
}

// Register mounts the endpoints on mux.
func (b *Broker) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST "+kbs.PathAuth, b.handleAuth)
	mux.HandleFunc("POST "+kbs.PathAttest, b.handleAttest)
	mux.HandleFunc("GET "+kbs.PathResource+"{repo}/{type}/{tag}", b.handleResource)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// fail answers a refusal: Trustee's ErrorInformation, detail verbatim.
func fail(w http.ResponseWriter, code int, kind, detail string) {
	writeJSON(w, code, kbs.ErrorInfo{Type: kbs.ErrorTypePrefix + kind, Detail: detail})
}

func sid(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// newSession stores a session, evicting expired ones; false when full.
func (b *Broker) newSession(s *session) (string, bool) {
	var raw [32]byte
	rand.Read(raw[:])
	id := hex.EncodeToString(raw[:])
	now := b.cfg.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.sessions) >= b.cfg.MaxSessions {
		for k, v := range b.sessions {
			if now.After(v.expires) {
				delete(b.sessions, k)
			}
		}
		if len(b.sessions) >= b.cfg.MaxSessions {
			return "", false
		}
	}
	b.sessions[id] = s
	return id, true
}

// challengeNonce is the nonce of a challenge (its random value), as the
// TD puts it in runtime-data.
func challengeNonce(n []byte) string {
	return base64.StdEncoding.EncodeToString(n[:nonce.ValueSize])
}

func (b *Broker) get(r *http.Request) (string, *session) {
	c, err := r.Cookie(kbs.Cookie)
	if err != nil {
		return "", nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sessions[c.Value]
	if s != nil && b.cfg.Now().After(s.expires) {
		delete(b.sessions, c.Value)
		s = nil
	}
	return c.Value, s
}

func (b *Broker) setCookie(w http.ResponseWriter, id string, ttl time.Duration) {
	http.SetCookie(w, &http.Cookie{Name: kbs.Cookie, Value: id, Path: "/kbs/v0", MaxAge: int(ttl.Seconds()), HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}

func (b *Broker) decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, b.cfg.MaxBody))
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fmt.Errorf("body larger than the limit of %d bytes", b.cfg.MaxBody)
		}
		return fmt.Errorf("malformed JSON: %v", err)
	}
	if dec.More() {
		return errors.New("malformed JSON: data after the document")
	}
	return nil
}

func (b *Broker) handleAuth(w http.ResponseWriter, r *http.Request) {
	var req kbs.Request
	if err := b.decode(w, r, &req); err != nil {
		fail(w, http.StatusBadRequest, "InvalidRequest", "request: "+err.Error())
		return
	}
	v := "v" + req.Version
	if !semver.IsValid(v) || semver.Major(v) != "v0" || semver.Compare(v, "v0.1.1") < 0 {
		fail(w, http.StatusUnauthorized, "ProtocolVersion", fmt.Sprintf("protocol version %q is not supported: this broker speaks 0.1.1 to %s (the runtime-data hash covers \"additional-evidence\")", req.Version, kbs.Version))
		return
	}
	if req.TEE != kbs.TEE {
		fail(w, http.StatusUnauthorized, "UnsupportedTee", fmt.Sprintf("tee %q is not supported: this broker attests %q only", req.TEE, kbs.TEE))
		return
	}
	// Stateless: the cookie is the challenge, MACed; nothing is stored.
	n, _, err := b.challenges.Issue()
	if err != nil {
		fail(w, http.StatusServiceUnavailable, "Internal", "no randomness")
		return
	}
	b.setCookie(w, hex.EncodeToString(n), b.cfg.SessionTTL)
	extra, _ := json.Marshal(map[string]string{"selected-hash-algorithm": kbs.DefaultHash})
	writeJSON(w, http.StatusOK, kbs.Challenge{Nonce: challengeNonce(n), ExtraParams: extra})
}

func (b *Broker) handleAttest(w http.ResponseWriter, r *http.Request) {
	var id string
	if c, err := r.Cookie(kbs.Cookie); err == nil {
		id = c.Value
	}
	refuse := func(code int, kind, format string, a ...any) {
		msg := fmt.Sprintf(format, a...)
		b.cfg.Log.Printf("kbs attest session %s: refused: %s", sid(id), msg)
		fail(w, code, kind, msg)
	}
	if _, s := b.get(r); s != nil {
		refuse(http.StatusUnauthorized, "InvalidCookie", "this session has already attested; start a new one with POST %s", kbs.PathAuth)
		return
	}
	// Check the challenge's MAC and expiry, and spend it: any attempt,
	// good or bad, uses it up.
	ch, err := nonce.Decode(id)
	if err == nil {
		err = b.challenges.Check(ch)
	}
	if err != nil {
		why := "no cookie, or not one of this broker's challenges"
		switch {
		case errors.Is(err, nonce.ErrExpired):
			why = "the challenge has expired"
		case errors.Is(err, nonce.ErrReplayed):
			why = "the challenge has already been used"
		}
		refuse(http.StatusUnauthorized, "InvalidCookie", "no live session (%s): POST %s first (a session attests once, within %s)", why, kbs.PathAuth, b.cfg.SessionTTL)
		return
	}
	var att kbs.Attestation
	if err := b.decode(w, r, &att); err != nil {
		refuse(http.StatusBadRequest, "InvalidRequest", "attestation: %v", err)
		return
	}
	if att.RuntimeData.Nonce != challengeNonce(ch) {
		refuse(http.StatusUnauthorized, "NonceMismatch", "runtime-data.nonce is not this session's challenge (a replayed attestation)")
		return
	}
	if len(att.InitData) > 0 && string(att.InitData) != "null" {
		refuse(http.StatusBadRequest, "InvalidRequest", "init-data: not supported (tdforge TDs have none)")
		return
	}
	key, alg, err := teeKey(att.RuntimeData.TEEPubKey)
	if err != nil {
		refuse(http.StatusBadRequest, "InvalidRequest", "runtime-data.tee-pubkey: %v", err)
		return
	}
	if att.TEEEvidence.AdditionalEvidence != "" && att.TEEEvidence.AdditionalEvidence != "{}" {
		refuse(http.StatusBadRequest, "InvalidRequest", "tee-evidence.additional_evidence: evidence of other devices is not supported")
		return
	}
	var ev kbs.TDXEvidence
	if err := json.Unmarshal(att.TEEEvidence.PrimaryEvidence, &ev); err != nil || len(ev.Quote) == 0 {
		refuse(http.StatusBadRequest, "InvalidRequest", "tee-evidence.primary_evidence: want TDX evidence {\"quote\": BASE64, \"cc_eventlog\": BASE64, …}")
		return
	}
	q, _, err := verify.ParseQuote(ev.Quote)
	if err != nil {
		refuse(http.StatusBadRequest, "InvalidRequest", "tee-evidence.primary_evidence.quote: %v: want a TDX quote version 4", err)
		return
	}
	want, err := kbs.ReportData(att.RuntimeData, att.TEEEvidence.AdditionalEvidence, kbs.DefaultHash)
	if err != nil {
		refuse(http.StatusBadRequest, "InvalidRequest", "runtime-data: %v", err)
		return
	}
	if got := q.GetTdQuoteBody().GetReportData(); hex.EncodeToString(got) != hex.EncodeToString(want[:]) {
		refuse(http.StatusUnauthorized, "EvidenceBinding", "REPORTDATA does not bind runtime-data (want %s(canonical runtime-data) = %s…, the quote has %s…): the quote was made for another nonce or key", kbs.DefaultHash, hex.EncodeToString(want[:8]), hex.EncodeToString(got[:8]))
		return
	}
	binding := fmt.Sprintf("REPORTDATA = %s(runtime-data: the broker's nonce and tee-pubkey %s)", kbs.DefaultHash, alg)
	a, err := b.cfg.Appraise(r.Context(), verify.Evidence{Quote: ev.Quote, CCEL: ev.CCEventLog, CCELTable: ev.CCELTable, RuntimeLog: ev.RuntimeLog, CCELAbsent: ev.CCELAbsent}, ch[:nonce.ValueSize], binding)
	if err != nil {
		var rf *Refusal
		if errors.As(err, &rf) {
			refuse(rf.Status, "AttestationFailed", "%s", rf.Reason)
		} else {
			refuse(http.StatusServiceUnavailable, "Internal", "appraisal: %v", err)
		}
		return
	}
	if !a.Trusted {
		refuse(http.StatusUnauthorized, "AttestationFailed", "%s (appraisal against %s: %s %s)", a.Reason, a.PolicyID, a.Image, a.Version)
		return
	}
	s := &session{attested: a, teeKey: key, keyAlg: alg, expires: b.cfg.Now().Add(b.cfg.AttestedTTL)}
	id, ok := b.newSession(s)
	if !ok {
		refuse(http.StatusServiceUnavailable, "TooManySessions", "too many open sessions; retry later")
		return
	}
	b.cfg.Log.Printf("kbs attest session %s: attested: reference %s (%s %s dev=%t): %s", sid(id), a.PolicyID, a.Image, a.Version, a.Dev, a.Reason)
	b.setCookie(w, id, b.cfg.AttestedTTL)
	writeJSON(w, http.StatusOK, kbs.Token{Token: a.Token})
}

func (b *Broker) handleResource(w http.ResponseWriter, r *http.Request) {
	// (Not r.PathValue: a wrapping handler may dispatch through
	// ServeMux.Handler, which sets no path values.)
	rid := strings.TrimPrefix(r.URL.Path, kbs.PathResource)
	id, s := b.get(r)
	refuse := func(code int, kind, format string, a ...any) {
		msg := fmt.Sprintf(format, a...)
		b.cfg.Log.Printf("kbs resource %s session %s: refused: %s", rid, sid(id), msg)
		fail(w, code, kind, msg)
	}
	if s == nil || s.attested == nil {
		refuse(http.StatusUnauthorized, "TokenNotFound", "not attested: POST %s and %s first (an attested session lasts %s)", kbs.PathAuth, kbs.PathAttest, b.cfg.AttestedTTL)
		return
	}
	if err := secret.CheckID(rid); err != nil {
		refuse(http.StatusBadRequest, "InvalidRequest", "%v", err)
		return
	}
	res, err := secret.Load(b.cfg.ResourceDir, rid)
	if errors.Is(err, secret.ErrNotExist) {
		refuse(http.StatusNotFound, "ResourceNotFound", "resource %s does not exist", rid)
		return
	}
	if err != nil {
		// The file's problem is the operator's: do not echo paths or
		// content to the TD.
		b.cfg.Log.Printf("kbs resource %s: unusable file: %v", rid, err)
		refuse(http.StatusServiceUnavailable, "Internal", "resource %s is unusable on the broker (see its log)", rid)
		return
	}
	a := s.attested
	ok, why := res.Allows(a.Image, a.Version, a.Dev)
	if !ok {
		refuse(http.StatusForbidden, "PolicyDeny", "%s (appraisal: reference %s)", why, a.PolicyID)
		return
	}
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: s.keyAlg, Key: s.teeKey}, nil)
	if err == nil {
		var obj *jose.JSONWebEncryption
		if obj, err = enc.Encrypt(res.Value); err == nil {
			b.cfg.Log.Printf("kbs resource %s session %s: released: %s (appraisal: reference %s)", rid, sid(id), why, a.PolicyID)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			w.Write([]byte(obj.FullSerialize()))
			return
		}
	}
	refuse(http.StatusInternalServerError, "Internal", "encrypting to the TEE key: %v", err)
}

// teeKey parses a tee-pubkey: EC P-256/P-384/P-521 with ECDH-ES+A256KW, or
// RSA (2048 bits or more) with RSA-OAEP-256.
func teeKey(j kbs.JWK) (crypto.PublicKey, jose.KeyAlgorithm, error) {
	dec := base64.RawURLEncoding.DecodeString
	switch j.Kty {
	case "EC":
		if j.Alg != "" && j.Alg != kbs.KeyAlg {
			return nil, "", fmt.Errorf("alg %q: an EC key takes %s", j.Alg, kbs.KeyAlg)
		}
		raw, err := json.Marshal(map[string]string{"kty": "EC", "crv": j.Crv, "x": j.X, "y": j.Y})
		if err != nil {
			return nil, "", err
		}
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			return nil, "", fmt.Errorf("not a valid EC key: %v", err)
		}
		pub, ok := k.Key.(*ecdsa.PublicKey)
		if !ok {
			return nil, "", errors.New("not an EC public key")
		}
		return pub, jose.ECDH_ES_A256KW, nil
	case "RSA":
		if j.Alg != kbs.RSAOAEP256 {
			return nil, "", fmt.Errorf("alg %q: an RSA key takes %s", j.Alg, kbs.RSAOAEP256)
		}
		n, err1 := dec(strings.TrimRight(j.N, "="))
		e, err2 := dec(strings.TrimRight(j.E, "="))
		if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 {
			return nil, "", errors.New("n and e must be base64url")
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if pub.N.BitLen() < 2048 {
			return nil, "", fmt.Errorf("a %d-bit RSA key is too small (want 2048 or more)", pub.N.BitLen())
		}
		return pub, jose.RSA_OAEP_256, nil
	}
	return nil, "", fmt.Errorf("kty %q: want \"EC\" or \"RSA\"", j.Kty)
}
