package canonjson_test

import (
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/canonjson"
)

func TestDecodeStrict(t *testing.T) {
	type doc struct {
		A int `json:"a"`
	}
	for _, tc := range []struct{ in, err string }{
		{"{\"a\": 1}\n", ""},
		{"  {\"a\": 1}  \n\t", ""},
		{`{"a": 1, "b": 2}`, `unknown field "b"`},
		{`{"a": 1}{"a": 2}`, "trailing data"},
		{`{"a": 1}}`, "trailing data"},
		{`{"a": 1} x`, "trailing data"},
		{`{"a": 1`, "unexpected EOF"},
		{``, "EOF"},
	} {
		var d doc
		err := canonjson.Decode(strings.NewReader(tc.in), &d)
		if tc.err == "" && (err != nil || d.A != 1) {
			t.Errorf("%q: %v, a=%d", tc.in, err, d.A)
		}
		if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
		}
	}
}
