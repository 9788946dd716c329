package service

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	jsonv2 "github.com/go-json-experiment/json"

	"github.com/tdforge/tdforge/verifier/nonce"
	"github.com/tdforge/tdforge/verifier/verify"
)

// TrusteeRequest is the body of POST /attestation: the request shape of
// Trustee's RESTful attestation service (confidential-containers/trustee,
// attestation-service/docs/restful-as.md), restricted to one TDX request.
type TrusteeRequest struct {
	VerificationRequests []TrusteeVerification `json:"verification_requests"`
	// PolicyIDs, if given, restrict the reference documents (by file name)
	// the evidence may match.
	PolicyIDs []string `json:"policy_ids,omitempty"`
}

// TrusteeVerification is one entry of verification_requests.
type TrusteeVerification struct {
	TEE string `json:"tee"` // "tdx"
	// Evidence is base64url (no padding) of the JSON TrusteeTDXEvidence.
	Evidence    string              `json:"evidence"`
	RuntimeData *TrusteeRuntimeData `json:"runtime_data,omitempty"`
	// RuntimeDataHashAlgorithm must be "sha512" (or absent): REPORTDATA is
	// SHA-512("tdforge/v1/attest" || nonce || SHA-256(TLS SPKI)).
	RuntimeDataHashAlgorithm string          `json:"runtime_data_hash_algorithm,omitempty"`
	InitData                 json.RawMessage `json:"init_data,omitempty"`
}

// TrusteeRuntimeData carries the nonce and TLS key binding, either raw
// (base64url of the 64-byte nonce followed by the 32-byte SPKI hash) or
// structured ({"nonce": HEX, "spki_hash": HEX}).
type TrusteeRuntimeData struct {
	Raw        *string `json:"raw,omitempty"`
	Structured *struct {
		Nonce    string `json:"nonce"`
		SPKIHash string `json:"spki_hash"`
	} `json:"structured,omitempty"`
}

// TrusteeTDXEvidence is the decoded evidence: Trustee's TDX fields (quote,
// cc_eventlog) plus tdforge's CCEL ACPI table and RTMR3 runtime log.
type TrusteeTDXEvidence struct {
	Quote      []byte `json:"quote"`
	CCEventLog []byte `json:"cc_eventlog,omitempty"`
	CCELTable  []byte `json:"ccel_table,omitempty"`
	RuntimeLog []byte `json:"runtime_log,omitempty"`
}

func (s *Service) handleTrustee(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req TrusteeRequest
	if e := s.decode(w, r, &req); e != nil {
		s.refuse(w, e)
		return
	}
	a, e := trusteeAppraisal(&req)
	if e != nil {
		s.refuse(w, e)
		return
	}
	out, e := s.run(r.Context(), a, start)
	if e != nil {
		s.refuse(w, e)
		return
	}
	// Trustee answers with the token itself.
	w.Header().Set("Content-Type", ContentJWT)
	w.Write([]byte(out.Token))
}

func trusteeAppraisal(req *TrusteeRequest) (*appraisal, *apiError) {
	if len(req.VerificationRequests) != 1 {
		return nil, badField("verification_requests", "want exactly one request (one TD), got %d", len(req.VerificationRequests))
	}
	v := req.VerificationRequests[0]
	const f = "verification_requests[0]."
	if v.TEE != "tdx" {
		return nil, badField(f+"tee", "%q is not supported: this service appraises \"tdx\" only", v.TEE)
	}
	if len(v.InitData) > 0 && string(v.InitData) != "null" {
		return nil, badField(f+"init_data", "not supported: tdforge TDs have no init data")
	}
	if alg := strings.ToLower(v.RuntimeDataHashAlgorithm); alg != "" && alg != "sha512" {
		return nil, badField(f+"runtime_data_hash_algorithm", "%q: want \"sha512\" (REPORTDATA = SHA-512(\"tdforge/v1/attest\" || nonce || SPKI hash))", v.RuntimeDataHashAlgorithm)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(v.Evidence, "="))
	if err != nil || len(raw) == 0 {
		return nil, badField(f+"evidence", "want base64url (no padding) of the TDX evidence JSON")
	}
	var ev TrusteeTDXEvidence
	if err := jsonv2.Unmarshal(raw, &ev); err != nil { // as decode: no duplicate members
		return nil, badField(f+"evidence", "the decoded evidence is not TDX evidence JSON {\"quote\": BASE64, \"cc_eventlog\": BASE64, ...}: %v", err)
	}
	a := &appraisal{
		ev:         verify.Evidence{Quote: ev.Quote, CCEL: ev.CCEventLog, CCELTable: ev.CCELTable, RuntimeLog: ev.RuntimeLog},
		policyIDs:  req.PolicyIDs,
		fieldQuote: f + "evidence.quote", fieldRD: f + "evidence.quote",
		fieldNonce: f + "runtime_data", fieldSPKI: f + "runtime_data",
	}
	switch rd := v.RuntimeData; {
	case rd == nil || (rd.Raw == nil && rd.Structured == nil):
		return nil, badField(f+"runtime_data", "missing: give the nonce from GET /v1/nonce and the TLS SPKI hash, raw or structured")
	case rd.Raw != nil && rd.Structured != nil:
		return nil, badField(f+"runtime_data", "raw and structured are exclusive")
	case rd.Raw != nil:
		b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(*rd.Raw, "="))
		if err != nil || len(b) != nonce.Size+32 {
			return nil, badField(f+"runtime_data.raw", "want base64url of %d bytes: the nonce (%d) then the SHA-256 of the TLS SPKI (32)", nonce.Size+32, nonce.Size)
		}
		a.nonceHex, a.spkiHex = hex.EncodeToString(b[:nonce.Size]), hex.EncodeToString(b[nonce.Size:])
		a.fieldNonce, a.fieldSPKI = f+"runtime_data.raw", f+"runtime_data.raw"
	default:
		a.nonceHex, a.spkiHex = rd.Structured.Nonce, rd.Structured.SPKIHash
		a.fieldNonce, a.fieldSPKI = f+"runtime_data.structured.nonce", f+"runtime_data.structured.spki_hash"
	}
	return a, nil
}
