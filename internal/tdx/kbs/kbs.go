// Package kbs is Trustee's Key Broker Service attestation protocol (RCAR:
// Request, Challenge, Attestation, Response; confidential-containers/trustee
// kbs/docs/kbs_attestation_protocol.md) for TDX: its wire types, the
// REPORTDATA binding both ends compute, and the client a TD runs to fetch
// a resource (Client.Fetch). The broker side is verifier/kbs.
//
//	POST /kbs/v0/auth                       Request   -> Challenge + cookie kbs-session-id
//	POST /kbs/v0/attest                     Attestation (cookie) -> {"token": JWT}
//	GET  /kbs/v0/resource/<repo>/<type>/<tag> (cookie) -> JWE (flattened JSON) to tee-pubkey
//
// REPORTDATA is Trustee's: the SHA-384 (or the hash the challenge selects)
// of the RFC 8785 canonical JSON of {"additional-evidence", "nonce",
// "tee-pubkey"}, zero-padded to 64 bytes.
package kbs

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"hash"
	"strings"

	"github.com/tdforge/tdforge/internal/canonjson"
)

// Protocol constants.
const (
	// Version is the protocol version the client announces (Trustee's KBS
	// accepts exactly its own; 0.4.0 is the one whose runtime-data hash
	// covers "additional-evidence").
	Version = "0.4.0"
	// TEE is the "tee" of a TDX guest.
	TEE = "tdx"
	// Cookie is the session cookie's name.
	Cookie = "kbs-session-id"
	// Paths.
	PathAuth     = "/kbs/v0/auth"
	PathAttest   = "/kbs/v0/attest"
	PathResource = "/kbs/v0/resource/"
	// KeyAlg and ContentEnc are the JWE algorithms for an EC tee-pubkey
	// (Trustee's choice for EC keys); RSA keys use RSAOAEP256.
	KeyAlg     = "ECDH-ES+A256KW"
	RSAOAEP256 = "RSA-OAEP-256"
	ContentEnc = "A256GCM"
	// DefaultHash is the runtime-data hash when the challenge selects none.
	DefaultHash = "sha384"
	// ErrorTypePrefix starts an ErrorInfo type, as Trustee's do.
	ErrorTypePrefix = "https://github.com/confidential-containers/kbs/errors/"
)

// Request is the body of POST /kbs/v0/auth.
type Request struct {
	Version     string          `json:"version"`
	TEE         string          `json:"tee"`
	ExtraParams json.RawMessage `json:"extra-params"`
}

// Challenge answers a Request. ExtraParams may be an object carrying
// "selected-hash-algorithm", or (Trustee) an empty string.
type Challenge struct {
	Nonce       string          `json:"nonce"`
	ExtraParams json.RawMessage `json:"extra-params"`
}

// Attestation is the body of POST /kbs/v0/attest.
type Attestation struct {
	InitData    json.RawMessage   `json:"init-data,omitempty"`
	RuntimeData RuntimeData       `json:"runtime-data"`
	TEEEvidence CompositeEvidence `json:"tee-evidence"`
}

// RuntimeData is what REPORTDATA binds: the challenge's nonce and the TEE's
// ephemeral public key.
type RuntimeData struct {
	Nonce     string `json:"nonce"`
	TEEPubKey JWK    `json:"tee-pubkey"`
}

// JWK is a tee-pubkey: EC (crv, x, y) or RSA (n, e), all base64url.
type JWK struct {
	Kty string `json:"kty"`
	Alg string `json:"alg,omitempty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
}

// CompositeEvidence is tee-evidence: the TDX evidence (TDXEvidence as JSON)
// and the additional devices' evidence as a JSON string ("" for none).
type CompositeEvidence struct {
	PrimaryEvidence    json.RawMessage `json:"primary_evidence"`
	AdditionalEvidence string          `json:"additional_evidence"`
}

// TDXEvidence is the primary evidence of a TD: Trustee's TDX fields (quote,
// cc_eventlog; standard base64) and tdforge's CCEL ACPI table, RTMR3
// runtime log and the reason for a missing CCEL.
type TDXEvidence struct {
	Quote      []byte `json:"quote"`
	CCEventLog []byte `json:"cc_eventlog,omitempty"`
	CCELTable  []byte `json:"ccel_table,omitempty"`
	RuntimeLog []byte `json:"runtime_log,omitempty"`
	CCELAbsent string `json:"ccel_absent,omitempty"`
}

// Token answers a successful attestation.
type Token struct {
	Token string `json:"token"`
}

// ErrorInfo is the body of a refusal (Trustee's ErrorInformation).
type ErrorInfo struct {
	Type   string `json:"type"`
	Detail string `json:"detail"`
}

// Hash returns the runtime-data hash of a name (sha256, sha384, sha512).
func Hash(name string) (func() hash.Hash, error) {
	switch strings.ToLower(name) {
	case "sha256":
		return sha256.New, nil
	case "sha384":
		return sha512.New384, nil
	case "sha512":
		return sha512.New, nil
	}
	return nil, fmt.Errorf("runtime-data hash %q is not supported (want sha256, sha384 or sha512)", name)
}

// SelectedHash reads "selected-hash-algorithm" from a challenge's
// extra-params; DefaultHash when absent (or extra-params is not an object).
func SelectedHash(extra json.RawMessage) string {
	var m map[string]json.RawMessage
	if json.Unmarshal(extra, &m) != nil {
		return DefaultHash
	}
	var s string
	if json.Unmarshal(m["selected-hash-algorithm"], &s) != nil || s == "" {
		return DefaultHash
	}
	return strings.ToLower(s)
}

// ReportData is the REPORTDATA that binds rd and the additional evidence
// string: hashName(canonical JSON of {"additional-evidence", "nonce",
// "tee-pubkey"}) followed by zeros.
func ReportData(rd RuntimeData, additional, hashName string) ([64]byte, error) {
	var out [64]byte
	h, err := Hash(hashName)
	if err != nil {
		return out, err
	}
	c, err := canonjson.JCS(map[string]any{"additional-evidence": additional, "nonce": rd.Nonce, "tee-pubkey": rd.TEEPubKey})
	if err != nil {
		return out, err
	}
	hh := h()
	hh.Write(c)
	copy(out[:], hh.Sum(nil))
	return out, nil
}
