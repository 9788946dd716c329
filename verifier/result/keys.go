package result

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
)

// ParseSigningKeys reads PEM EC P-256 private keys ("EC PRIVATE KEY" or
// PKCS #8 "PRIVATE KEY"). The first signs results; the others are only
// published, so a key can be announced before it is used (see KeySet).
func ParseSigningKeys(raw []byte) ([]*ecdsa.PrivateKey, error) {
	var keys []*ecdsa.PrivateKey
	for {
		var b *pem.Block
		b, raw = pem.Decode(raw)
		if b == nil {
			break
		}
		var k any
		var err error
		switch b.Type {
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("PEM %s block %d: %v", b.Type, len(keys)+1, err)
		}
		ec, ok := k.(*ecdsa.PrivateKey)
		if !ok || ec.Curve != elliptic.P256() {
			return nil, fmt.Errorf("key %d is not an EC P-256 key (ES256 needs one: `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`)", len(keys)+1)
		}
		keys = append(keys, ec)
	}
	if len(keys) == 0 {
		return nil, errors.New("no EC private key in PEM (want a \"EC PRIVATE KEY\" or \"PRIVATE KEY\" block)")
	}
	return keys, nil
}

// publicJWK is the JWK of pub with kid set to its RFC 7638 thumbprint
// (SHA-256, base64url), alg ES256 and use sig.
func publicJWK(pub *ecdsa.PublicKey) (jwk.Key, error) {
	k, err := jwk.Import(pub)
	if err != nil {
		return nil, err
	}
	if err := jwk.AssignKeyID(k); err != nil {
		return nil, err
	}
	k.Set(jwk.AlgorithmKey, jwa.ES256())
	k.Set(jwk.KeyUsageKey, "sig")
	return k, nil
}

// KeyID is the kid of pub: its RFC 7638 JWK thumbprint.
func KeyID(pub *ecdsa.PublicKey) (string, error) {
	k, err := publicJWK(pub)
	if err != nil {
		return "", err
	}
	kid, _ := k.KeyID()
	return kid, nil
}

// KeySet signs results with its current key and publishes every public key
// a valid token may name: the current one, announced ones, and retired
// ones until the last token they signed expires.
type KeySet struct {
	// TokenTTL is the lifetime of the tokens it signs.
	TokenTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu        sync.Mutex
	current   *ecdsa.PrivateKey
	kid       string
	announced []*ecdsa.PublicKey
	retired   map[string]retiredKey // by kid
}

type retiredKey struct {
	pub   *ecdsa.PublicKey
	until time.Time
}

// NewKeySet returns a KeySet signing with keys[0] and announcing the rest.
func NewKeySet(keys []*ecdsa.PrivateKey, tokenTTL time.Duration) (*KeySet, error) {
	if tokenTTL <= 0 {
		return nil, errors.New("token lifetime must be positive")
	}
	ks := &KeySet{TokenTTL: tokenTTL, retired: map[string]retiredKey{}}
	return ks, ks.Rotate(keys)
}

func (ks *KeySet) now() time.Time {
	if ks.Now != nil {
		return ks.Now()
	}
	return time.Now()
}

// Rotate makes keys[0] the signing key and announces the rest. A previous
// signing key that is no longer keys[0] stays published until every token
// it signed has expired.
func (ks *KeySet) Rotate(keys []*ecdsa.PrivateKey) error {
	if len(keys) == 0 {
		return errors.New("no signing key")
	}
	kid, err := KeyID(&keys[0].PublicKey)
	if err != nil {
		return err
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.current != nil && ks.kid != kid {
		ks.retired[ks.kid] = retiredKey{pub: &ks.current.PublicKey, until: ks.now().Add(ks.TokenTTL)}
	}
	delete(ks.retired, kid)
	ks.current, ks.kid = keys[0], kid
	ks.announced = ks.announced[:0]
	for _, k := range keys[1:] {
		ks.announced = append(ks.announced, &k.PublicKey)
	}
	return nil
}

// signer returns the current key and its kid.
func (ks *KeySet) signer() (*ecdsa.PrivateKey, string) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.current, ks.kid
}

// JWKS returns the public key set as JSON (RFC 7517), current key first.
func (ks *KeySet) JWKS() ([]byte, error) {
	ks.mu.Lock()
	now := ks.now()
	pubs := []*ecdsa.PublicKey{&ks.current.PublicKey}
	pubs = append(pubs, ks.announced...)
	for kid, r := range ks.retired {
		if now.After(r.until) {
			delete(ks.retired, kid)
			continue
		}
		pubs = append(pubs, r.pub)
	}
	ks.mu.Unlock()
	set := jwk.NewSet()
	seen := map[string]bool{}
	for _, p := range pubs {
		k, err := publicJWK(p)
		if err != nil {
			return nil, err
		}
		kid, _ := k.KeyID()
		if seen[kid] {
			continue
		}
		seen[kid] = true
		if err := set.AddKey(k); err != nil {
			return nil, err
		}
	}
	return json.Marshal(set)
}
