// Package result turns a verification report into a signed IETF RATS EAR
// attestation result (an ES256 JWT built with github.com/veraison/ear), and
// checks such a token for relying parties (Verify).
//
// Claims: eat_profile, iat, exp, eat_nonce (the service's nonce,
// base64url), ear.verifier-id and one submod "tdx" with ear.status, the
// AR4SI trustworthiness vector (see vector for each value's reason),
// ear.appraisal-policy-id (the reference document that matched) and
// ear.veraison.annotated-evidence (image, registers, TCB status, TLS SPKI
// hash and every check of the report).
package result

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/veraison/ear"

	"github.com/tdforge/tdforge/verifier/verify"
)

// Submod is the name of the TD's appraisal in the result.
const Submod = "tdx"

// Developer is ear.verifier-id's developer.
const Developer = "https://github.com/tdforge/tdforge"

// Input is what the result says besides the report.
type Input struct {
	// Nonce is the service nonce the evidence answers (raw bytes).
	Nonce []byte
	// PolicyID names the reference document the report was made against.
	PolicyID string
	// Registers are MRTD and RTMR0..3 of the quote ("mrtd", "rtmr0".. to hex).
	Registers map[string]string
	// SPKIHash is the hex SHA-256 of the TLS SubjectPublicKeyInfo that
	// REPORTDATA binds; the relying party compares it with the key it
	// connected to.
	SPKIHash string
	// ReportData is the quote's REPORTDATA (hex).
	ReportData string
	// VerifierBuild identifies the verifier build (ear.verifier-id build).
	VerifierBuild string
}

// Status maps a report to ear.status: affirming for TRUSTED, warning for a
// trusted verdict that rests on something the operator accepted (a
// simulated TD the service was told to accept, or registers accepted
// unpinned), contraindicated for anything else. (verify's trusted verdict
// is TRUSTED (SIMULATED) exactly when r.Simulated.)
func Status(r *verify.Report) ear.TrustTier {
	switch {
	case r == nil || !r.Trusted:
		return ear.TrustTierContraindicated
	case r.Simulated || len(r.Unpinned) > 0:
		return ear.TrustTierWarning
	}
	return ear.TrustTierAffirming
}

// NonceClaim is the eat_nonce of a nonce: base64url without padding (EAT
// limits a JSON nonce to 88 characters; 64 bytes in hex would be 128).
func NonceClaim(n []byte) string { return base64.RawURLEncoding.EncodeToString(n) }

// New builds the attestation result of report r.
func New(r *verify.Report, in Input, now time.Time) (*ear.AttestationResult, error) {
	build := in.VerifierBuild
	if build == "" {
		build = "tdforge verifier"
	}
	ar := ear.NewAttestationResult(Submod, build, Developer)
	iat := now.Unix()
	ar.IssuedAt = &iat
	if in.Nonce != nil {
		n := NonceClaim(in.Nonce)
		ar.Nonce = &n
	}
	a := ar.Submods[Submod]
	st := Status(r)
	a.Status = &st
	tv := vector(r)
	a.TrustVector = &tv
	if in.PolicyID != "" {
		p := in.PolicyID
		a.AppraisalPolicyID = &p
	}
	ev := annotate(r, in)
	a.VeraisonAnnotatedEvidence = &ev
	if _, err := ar.MarshalJSON(); err != nil { // validates
		return nil, err
	}
	return ar, nil
}

// Sign signs ar with the key set's current key: a compact JWS with kid,
// carrying ar's claims and exp = iat + TokenTTL.
func (ks *KeySet) Sign(ar *ear.AttestationResult) ([]byte, time.Time, error) {
	b, err := ar.MarshalJSON()
	if err != nil {
		return nil, time.Time{}, err
	}
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' || bytes.Contains(b, []byte(`"exp":`)) {
		return nil, time.Time{}, errors.New("attestation result: not a JSON object without exp")
	}
	exp := time.Unix(*ar.IssuedAt, 0).Add(ks.TokenTTL)
	// Add exp to the claims object (cheaper than a decode and re-encode).
	payload := make([]byte, 0, len(b)+24)
	payload = append(payload, `{"exp":`...)
	payload = strconv.AppendInt(payload, exp.Unix(), 10)
	if len(b) > 2 {
		payload = append(payload, ',')
	}
	payload = append(payload, b[1:]...)
	key, kid := ks.signer()
	hdr := jws.NewHeaders()
	hdr.Set(jws.KeyIDKey, kid)
	hdr.Set(jws.TypeKey, "JWT")
	tok, err := jws.Sign(payload, jws.WithKey(jwa.ES256(), key, jws.WithProtectedHeaders(hdr)))
	return tok, exp, err
}

