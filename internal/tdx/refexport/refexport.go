// Package refexport renders a reference-values document in the formats other
// verifiers consume: a go-tdx-guest checkconfig policy, a Trustee RVPS
// "sample" message and a flashbots-style measurements list.
package refexport

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	ccpb "github.com/google/go-tdx-guest/proto/checkconfig"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tdforge/tdforge/internal/canonjson"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/register"
)

func registers(d *refvalues.Document) (map[register.Register][]byte, error) {
	out := map[register.Register][]byte{}
	for _, reg := range register.All {
		b, err := d.Registers.Bytes(reg)
		if err != nil {
			return nil, err
		}
		if b != nil {
			out[reg] = b
		}
	}
	if out[register.MRTD] == nil {
		return nil, errors.New("reference values: MRTD is unknown; no export can pin the firmware")
	}
	return out, nil
}

// CheckConfig renders a go-tdx-guest checkconfig.Config (protojson) that
// pins MRTD, the known RTMRs (unknown ones are left empty, which the
// validator skips), TD attributes, XFAM and, when present, MRSEAM and the
// minimum TEE TCB SVN.
func CheckConfig(d *refvalues.Document) ([]byte, error) {
	regs, err := registers(d)
	if err != nil {
		return nil, err
	}
	body := &ccpb.TDQuoteBodyPolicy{MrTd: regs[register.MRTD]}
	for _, reg := range register.RTMRs {
		body.Rtmrs = append(body.Rtmrs, regs[reg]) // nil: not checked
	}
	td, err := d.TD.Values()
	if err != nil {
		return nil, err
	}
	body.TdAttributes, body.Xfam, body.MrSeam, body.MinimumTeeTcbSvn = td.Attributes, td.XFAM, td.MRSEAM, td.MinTEETCBSVN
	cfg := &ccpb.Config{Policy: &ccpb.Policy{TdQuoteBodyPolicy: body}}
	b, err := protojson.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	// protojson deliberately varies its whitespace between builds; the
	// published file must be byte-stable, so re-indent it.
	return canonjson.Reindent(b)
}

// RVPSMessage is Trustee's RVPS registration message.
type RVPSMessage struct {
	Version string `json:"version"`
	Type    string `json:"type"`
	Payload string `json:"payload"` // base64 of the sample provenance JSON
}

// RVPSSample renders a Trustee RVPS "sample" message: version 0.1.0, type
// "sample", payload the standard base64 of {name: [values]} with the names
// Trustee's TDX policy queries (mr_td, rtmr_0..rtmr_3, and mr_seam, xfam
// when known). Unknown registers are omitted.
func RVPSSample(d *refvalues.Document) ([]byte, error) {
	regs, err := registers(d)
	if err != nil {
		return nil, err
	}
	prov := map[string][]string{"mr_td": {hex.EncodeToString(regs[register.MRTD])}}
	for _, reg := range register.RTMRs {
		if regs[reg] != nil {
			prov[fmt.Sprintf("rtmr_%d", reg.RTMRIndex())] = []string{hex.EncodeToString(regs[reg])}
		}
	}
	if d.TD.MRSEAM != "" {
		prov["mr_seam"] = []string{d.TD.MRSEAM}
	}
	if d.TD.XFAM != "" {
		prov["xfam"] = []string{d.TD.XFAM}
	}
	p, err := json.Marshal(prov)
	if err != nil {
		return nil, err
	}
	return canonjson.Marshal(RVPSMessage{Version: "0.1.0", Type: "sample", Payload: base64.StdEncoding.EncodeToString(p)})
}

// Measurement is one entry of a flashbots-style measurements list.
type Measurement struct {
	MeasurementID   string                 `json:"measurement_id"`
	AttestationType string                 `json:"attestation_type"`
	Measurements    map[string]Expectation `json:"measurements"`
}

// Expectation is one register's expected value.
type Expectation struct {
	Expected string `json:"expected"`
}

// Flashbots renders [{measurement_id, attestation_type: "dcap-tdx",
// measurements: {"0".."4": {expected}}}] with 0 = MRTD and 1..4 =
// RTMR0..3; unknown registers are omitted.
func Flashbots(d *refvalues.Document) ([]byte, error) {
	regs, err := registers(d)
	if err != nil {
		return nil, err
	}
	id := d.Image.Name
	if d.Image.Version != "" {
		id += "-" + d.Image.Version
	}
	if d.Platform.Name != "" {
		id += "@" + d.Platform.Name
	}
	if id == "" {
		return nil, errors.New("reference values: image name is empty; it names the measurement")
	}
	m := Measurement{MeasurementID: id, AttestationType: "dcap-tdx", Measurements: map[string]Expectation{}}
	for _, reg := range register.All {
		if regs[reg] != nil {
			m.Measurements[fmt.Sprint(reg.CCMRIndex())] = Expectation{Expected: hex.EncodeToString(regs[reg])}
		}
	}
	return canonjson.Marshal([]Measurement{m})
}
