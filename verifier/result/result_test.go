package result

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/veraison/ear"

	"github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/verifier/verify"
)

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// trusted is the report of a genuine TD that matched its reference.
func trusted() *verify.Report {
	return &verify.Report{Verdict: verify.VerdictTrusted, Trusted: true, Checks: []verify.Check{
		{Name: verify.CheckAuthenticity, Status: verify.Pass, Reason: "chain ok"},
		{Name: verify.CheckTCB, Status: verify.Pass, Reason: "UpToDate"},
		{Name: "RTMR3", Status: verify.Pass, Reason: "equal"},
	}}
}

func sign(t *testing.T, ks *KeySet, r *verify.Report, now time.Time) []byte {
	t.Helper()
	ar, err := New(r, Input{Nonce: []byte("0123456789abcdef0123456789abcdef"), PolicyID: "app-1.0.json",
		Registers: map[string]string{"mrtd": "aa", "rtmr3": "bb"}, SPKIHash: "cc", VerifierBuild: "test"}, now)
	if err != nil {
		t.Fatal(err)
	}
	tok, exp, err := ks.Sign(ar)
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(time.Unix(now.Unix(), 0).Add(ks.TokenTTL)) {
		t.Fatalf("exp %v", exp)
	}
	return tok
}

func jwks(t *testing.T, ks *KeySet) []byte {
	t.Helper()
	b, err := ks.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignVerify(t *testing.T) {
	now := time.Now()
	ks, err := NewKeySet([]*ecdsa.PrivateKey{newKey(t)}, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, ks, trusted(), now)
	c, err := VerifyAt(tok, jwks(t, ks), now)
	if err != nil {
		t.Fatal(err)
	}
	a := c.TDX()
	if *a.Status != ear.TrustTierAffirming || !c.Affirming() || *a.AppraisalPolicyID != "app-1.0.json" {
		t.Fatalf("claims: status %v policy %v", a.Status, a.AppraisalPolicyID)
	}
	n, err := c.Nonce()
	if err != nil || string(n) != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("nonce %q %v", n, err)
	}
	ev := *a.VeraisonAnnotatedEvidence
	if ev["mrtd"] != "aa" || ev["tls_spki_sha256"] != "cc" || ev["tcb_status"] != "UpToDate" || len(ev["checks"].([]any)) != 3 {
		t.Fatalf("annotated evidence %v", ev)
	}
	if *c.Result.VerifierID.Build != "test" || c.Expires.Sub(c.IssuedAt) != 5*time.Minute {
		t.Fatalf("verifier id / times: %+v", c)
	}

	// Each refusal.
	other, _ := NewKeySet([]*ecdsa.PrivateKey{newKey(t)}, time.Minute)
	parts := strings.Split(string(tok), ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	forged := strings.Replace(string(payload), `"affirming"`, `"warning"`, 1)
	if forged == string(payload) {
		t.Fatalf("payload has no affirming status: %s", payload)
	}
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(forged)) + "." + parts[2]
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"x"}`)) + "." + parts[1] + "."
	for name, tc := range map[string]struct {
		tok, jwks []byte
		at        time.Time
		want      string
	}{
		"tampered":    {[]byte(tampered), jwks(t, ks), now, "signature"},
		"other key":   {tok, jwks(t, other), now, "not in the JWKS"},
		"expired":     {tok, jwks(t, ks), now.Add(7 * time.Minute), "expired"},
		"future":      {tok, jwks(t, ks), now.Add(-5 * time.Minute), "future"},
		"alg none":    {[]byte(none), jwks(t, ks), now, "ES256"},
		"not a token": {[]byte("hello"), jwks(t, ks), now, "JWS"},
		"bad jwks":    {tok, []byte("{"), now, "JWKS"},
	} {
		if _, err := VerifyAt(tc.tok, tc.jwks, tc.at); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, tc.want)
		}
	}
}

// The kid is the RFC 7638 thumbprint, computed here from its definition.
func TestKeyIDIsThumbprint(t *testing.T) {
	k := newKey(t)
	b64 := func(n []byte) string { return base64.RawURLEncoding.EncodeToString(n) }
	x, y := make([]byte, 32), make([]byte, 32)
	k.X.FillBytes(x)
	k.Y.FillBytes(y)
	sum := sha256.Sum256(fmt.Appendf(nil, `{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}`, b64(x), b64(y)))
	kid, err := KeyID(&k.PublicKey)
	if err != nil || kid != b64(sum[:]) {
		t.Fatalf("kid %q, want %q (%v)", kid, b64(sum[:]), err)
	}
}

// A rotated-out key stays in the JWKS until its last token expires; an
// announced key is published before it signs.
func TestRotation(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	k1, k2 := newKey(t), newKey(t)
	ks, err := NewKeySet([]*ecdsa.PrivateKey{k1, k2}, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ks.Now = func() time.Time { return now }
	kids := func() []string {
		var set struct {
			Keys []struct{ Kid, Alg, Use string }
		}
		if err := json.Unmarshal(jwks(t, ks), &set); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, k := range set.Keys {
			if k.Alg != "ES256" || k.Use != "sig" {
				t.Fatalf("key %+v lacks alg ES256 / use sig", k)
			}
			out = append(out, k.Kid)
		}
		return out
	}
	id1, _ := KeyID(&k1.PublicKey)
	id2, _ := KeyID(&k2.PublicKey)
	if got := kids(); len(got) != 2 || got[0] != id1 || got[1] != id2 {
		t.Fatalf("before rotation %v, want [%s %s]", got, id1, id2)
	}
	old := sign(t, ks, trusted(), now)
	if err := ks.Rotate([]*ecdsa.PrivateKey{k2}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(5 * time.Minute)
	if got := kids(); len(got) != 2 || got[0] != id2 || got[1] != id1 {
		t.Fatalf("after rotation %v, want [%s %s]", got, id2, id1)
	}
	if _, err := VerifyAt(old, jwks(t, ks), now); err != nil {
		t.Fatalf("token of the retired key refused while valid: %v", err)
	}
	fresh := sign(t, ks, trusted(), now)
	if c, err := VerifyAt(fresh, jwks(t, ks), now); err != nil || c.KeyID != id2 {
		t.Fatalf("new key: %v %v", c, err)
	}
	now = now.Add(6 * time.Minute)
	if got := kids(); len(got) != 1 || got[0] != id2 {
		t.Fatalf("after the old tokens expired %v, want [%s]", got, id2)
	}
}

func TestStatusAndVector(t *testing.T) {
	sim := trusted()
	sim.Simulated, sim.Verdict = true, verify.VerdictSimulated
	// What verify reports for --accept-unpinned rtmr0: verdict TRUSTED,
	// the register listed in Unpinned (it was affirming before).
	unpinned := trusted()
	unpinned.Unpinned = []string{"rtmr0"}
	unpinned1 := trusted()
	unpinned1.Unpinned = []string{"rtmr1"}
	unpinned3 := trusted()
	unpinned3.Unpinned = []string{"rtmr3"}
	tcb := &verify.Report{Verdict: verify.VerdictNotTrusted, Checks: []verify.Check{
		{Name: verify.CheckAuthenticity, Status: verify.Pass},
		{Name: verify.CheckTCB, Status: verify.Fail, Reason: "OutOfDate"},
		{Name: "events RTMR3", Status: verify.Fail},
		{Name: verify.CheckDebug, Status: verify.Fail, Cause: verify.ErrDebug},
	}}
	boot := &verify.Report{Verdict: verify.VerdictNotTrusted, Checks: []verify.Check{
		{Name: verify.CheckAuthenticity, Status: verify.Pass},
		{Name: verify.CheckTCB, Status: verify.Pass},
		{Name: "events RTMR1", Status: verify.Fail},
		{Name: "RTMR3", Status: verify.Pass},
	}}
	forged := &verify.Report{Verdict: verify.VerdictNotTrusted, Checks: []verify.Check{{Name: verify.CheckAuthenticity, Status: verify.Fail}}}
	revoked := trusted()
	revoked.Trusted, revoked.Verdict = false, verify.VerdictNotTrusted
	revoked.Checks = append(revoked.Checks, verify.Check{Name: CheckRevoked, Status: verify.Fail})
	for _, tc := range []struct {
		name   string
		r      *verify.Report
		status ear.TrustTier
		tv     ear.TrustVector
	}{
		{"trusted", trusted(), ear.TrustTierAffirming, ear.TrustVector{InstanceIdentity: 2, Configuration: 2, Executables: 2, FileSystem: 2, Hardware: 2, RuntimeOpaque: 2}},
		{"simulated", sim, ear.TrustTierWarning, ear.TrustVector{InstanceIdentity: 2, Configuration: 2, Executables: 2, FileSystem: 2, Hardware: 32}},
		{"accepted unpinned", unpinned, ear.TrustTierWarning, ear.TrustVector{InstanceIdentity: 2, Configuration: 2, Executables: 33, Hardware: 2, RuntimeOpaque: 2}},
		{"accepted unpinned rtmr1", unpinned1, ear.TrustTierWarning, ear.TrustVector{InstanceIdentity: 2, Configuration: 2, Executables: 33, Hardware: 2, RuntimeOpaque: 2}},
		{"accepted unpinned rtmr3", unpinned3, ear.TrustTierWarning, ear.TrustVector{InstanceIdentity: 2, Configuration: 2, Executables: 3, Hardware: 2, RuntimeOpaque: 2}},
		{"tcb+rtmr3+debug", tcb, ear.TrustTierContraindicated, ear.TrustVector{InstanceIdentity: 2, Configuration: 2, Executables: 33, FileSystem: 32, Hardware: 32, RuntimeOpaque: 96}},
		{"boot chain differs", boot, ear.TrustTierContraindicated, ear.TrustVector{InstanceIdentity: 2, Configuration: 2, Executables: 33, Hardware: 2, RuntimeOpaque: 2}},
		{"forged", forged, ear.TrustTierContraindicated, ear.TrustVector{InstanceIdentity: 99, Hardware: 97}},
		{"revoked", revoked, ear.TrustTierContraindicated, ear.TrustVector{InstanceIdentity: 2, Configuration: 2, Executables: 96, FileSystem: 2, Hardware: 2, RuntimeOpaque: 2}},
	} {
		if got := Status(tc.r); got != tc.status {
			t.Errorf("%s: status %v, want %v", tc.name, got, tc.status)
		}
		if got := vector(tc.r); got != tc.tv {
			t.Errorf("%s: vector %+v, want %+v", tc.name, got, tc.tv)
		}
		// The vector never claims more than the status.
		ar, err := New(tc.r, Input{}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		before := *ar.Submods[Submod].Status
		ev := *ar.Submods[Submod].VeraisonAnnotatedEvidence
		un, _ := ev["accepted_unpinned"].(map[string]any)
		if len(un) != len(tc.r.Unpinned) {
			t.Errorf("%s: annotated accepted_unpinned %v, want %v", tc.name, ev["accepted_unpinned"], tc.r.Unpinned)
		}
		for _, k := range tc.r.Unpinned {
			if reg, err := register.Parse(k); err != nil || un[k] != verify.Unchecked[reg] {
				t.Errorf("%s: annotated accepted_unpinned[%s] %v, want %q", tc.name, k, un[k], verify.Unchecked[reg])
			}
		}
		if ev["verdict"] != tc.r.Headline() {
			t.Errorf("%s: annotated verdict %v, want %q", tc.name, ev["verdict"], tc.r.Headline())
		}
		ar.UpdateStatusFromTrustVector()
		if *ar.Submods[Submod].Status != before {
			t.Errorf("%s: status %v, but the vector implies %v", tc.name, before, *ar.Submods[Submod].Status)
		}
	}
}

func TestParseSigningKeys(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	sec1, _ := x509.MarshalECPrivateKey(k1)
	p8, _ := x509.MarshalPKCS8PrivateKey(k2)
	raw := append(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8})...)
	keys, err := ParseSigningKeys(raw)
	if err != nil || len(keys) != 2 || !keys[0].Equal(k1) || !keys[1].Equal(k2) {
		t.Fatalf("got %d keys, %v", len(keys), err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	b384, _ := x509.MarshalECPrivateKey(p384)
	for name, raw := range map[string][]byte{
		"empty": nil,
		"P-384": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: b384}),
		"junk":  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("x")}),
	} {
		if _, err := ParseSigningKeys(raw); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

// The token is checked here without jwx: compact JWS, ES256 as the raw
// 64-byte r||s over "header.payload" (RFC 7518 §3.4), with the public key
// rebuilt from the JWKS's x and y.
func TestTokenWireFormat(t *testing.T) {
	ks, err := NewKeySet([]*ecdsa.PrivateKey{newKey(t)}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, ks, trusted(), time.Now())
	parts := strings.Split(string(tok), ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %d parts", len(parts))
	}
	dec := func(s string) []byte {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("%q is not base64url without padding: %v", s, err)
		}
		return b
	}
	var hdr struct{ Alg, Kid, Typ string }
	json.Unmarshal(dec(parts[0]), &hdr)
	var set struct {
		Keys []struct{ Kty, Crv, X, Y, Kid string }
	}
	json.Unmarshal(jwks(t, ks), &set)
	k := set.Keys[0]
	if hdr.Alg != "ES256" || hdr.Typ != "JWT" || hdr.Kid != k.Kid || k.Kty != "EC" || k.Crv != "P-256" {
		t.Fatalf("header %+v, key %+v", hdr, k)
	}
	pub := &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(dec(k.X)), Y: new(big.Int).SetBytes(dec(k.Y))}
	sig := dec(parts[2])
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if len(sig) != 64 || !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		t.Fatalf("signature (%d bytes) does not verify as ES256", len(sig))
	}
	var claims map[string]any
	json.Unmarshal(dec(parts[1]), &claims)
	sub := claims["submods"].(map[string]any)[Submod].(map[string]any)
	if claims["eat_profile"] != ear.EatProfile || claims["exp"] == nil || sub["ear.status"] != "affirming" || sub["ear.appraisal-policy-id"] != "app-1.0.json" {
		t.Fatalf("claims %v", claims)
	}
}
