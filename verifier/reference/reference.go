// Package reference loads a reference-values document for verification:
// plain JSON, or an in-toto statement in a DSSE envelope whose signature is
// checked with the publisher's key.
package reference

import (
	"bytes"
	"encoding/base64"
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
	// ErrNoKey: the document is signed but no key was given, so its
	// signature is not checked (SKIPPED).
	ErrNoKey = errors.New("signed (DSSE envelope) but no reference key was given")
	// ErrUnsigned: a key was given but the document is not a DSSE envelope.
	ErrUnsigned = errors.New("the reference values are not signed (no DSSE envelope) but a reference key was given")
)

// Load reads the reference at path and returns it with the outcome of its
// signature check. With keyPath it requires a valid signature: an unsigned
// or badly signed document yields a FAIL check (the verdict is NOT
// TRUSTED) and no document. Without a key the check is SKIPPED, and a
// signed envelope's content is used unverified (Cause ErrNoKey).
func Load(path, keyPath string) (*refvalues.Document, verify.Check, error) {
	chk := verify.Check{Name: verify.CheckReference}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, chk, fmt.Errorf("%w: reference values: %v", ErrInput, err)
	}
	env := isEnvelope(raw)
	if keyPath == "" {
		if env {
			payload, err := envelopeDocument(raw)
			if err != nil {
				return nil, chk, fmt.Errorf("%w: %s: %v", ErrInput, path, err)
			}
			raw = payload
		}
		doc, err := refvalues.Decode(bytes.NewReader(raw))
		if err != nil {
			return nil, chk, fmt.Errorf("%w: %s: %v", ErrInput, path, err)
		}
		chk.Status, chk.Reason = verify.Skipped, "no reference key given: the reference document is trusted as read"
		if env {
			chk.Cause = ErrNoKey
			chk.Reason = fmt.Sprintf("%s is %v: its signature is not checked", path, ErrNoKey)
		}
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

func isEnvelope(raw []byte) bool {
	var e envelope
	return json.Unmarshal(raw, &e) == nil && e.PayloadType != "" && e.Payload != ""
}

// envelopeDocument extracts the predicate of the in-toto statement inside
// an envelope without checking signatures.
func envelopeDocument(raw []byte) ([]byte, error) {
	var e envelope
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, err
	}
	p, err := base64.StdEncoding.DecodeString(e.Payload)
	if err != nil {
		return nil, fmt.Errorf("DSSE payload: %v", err)
	}
	var st struct {
		Predicate json.RawMessage `json:"predicate"`
	}
	if err := json.Unmarshal(p, &st); err != nil || len(st.Predicate) == 0 {
		return nil, errors.New("DSSE payload is not an in-toto statement with a predicate")
	}
	return st.Predicate, nil
}
