// Package reference loads a reference-values document for verification:
// an in-toto statement in a DSSE envelope whose signature is checked with
// the publisher's key, or, for dev images only, plain JSON.
package reference

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"

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
	chk := verify.Check{Name: verify.CheckReference}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, chk, fmt.Errorf("%w: reference values: %v", ErrInput, err)
	}
	env := IsEnvelope(raw)
	if keyPath == "" {
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
	pub, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, chk, fmt.Errorf("%w: reference key: %v", ErrInput, err)
	}
	chk.Status = verify.Fail
	if !env {
		chk.Cause = ErrUnsigned
		chk.Reason = fmt.Sprintf("%s: %v", path, ErrUnsigned)
		return nil, chk, nil
	}
	if _, err := signing.ParsePublicKey(pub); err != nil {
		return nil, chk, fmt.Errorf("%w: reference key %s: %v", ErrInput, keyPath, err)
	}
	docRaw, err := signing.Verify(raw, pub)
	if err != nil {
		chk.Reason = fmt.Sprintf("%s: signature check with %s failed: %v", path, keyPath, err)
		return nil, chk, nil
	}
	doc, err := refvalues.Decode(bytes.NewReader(docRaw))
	if err != nil {
		chk.Reason = fmt.Sprintf("%s: signed content is not a reference document: %v", path, err)
		return nil, chk, nil
	}
	chk.Status, chk.Reason = verify.Pass, "signed by "+keyPath
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
