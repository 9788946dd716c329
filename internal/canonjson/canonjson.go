// Package canonjson holds tdforge's two canonical JSON encodings.
//
// Marshal and Encode are the one encoder for the JSON documents tdforge
// publishes and hashes itself (boot policy, payload layout, reference
// values and their exports, measurement results, --json output): struct
// fields in declaration order, map keys sorted, no HTML escaping, two-space
// indent, one trailing newline. The same value always encodes to the same
// bytes. Use them for any document tdforge defines, and Decode to read one
// (unknown fields and trailing data are errors).
//
// JCS is RFC 8785 (the JSON Canonicalization Scheme): for hashes another
// party recomputes under that RFC, such as Trustee's KBS runtime data.
package canonjson

import (
	"bytes"
	"encoding/json"
	"io"

	"github.com/go-json-experiment/json/jsontext"
)

const indent = "  "

// Marshal returns the canonical encoding of v.
func Marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	if err := Encode(&b, v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Encode writes the canonical encoding of v to w (the commands' --json
// output uses it too). Nothing is written when v does not encode.
func Encode(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", indent)
	return enc.Encode(v)
}

// Reindent lays out an already encoded JSON document in the canonical
// indentation with a trailing newline, keeping its tokens (and their order)
// as they are. It is for encoders whose whitespace is not stable, such as
// protojson, which varies it between builds on purpose.
func Reindent(doc []byte) ([]byte, error) {
	var b bytes.Buffer
	if err := json.Indent(&b, doc, "", indent); err != nil {
		return nil, err
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}

// JCS returns the RFC 8785 form of v as encoding/json marshals it: object
// members sorted by their UTF-16 code units, no whitespace, minimal string
// escapes, numbers in ECMAScript form. The RFC's rules are jsontext's
// (the JSON v2 implementation the verifier already decodes with). Like
// encoding/json it writes invalid UTF-8 in a string as U+FFFD.
func JCS(v any) ([]byte, error) {
	doc, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	jv := jsontext.Value(doc)
	if err := jv.Canonicalize(); err != nil {
		return nil, err
	}
	return jv, nil
}
