// Package canonjson is tdforge's one encoder for the JSON documents it
// publishes and hashes (boot policy, payload layout, reference values and
// their exports, measurement results): struct fields in declaration order,
// map keys sorted, no HTML escaping, two-space indent, one trailing newline.
// The same value always encodes to the same bytes.
package canonjson

import (
	"bytes"
	"encoding/json"
	"io"
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
