package refvalues

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/register"
)

func TestRoundTripAndStrictDecode(t *testing.T) {
	d := &Document{Schema: Schema, Image: Image{Name: "img", Version: "1"}, Events: map[string][]Event{}, Source: "builder"}
	d.Registers.Set(register.MRTD, bytes.Repeat([]byte{1}, 48))
	d.Registers.Set(register.RTMR0, nil)
	d.Reasons = map[string]string{"rtmr0": "no ACPI digests"}
	b, err := d.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"rtmr0": null`)) {
		t.Fatalf("unknown register is not null:\n%s", b)
	}
	got, err := Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got.Registers.Get(register.MRTD) == nil || got.Registers.Get(register.RTMR0) != nil || got.Reasons["rtmr0"] == "" {
		t.Fatalf("round trip: %+v", got.Registers)
	}
	for _, tc := range []struct{ doc, want string }{
		{strings.Replace(string(b), Schema, "other/v9", 1), "not supported"},
		{strings.Replace(string(b), `"source"`, `"extra": 1, "source"`, 1), "unknown field"},
		{strings.Replace(string(b), strings.Repeat("01", 48), "0102", 1), "96 hex digits"},
		{string(b) + `{"schema": "other"}`, "trailing data"},
	} {
		if _, err := Decode(strings.NewReader(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
}

func TestTDValuesAndRegisterBytes(t *testing.T) {
	td := TD{Attributes: "0000000010000000", XFAM: "e702060000000000", MRSEAM: strings.Repeat("ab", 48)}
	v, err := td.Values()
	if err != nil || len(v.Attributes) != 8 || len(v.XFAM) != 8 || len(v.MRSEAM) != 48 || v.MinTEETCBSVN != nil {
		t.Fatalf("Values: %+v, %v", v, err)
	}
	td.MinTEETCBSVN = "0102"
	if _, err := td.Values(); err == nil || !strings.Contains(err.Error(), "td.min_tee_tcb_svn must be 32 hex digits") {
		t.Errorf("short min_tee_tcb_svn: %v", err)
	}
	var r Registers
	r.Set(register.RTMR1, bytes.Repeat([]byte{0x11}, 48))
	if b, err := r.Bytes(register.RTMR1); err != nil || !bytes.Equal(b, bytes.Repeat([]byte{0x11}, 48)) {
		t.Errorf("Bytes(RTMR1) = %x, %v", b, err)
	}
	if b, err := r.Bytes(register.RTMR2); b != nil || err != nil {
		t.Errorf("Bytes of an unknown register = %x, %v", b, err)
	}
}

// Event digests are hex or explicitly NotPinned, never "" (what builders
// before issue 12 wrote for unpredictable events); accepted sets decode
// strictly.
func TestEventDigestsAndAcceptedSet(t *testing.T) {
	d := &Document{Schema: Schema, Image: Image{Name: "img", Version: "1"}, Source: "builder", Events: map[string][]Event{
		"rtmr0": {{Type: "EV_PLATFORM_CONFIG_FLAGS", Description: "ACPI DATA etc/acpi/tables", Digest: NotPinned}, {Type: "EV_SEPARATOR", Description: "separator", Digest: strings.Repeat("39", 48)}},
	}}
	d.Accepted = &Accepted{RTMR0: []AcceptedValue{{Name: "tcg-2G-2cpu", Platform: "p", Value: strings.Repeat("ab", 48),
		Events: []Event{{Type: "EV_SEPARATOR", Description: "sep", Digest: strings.Repeat("3a", 48)}}, Source: "recorded"}}}
	b, err := d.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got.Events["rtmr0"][0].Pinned() || !got.Events["rtmr0"][1].Pinned() || got.Accepted.RTMR0[0].Name != "tcg-2G-2cpu" {
		t.Fatalf("round trip: %+v %+v", got.Events, got.Accepted)
	}
	for _, tc := range []struct{ old, new, want string }{
		{`"digest": "not-pinned"`, `"digest": ""`, "rebuild the reference values"},
		{`"name": "tcg-2G-2cpu"`, `"name": ""`, "has no name"},
		{`"value": "` + strings.Repeat("ab", 48), `"value": "ab`, "accepted.rtmr0[0].value must be 96 hex digits"},
		{`"source": "recorded"`, `"source": "recorded", "extra": 1`, "unknown field"},
		{`"digest": "` + strings.Repeat("3a", 48), `"digest": "not-pinned`, "accepted.rtmr0[0].events[0] (\"sep\") is not pinned"},
	} {
		doc := strings.Replace(string(b), tc.old, tc.new, 1)
		if doc == string(b) {
			t.Fatalf("%q not in the document", tc.old)
		}
		if _, err := Decode(strings.NewReader(doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.new, err, tc.want)
		}
	}
	if _, err := (TD{MRConfigID: "01"}).Values(); err == nil || !strings.Contains(err.Error(), "td.mrconfigid") {
		t.Errorf("short mrconfigid: %v", err)
	}
	if v, err := (TD{}).Values(); err != nil || len(v.MROwner) != 48 {
		t.Errorf("owner fields default to zero: %x %v", v.MROwner, err)
	}
}