// Claims is a verified attestation result.
type Claims struct {
	Result   *ear.AttestationResult
	KeyID    string
	IssuedAt time.Time
	Expires  time.Time
}

// TDX is the TD's appraisal (nil if absent).
func (c *Claims) TDX() *ear.Appraisal { return c.Result.Submods[Submod] }

// Nonce decodes eat_nonce.
func (c *Claims) Nonce() ([]byte, error) {
	if c.Result.Nonce == nil {
		return nil, errors.New("the result has no eat_nonce")
	}
	return base64.RawURLEncoding.DecodeString(*c.Result.Nonce)
}

// Affirming reports whether every submod's ear.status is affirming.
func (c *Claims) Affirming() bool {
	for _, a := range c.Result.Submods {
		if a.Status == nil || *a.Status != ear.TrustTierAffirming {
			return false
		}
	}
	return len(c.Result.Submods) > 0
}

// Verify checks token against a JWKS document (JSON) at time.Now.
func Verify(token, jwks []byte) (*Claims, error) { return VerifyAt(token, jwks, time.Now()) }

// skew is the clock difference tolerated between the service and a
// relying party.
const skew = time.Minute

// VerifyAt checks an attestation result token: an ES256 JWS whose kid
// names a key of jwks, with a valid signature, iat not in the future and
// exp not passed at now, and valid EAR claims. It does not judge the
// verdict: callers check the nonce and ear.status (see Claims.Affirming).
func VerifyAt(token, jwks []byte, now time.Time) (*Claims, error) {
	set, err := jwk.Parse(jwks)
	if err != nil {
		return nil, fmt.Errorf("JWKS: %v", err)
	}
	token = []byte(strings.TrimSpace(string(token)))
	msg, err := jws.Parse(token, jws.WithCompact())
	if err != nil {
		return nil, fmt.Errorf("token: not a compact JWS: %v", err)
	}
	if len(msg.Signatures()) != 1 {
		return nil, errors.New("token: want exactly one signature")
	}
	h := msg.Signatures()[0].ProtectedHeaders()
	kid, _ := h.KeyID()
	if alg, _ := h.Algorithm(); alg != jwa.ES256() {
		return nil, fmt.Errorf("token: algorithm %v, want ES256", alg)
	}
	key, ok := set.LookupKeyID(kid)
	if kid == "" || !ok {
		return nil, fmt.Errorf("token: key id %q is not in the JWKS (a retired key whose tokens expired, or another service)", kid)
	}
	payload, err := jws.Verify(token, jws.WithKey(jwa.ES256(), key))
	if err != nil {
		return nil, fmt.Errorf("token: signature: %v", err)
	}
	var times struct {
		IAT *int64 `json:"iat"`
		Exp *int64 `json:"exp"`
	}
	if err := json.Unmarshal(payload, &times); err != nil {
		return nil, fmt.Errorf("token: claims: %v", err)
	}
	if times.IAT == nil || times.Exp == nil {
		return nil, errors.New("token: iat and exp are required")
	}
	c := &Claims{KeyID: kid, IssuedAt: time.Unix(*times.IAT, 0), Expires: time.Unix(*times.Exp, 0)}
	switch {
	case !now.Before(c.Expires.Add(skew)):
		return nil, fmt.Errorf("token: expired at %s", c.Expires.UTC().Format(time.RFC3339))
	case now.Add(skew).Before(c.IssuedAt):
		return nil, fmt.Errorf("token: issued in the future (%s)", c.IssuedAt.UTC().Format(time.RFC3339))
	}
	c.Result = &ear.AttestationResult{}
	if err := c.Result.UnmarshalJSON(payload); err != nil {
		return nil, fmt.Errorf("token: not an EAR attestation result: %v", err)
	}
	if c.TDX() == nil {
		return nil, fmt.Errorf("token: no %q submod", Submod)
	}
	return c, nil
}
