package canonjson_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/tdforge/tdforge/internal/canonjson"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
)

func TestMarshalLayout(t *testing.T) {
	type inner struct {
		Z string `json:"z"`
		A int    `json:"a,omitempty"`
	}
	v := struct {
		Second string            `json:"second"`
		First  []inner           `json:"first"`
		Map    map[string]string `json:"map"`
		Empty  []string          `json:"empty"`
		Nil    []string          `json:"nil"`
	}{
		Second: `<a href="x">&'é'</a>` + "\u2028\t",
		First:  []inner{{Z: "z"}, {Z: "y", A: 2}},
		Map:    map[string]string{"b": "2", "a": "1", "B": "0"},
		Empty:  []string{},
	}
	got, err := canonjson.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	// Fields in declaration order, map keys sorted, HTML characters kept as
	// they are (only the JSON-mandated escapes and U+2028), two-space indent,
	// one trailing newline.
	want := `{
  "second": "<a href=\"x\">&'é'</a>\u2028\t",
  "first": [
    {
      "z": "z"
    },
    {
      "z": "y",
      "a": 2
    }
  ],
  "map": {
    "B": "0",
    "a": "1",
    "b": "2"
  },
  "empty": [],
  "nil": null
}
`
	if string(got) != want {
		t.Fatalf("Marshal:\n%s\nwant:\n%s", got, want)
	}
	again, _ := canonjson.Marshal(v)
	if !bytes.Equal(got, again) {
		t.Fatal("two encodings of the same value differ")
	}
	var w bytes.Buffer
	if err := canonjson.Encode(&w, v); err != nil || w.String() != want {
		t.Fatalf("Encode: %v\n%s", err, w.String())
	}
}

func TestMarshalError(t *testing.T) {
	if _, err := canonjson.Marshal(map[string]any{"f": func() {}}); err == nil {
		t.Fatal("a function value encoded")
	}
	var w bytes.Buffer
	if err := canonjson.Encode(&w, func() {}); err == nil || w.Len() != 0 {
		t.Fatalf("Encode of a function: err %v, wrote %q", err, w.String())
	}
}

// TestPublishedDocument re-encodes the committed reference values of the
// dev image: the bytes must be exactly those the earlier per-package
// encoders wrote.
func TestPublishedDocument(t *testing.T) {
	path := filepath.Join("..", "..", "reference-values", "tdforge-dev.json")
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d, err := refvalues.Decode(bytes.NewReader(want))
	if err != nil {
		t.Fatal(err)
	}
	got, err := canonjson.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("re-encoding %s changed its bytes", path)
	}
	// The same document through the generic decoder: object keys come back
	// sorted, so only the layout is comparable, not the order.
	var generic any
	if err := json.Unmarshal(want, &generic); err != nil {
		t.Fatal(err)
	}
	g, err := canonjson.Marshal(generic)
	if err != nil {
		t.Fatal(err)
	}
	if len(g) != len(want) || g[len(g)-1] != '\n' || g[len(g)-2] == '\n' {
		t.Errorf("generic re-encoding has a different layout: %d bytes, want %d", len(g), len(want))
	}
}

func TestReindent(t *testing.T) {
	// protojson-style output with unstable whitespace.
	for _, in := range []string{
		`{"policy":{"rtmrs":["AA==",""],"xfam":"5xgGAAAAAAA="}}`,
		`{"policy": {"rtmrs":  ["AA==", ""], "xfam":"5xgGAAAAAAA="}}`,
		"\n {\"policy\" :{\"rtmrs\":[\"AA==\",\n\"\"],\"xfam\":\"5xgGAAAAAAA=\"}}",
	} {
		got, err := canonjson.Reindent([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		want := "{\n  \"policy\": {\n    \"rtmrs\": [\n      \"AA==\",\n      \"\"\n    ],\n    \"xfam\": \"5xgGAAAAAAA=\"\n  }\n}\n"
		if string(got) != want {
			t.Errorf("Reindent(%q) =\n%s\nwant:\n%s", in, got, want)
		}
	}
	if _, err := canonjson.Reindent([]byte(`{"a":`)); err == nil {
		t.Error("truncated JSON reindented")
	}
	committed := filepath.Join("..", "..", "reference-values", "tdforge-dev.checkconfig.json")
	b, err := os.ReadFile(committed)
	if err != nil {
		t.Fatal(err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		t.Fatal(err)
	}
	if got, err := canonjson.Reindent(compact.Bytes()); err != nil || !bytes.Equal(got, b) {
		t.Errorf("Reindent of the compacted %s does not give it back (%v)", committed, err)
	}
}

func TestJCS(t *testing.T) {
	for _, c := range []struct {
		in   any
		want string
	}{
		// The vector kbs.Canonical was tested with before it moved here.
		{map[string]any{"a": []any{1.0, true, nil, "\x01"}}, `{"a":[1,true,null,"\u0001"]}`},
		// Trustee's runtime data: HTML characters and U+2028 as they are,
		// only the mandatory escapes; struct fields sorted like map keys.
		{map[string]any{"nonce": "n<&>\"\n\u2028", "tee-pubkey": struct {
			Y   string `json:"y"`
			Kty string `json:"kty"`
		}{"yy", "EC"}}, `{"nonce":"n<&>\"\n` + "\u2028" + `","tee-pubkey":{"kty":"EC","y":"yy"}}`},
		// RFC 8785 section 3.2.3: keys in UTF-16 code-unit order (U+1F600
		// is a surrogate pair, so it sorts before U+FB33).
		{map[string]any{"\ufb33": 3, "\U0001F600": 2, "\u20ac": 1, "1": 0}, "{\"1\":0,\"\u20ac\":1,\"\U0001F600\":2,\"\ufb33\":3}"},
		// Numbers in ECMAScript form (RFC 8785 section 3.2.2.3).
		{[]any{1.5, 1e21, 1e-7, -0.0, 65537}, `[1.5,1e+21,1e-7,0,65537]`},
	} {
		got, err := canonjson.JCS(c.in)
		if err != nil || string(got) != c.want {
			t.Errorf("JCS(%#v) = %s, %v; want %s", c.in, got, err, c.want)
		}
	}
	if _, err := canonjson.JCS(map[string]any{"f": func() {}}); err == nil {
		t.Error("a function value encoded")
	}
}
