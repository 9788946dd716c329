// Package attestation defines the wire contract between the agent and its
// clients: the /v1/attestation response, the REPORTDATA binding and the
// RA-TLS certificate extension.
package attestation

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/asn1"
	"fmt"
)

// ReportDataDomain is the domain-separation prefix of REPORTDATA.
const ReportDataDomain = "tdforge/v1/attest"

// Nonce length bounds (bytes).
const (
	MinNonce = 16
	MaxNonce = 64
)

// SPKIHash is SHA-256 of a certificate's DER SubjectPublicKeyInfo.
func SPKIHash(spkiDER []byte) [32]byte { return sha256.Sum256(spkiDER) }

// ReportData computes REPORTDATA = SHA-512("tdforge/v1/attest" || nonce ||
// SHA-256(SPKI)). The quote's 64-byte REPORTDATA field is exactly this.
func ReportData(nonce []byte, spkiHash [32]byte) ([64]byte, error) {
	if len(nonce) < MinNonce || len(nonce) > MaxNonce {
		return [64]byte{}, fmt.Errorf("nonce must be %d..%d bytes, got %d", MinNonce, MaxNonce, len(nonce))
	}
	h := sha512.New()
	h.Write([]byte(ReportDataDomain))
	h.Write(nonce)
	h.Write(spkiHash[:])
	var out [64]byte
	copy(out[:], h.Sum(nil))
	return out, nil
}

// Response is the JSON body of GET /v1/attestation?nonce=<hex>.
type Response struct {
	Version int    `json:"version"` // 1
	Quote   []byte `json:"quote"`   // raw TDX quote (base64 in JSON)
	// QuoteProvider names the backend: "configfs-tsm", "tdx-guest-device" or "simulator".
	QuoteProvider string         `json:"quote_provider"`
	Simulated     bool           `json:"simulated"`
	ReportData    ReportDataInfo `json:"report_data"`
	// RuntimeLog is the RTMR3 runtime event log (TCG CEL bytes) and its JSON rendering.
	RuntimeLog     []byte `json:"runtime_log"`
	RuntimeLogJSON any    `json:"runtime_log_json"`
	// CCEL is the firmware event log and its ACPI table, when present.
	CCEL      []byte `json:"ccel,omitempty"`
	CCELTable []byte `json:"ccel_table,omitempty"`
	// CCELAbsent says why CCEL is empty (for example "no CCEL ACPI table:
	// /sys/firmware/acpi/tables/CCEL does not exist"); empty when CCEL is
	// served. Verifiers report it.
	CCELAbsent string `json:"ccel_absent,omitempty"`
	Image      Image  `json:"image"`
	// ReferenceURL says where the image's reference values are published.
	ReferenceURL string `json:"reference_url"`
	// AttestationService is the attestation service the image's
	// configuration names for its web UI (measured in the config event);
	// empty when none.
	AttestationService string `json:"attestation_service,omitempty"`
	// State is the agent's state volume: "mounted", or "locked (reason)"
	// / "failed (reason)"; empty when the image has none.
	State string `json:"state,omitempty"`
	// StateGeneration counts the committed writes to the agent's state
	// (conversations) when the volume is open. TDX has no monotonic
	// counter, so the host can replay an older copy of the volume; a
	// generation below one seen before reveals that (verifier attest
	// --state-floor, the web UI). It travels over the RA-TLS channel, not
	// in the quote.
	StateGeneration *uint64 `json:"state_generation,omitempty"`
	Timestamp       string  `json:"timestamp"` // RFC 3339
}

// ReportDataInfo documents how REPORTDATA was formed.
type ReportDataInfo struct {
	Scheme   string `json:"scheme"`    // "SHA-512(\"tdforge/v1/attest\" || nonce || SHA-256(TLS SPKI))"
	Nonce    string `json:"nonce"`     // hex
	SPKIHash string `json:"spki_hash"` // hex SHA-256 of the TLS certificate's SubjectPublicKeyInfo
	Value    string `json:"value"`     // hex, 64 bytes
}

// Scheme is the human description placed in ReportData.Scheme.
const Scheme = `SHA-512("tdforge/v1/attest" || nonce || SHA-256(TLS SubjectPublicKeyInfo))`

// Image is the image identity from the boot policy.
type Image struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Dev       bool   `json:"dev"`
	Simulated bool   `json:"simulated"`
}

// RATLSExtensionOID is the X.509 extension carrying evidence in the agent's
// self-signed certificate (a private-enterprise-style arc for tdforge).
var RATLSExtensionOID = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 59999, 1, 1}

// RATLSEvidence is the extension's value: DER SEQUENCE of these fields. The
// quote's REPORTDATA is ReportData(Nonce, SPKIHash(cert SPKI)), with the
// nonce chosen by the agent at certificate creation (a client that needs
// freshness uses /v1/attestation with its own nonce).
type RATLSEvidence struct {
	Version    int
	Nonce      []byte
	Quote      []byte
	RuntimeLog []byte
	CCEL       []byte
	CCELTable  []byte
}

// Agent API paths.
const (
	PathAttestation = "/v1/attestation"
	PathTEEQuote    = "/api/v1/tee/quote"
	PathHealth      = "/healthz"
	PathReady       = "/readyz"
)
