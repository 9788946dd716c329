package refexport

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	ccpb "github.com/google/go-tdx-guest/proto/checkconfig"
	"github.com/google/go-tdx-guest/validate"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/register"
)

func doc() *refvalues.Document {
	d := &refvalues.Document{Schema: refvalues.Schema, Image: refvalues.Image{Name: "chat", Version: "1.0"}, Platform: refvalues.Platform{Name: "qemu-10.2-tdx-edk2-2025-08"}}
	d.Registers.Set(register.MRTD, bytes.Repeat([]byte{0xaa}, 48))
	d.Registers.Set(register.RTMR1, bytes.Repeat([]byte{0x11}, 48))
	d.Registers.Set(register.RTMR2, bytes.Repeat([]byte{0x22}, 48))
	d.Registers.Set(register.RTMR3, bytes.Repeat([]byte{0x33}, 48))
	d.Reasons = map[string]string{"rtmr0": "ACPI unknown"}
	d.TD = refvalues.TD{Attributes: "0000000010000000", XFAM: "e702060000000000"}
	return d
}

func TestCheckConfig(t *testing.T) {
	b, err := CheckConfig(doc())
	if err != nil {
		t.Fatal(err)
	}
	var cfg ccpb.Config
	if err := protojson.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("not a checkconfig.Config: %v\n%s", err, b)
	}
	body := cfg.GetPolicy().GetTdQuoteBodyPolicy()
	if !bytes.Equal(body.GetMrTd(), bytes.Repeat([]byte{0xaa}, 48)) || len(body.GetRtmrs()) != 4 || len(body.GetRtmrs()[0]) != 0 || body.GetRtmrs()[3][0] != 0x33 {
		t.Errorf("policy %v", body)
	}
	if hex.EncodeToString(body.GetXfam()) != "e702060000000000" {
		t.Errorf("xfam %x", body.GetXfam())
	}
	// go-tdx-guest accepts it as validation options.
	if _, err := validate.PolicyToOptions(cfg.GetPolicy()); err != nil {
		t.Errorf("validate.PolicyToOptions: %v", err)
	}
}

func TestRVPSSample(t *testing.T) {
	b, err := RVPSSample(doc())
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Version string `json:"version"`
		Type    string `json:"type"`
		Payload string `json:"payload"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil || m.Type != "sample" || m.Version != "0.1.0" {
		t.Fatalf("message %s: %v", b, err)
	}
	raw, err := base64.StdEncoding.DecodeString(m.Payload)
	if err != nil {
		t.Fatalf("payload is not standard base64 (Trustee's sample extractor decodes it): %v", err)
	}
	var prov map[string][]string
	if err := json.Unmarshal(raw, &prov); err != nil {
		t.Fatal(err)
	}
	if prov["mr_td"][0] != strings.Repeat("aa", 48) || prov["rtmr_3"][0] != strings.Repeat("33", 48) {
		t.Errorf("provenance %v", prov)
	}
	if _, ok := prov["rtmr_0"]; ok {
		t.Error("unknown RTMR0 must be omitted")
	}
}

func TestFlashbots(t *testing.T) {
	b, err := Flashbots(doc())
	if err != nil {
		t.Fatal(err)
	}
	var list []struct {
		MeasurementID   string                       `json:"measurement_id"`
		AttestationType string                       `json:"attestation_type"`
		Measurements    map[string]map[string]string `json:"measurements"`
	}
	if err := json.Unmarshal(b, &list); err != nil || len(list) != 1 {
		t.Fatalf("%s: %v", b, err)
	}
	e := list[0]
	if e.AttestationType != "dcap-tdx" || e.MeasurementID != "chat-1.0@qemu-10.2-tdx-edk2-2025-08" {
		t.Errorf("entry %+v", e)
	}
	if e.Measurements["0"]["expected"] != strings.Repeat("aa", 48) || e.Measurements["4"]["expected"] != strings.Repeat("33", 48) {
		t.Errorf("measurements %v", e.Measurements)
	}
	if _, ok := e.Measurements["1"]; ok {
		t.Error("unknown RTMR0 must be omitted")
	}
}

func TestUnknownMRTDRefused(t *testing.T) {
	d := doc()
	d.Registers.MRTD = nil
	for name, f := range map[string]func(*refvalues.Document) ([]byte, error){"checkconfig": CheckConfig, "rvps": RVPSSample, "flashbots": Flashbots} {
		if _, err := f(d); err == nil || !strings.Contains(err.Error(), "MRTD") {
			t.Errorf("%s: %v", name, err)
		}
	}
	d = doc()
	d.TD.XFAM = "zz"
	if _, err := CheckConfig(d); err == nil || !strings.Contains(err.Error(), "td.xfam") {
		t.Errorf("bad xfam: %v", err)
	}
}

// protojson varies whitespace between builds on purpose; the published
// export must not (CI compares it byte for byte).
func TestCheckConfigIsByteStable(t *testing.T) {
	b, err := CheckConfig(doc())
	if err != nil {
		t.Fatal(err)
	}
	var canon bytes.Buffer
	if err := json.Indent(&canon, bytes.TrimSpace(b), "", "  "); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(append(canon.Bytes(), '\n'), b) {
		t.Fatalf("not canonical encoding/json indentation:\n%s", b)
	}
}
