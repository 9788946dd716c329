// Package refvalues defines the published reference-values document
// (schema "tdforge.reference-values/v1"): the golden MRTD and RTMR0..3 of one
// image, the events behind each register and the TD attribute expectations.
// The builder writes it; the verifier reads it.
package refvalues

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/tdforge/tdforge/internal/canonjson"
	"github.com/tdforge/tdforge/internal/tdx/register"
)

// Schema is the schema identifier of documents this package writes.
const Schema = "tdforge.reference-values/v1"

// Document is one image's reference values.
type Document struct {
	Schema    string             `json:"schema"`
	Image     Image              `json:"image"`
	Platform  Platform           `json:"platform"`
	Inputs    []Digest           `json:"inputs"`    // resolved inputs (firmware, kernel deb, payload sources)
	Artifacts []Digest           `json:"artifacts"` // build outputs (firmware, kernel, initrd, disk)
	Payloads  []Payload          `json:"payloads"`
	Registers Registers          `json:"registers"`
	Reasons   map[string]string  `json:"reasons,omitempty"` // register -> why it is null
	Events    map[string][]Event `json:"events"`            // register -> ordered events
	TD        TD                 `json:"td"`
	// Source marks how the document was made: "builder" (precomputed) or
	// "recorded" (pinned from a known-good quote by `verifier record`).
	Source string `json:"source"`
}

// Image is the image identity.
type Image struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Dev       bool   `json:"dev"`
	Simulated bool   `json:"simulated"`
	Cmdline   string `json:"cmdline,omitempty"`
	Memory    string `json:"memory,omitempty"` // e.g. "2G"
	CPUs      int    `json:"cpus,omitempty"`
}

// Platform is the platform profile used for RTMR0 and the variant rules.
type Platform struct {
	Name    string `json:"name"`
	QEMU    string `json:"qemu"`
	OVMF    string `json:"ovmf"`
	Version int    `json:"version"`
}

// Digest names one input or artifact by content.
type Digest struct {
	Name   string `json:"name"`
	Kind   string `json:"kind,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	SHA384 string `json:"sha384,omitempty"`
	Size   int64  `json:"size,omitempty"`
}

// Payload records one verity payload.
type Payload struct {
	Name       string `json:"name"`
	Partition  int    `json:"partition"`
	RootHash   string `json:"verity_root_hash"`
	Salt       string `json:"salt"`
	DataSize   uint64 `json:"data_size"`
	HashOffset uint64 `json:"hash_offset"`
}

// Registers holds lowercase hex register values under their register.Key;
// nil means unknown (see Document.Reasons).
type Registers struct {
	MRTD  *string `json:"mrtd"`
	RTMR0 *string `json:"rtmr0"`
	RTMR1 *string `json:"rtmr1"`
	RTMR2 *string `json:"rtmr2"`
	RTMR3 *string `json:"rtmr3"`
}

// Get returns a register's value; nil when unknown.
func (r *Registers) Get(reg register.Register) *string {
	if f := r.field(reg); f != nil {
		return *f
	}
	return nil
}

// Set sets a register's value; v nil marks it unknown.
func (r *Registers) Set(reg register.Register, v []byte) {
	f := r.field(reg)
	if f == nil {
		return
	}
	*f = nil
	if v != nil {
		s := hex.EncodeToString(v)
		*f = &s
	}
}

// Bytes returns a register's value as bytes; nil when unknown.
func (r *Registers) Bytes(reg register.Register) ([]byte, error) {
	v := r.Get(reg)
	if v == nil {
		return nil, nil
	}
	return decodeHex(reg.Key(), *v, register.Size)
}

func (r *Registers) field(reg register.Register) **string {
	switch reg {
	case register.MRTD:
		return &r.MRTD
	case register.RTMR0:
		return &r.RTMR0
	case register.RTMR1:
		return &r.RTMR1
	case register.RTMR2:
		return &r.RTMR2
	case register.RTMR3:
		return &r.RTMR3
	}
	return nil
}

// Event is one expected event behind a register.
type Event struct {
	Type        string `json:"type"`                // e.g. EV_EFI_ACTION, tdforge-runtime-v1
	Description string `json:"description"`         // e.g. "payload:model", "kernel cmdline"
	Digest      string `json:"digest"`              // SHA-384 extended, lowercase hex
	Component   string `json:"component,omitempty"` // what it belongs to: firmware, kernel, initrd, cmdline, acpi, payload:<name>, config
	Content     string `json:"content,omitempty"`   // content digest, e.g. verity-sha256:<hex>
	Data        string `json:"data,omitempty"`      // event data, hex, when short
}

// TD holds TD attribute expectations.
type TD struct {
	Attributes   string `json:"attributes"`    // 8 bytes hex, as in the quote body
	XFAM         string `json:"xfam"`          // 8 bytes hex
	DebugAllowed bool   `json:"debug_allowed"` // false: DEBUG must be clear
	MinTEETCBSVN string `json:"min_tee_tcb_svn,omitempty"`
	MRSEAM       string `json:"mrseam,omitempty"`
}

// TDValues is TD with its hex fields decoded; a field the document leaves
// empty is nil.
type TDValues struct {
	Attributes   []byte // 8 bytes
	XFAM         []byte // 8 bytes
	MinTEETCBSVN []byte // 16 bytes
	MRSEAM       []byte // 48 bytes
}

// Values decodes the TD expectations, checking each field's size.
func (t TD) Values() (TDValues, error) {
	var v TDValues
	var err error
	for _, f := range []struct {
		name string
		s    string
		n    int
		dst  *[]byte
	}{
		{"td.attributes", t.Attributes, 8, &v.Attributes},
		{"td.xfam", t.XFAM, 8, &v.XFAM},
		{"td.min_tee_tcb_svn", t.MinTEETCBSVN, 16, &v.MinTEETCBSVN},
		{"td.mrseam", t.MRSEAM, register.Size, &v.MRSEAM},
	} {
		if *f.dst, err = decodeHex(f.name, f.s, f.n); err != nil {
			return TDValues{}, err
		}
	}
	return v, nil
}

// decodeHex decodes field s, which must hold n bytes; "" is nil.
func decodeHex(field, s string, n int) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != n {
		return nil, fmt.Errorf("reference values: %s must be %d hex digits, got %q", field, 2*n, s)
	}
	return b, nil
}

// Marshal renders the canonical JSON form (indented, trailing newline).
func (d *Document) Marshal() ([]byte, error) {
	return canonjson.Marshal(d)
}

// Decode strictly parses a document and checks its schema and register
// encodings.
func Decode(r io.Reader) (*Document, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var d Document
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("reference values: %w", err)
	}
	if d.Schema != Schema {
		return nil, fmt.Errorf("reference values: schema %q is not supported (want %q)", d.Schema, Schema)
	}
	for _, reg := range register.All {
		v := d.Registers.Get(reg)
		if v == nil {
			continue
		}
		if b, err := hex.DecodeString(*v); err != nil || len(b) != register.Size {
			return nil, fmt.Errorf("reference values: register %s must be 96 hex digits", reg.Key())
		}
	}
	return &d, nil
}

// ReadFile reads and decodes a document. A DSSE envelope is not accepted
// here; see the signing package.
func ReadFile(path string) (*Document, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d, err := Decode(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}
