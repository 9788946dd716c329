// Package reference loads a reference-values document for verification:
// an in-toto statement in a DSSE envelope whose signature is checked with
// the publisher's key, or, for dev images only, plain JSON.
package reference

import (
	"bytes"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/signing"
	"github.com/tdforge/tdforge/verifier/verify"
)

// ErrInput marks unusable input files (exit 2).
var ErrInput = errors.New("input error")

// Facts behind the signature check, set as its Cause; commands add the
// flag or action as a hint.
var (
	// ErrNoKey: the document is signed but no key was given to check the
	// signature; it is refused (an input error), never used unverified.
	ErrNoKey = errors.New("signed (DSSE envelope) but no reference key was given to check its signature")
	// ErrUnsigned: a key was given but the document is not a DSSE envelope.
	ErrUnsigned = errors.New("the reference values are not signed (no DSSE envelope) but a reference key was given")
	// ErrUnsignedRelease: a plain document of a non-dev image; only dev
	// references may be used unsigned.
	ErrUnsignedRelease = errors.New("the reference values are not signed and the image is not a dev image: only dev references may be used unsigned")
)

// Load reads the reference at path and returns it with the outcome of its
// signature check. With keyPath it requires a valid signature: an unsigned
// or badly signed document yields a FAIL check (the verdict is NOT
// TRUSTED) and no document. Without a key, a DSSE envelope is an input
// error wrapping ErrNoKey (its content is never used unverified); a plain
// document is used with a SKIPPED check when it describes a dev image, and
// yields a FAIL check (Cause ErrUnsignedRelease) otherwise.
func Load(path, keyPath string) (*refvalues.Document, verify.Check, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, verify.Check{Name: verify.CheckReference}, fmt.Errorf("%w: reference values: %v", ErrInput, err)
	}
	var key *Key
	if keyPath != "" {
		if key, err = ReadKey(keyPath); err != nil {
			return nil, verify.Check{Name: verify.CheckReference}, err
		}
	}
	return Decode(path, raw, key)
}

// Key is a publisher's public key, read once and parsed on first use, for
// checking many documents.
type Key struct {
	path string
	pem  []byte
	once sync.Once
	pub  crypto.PublicKey
	err  error
}

// ReadKey reads the public key PEM at path; errors wrap ErrInput. It is
// parsed when a signed document is first checked with it.
func ReadKey(path string) (*Key, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: reference key: %v", ErrInput, err)
	}
	return &Key{path: path, pem: pem}, nil
}

func (k *Key) public() (crypto.PublicKey, error) {
	k.once.Do(func() {
		k.pub, k.err = signing.ParsePublicKey(k.pem)
		if k.err != nil {
			k.err = fmt.Errorf("%w: reference key %s: %v", ErrInput, k.path, k.err)
		}
	})
	return k.pub, k.err
}

// Decode is Load of a document already read (raw, from path, which names
// it in reasons) with key, nil for none.
func Decode(path string, raw []byte, key *Key) (*refvalues.Document, verify.Check, error) {
	chk := verify.Check{Name: verify.CheckReference}
	env := IsEnvelope(raw)
	if key == nil {
		if env {
			return nil, chk, fmt.Errorf("%w: %s is %w", ErrInput, path, ErrNoKey)
		}
		doc, err := refvalues.Decode(bytes.NewReader(raw))
		if err != nil {
			return nil, chk, fmt.Errorf("%w: %s: %v", ErrInput, path, err)
		}
		if !doc.Image.Dev {
			chk.Status, chk.Cause = verify.Fail, ErrUnsignedRelease
			chk.Reason = fmt.Sprintf("%s (image %q): %v", path, doc.Image.Name, ErrUnsignedRelease)
			return nil, chk, nil
		}
		chk.Status, chk.Reason = verify.Skipped, "no reference key given: the reference document is trusted as read"
		return doc, chk, nil
	}
	chk.Status = verify.Fail
	if !env {
		chk.Cause = ErrUnsigned
		chk.Reason = fmt.Sprintf("%s: %v", path, ErrUnsigned)
		return nil, chk, nil
	}
	pub, err := key.public()
	if err != nil {
		return nil, chk, err
	}
	docRaw, err := signing.VerifyKey(raw, pub)
	if err != nil {
		chk.Reason = fmt.Sprintf("%s: signature check with %s failed: %v", path, key.path, err)
		return nil, chk, nil
	}
	doc, err := refvalues.Decode(bytes.NewReader(docRaw))
	if err != nil {
		chk.Reason = fmt.Sprintf("%s: signed content is not a reference document: %v", path, err)
		return nil, chk, nil
	}
	chk.Status, chk.Reason = verify.Pass, "signed by "+key.path
	return doc, chk, nil
}

type envelope struct {
	PayloadType string            `json:"payloadType"`
	Payload     string            `json:"payload"`
	Signatures  []json.RawMessage `json:"signatures"`
}

// IsEnvelope reports whether raw is a DSSE envelope.
func IsEnvelope(raw []byte) bool {
	var e envelope
	return json.Unmarshal(raw, &e) == nil && e.PayloadType != "" && e.Payload != ""
}
