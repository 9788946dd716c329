// Package refvalues defines the published reference-values document
// (schema "tdforge.reference-values/v1"): the golden MRTD and RTMR0..3 of one
// image, the events behind each register and the TD attribute expectations.
// The builder writes it; the verifier reads it.
package refvalues

import (
	"encoding/hex"
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
	// Accepted lists values recorded on trusted hardware that a register
	// the builder cannot predict may take (see Accepted).
	Accepted *Accepted `json:"accepted,omitempty"`
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

// NotPinned is the Digest of an expected event whose digest the builder
// cannot predict (e.g. QEMU's ACPI tables on a real-TDX platform): the
// event must be present, any digest is accepted, and the register's value
// must be pinned some other way (an accepted value, or --accept-unpinned).
const NotPinned = "not-pinned"

// Event is one expected event behind a register.
type Event struct {
	Type        string `json:"type"`                // e.g. EV_EFI_ACTION, tdforge-runtime-v1
	Description string `json:"description"`         // e.g. "payload:model", "kernel cmdline"
	Digest      string `json:"digest"`              // SHA-384 extended, lowercase hex, or NotPinned
	Component   string `json:"component,omitempty"` // what it belongs to: firmware, kernel, initrd, cmdline, acpi, payload:<name>, config
	Content     string `json:"content,omitempty"`   // content digest, e.g. verity-sha256:<hex>
	Data        string `json:"data,omitempty"`      // event data, hex, when short
}

// Pinned reports whether the event's digest is known (not NotPinned).
func (e Event) Pinned() bool { return e.Digest != NotPinned }

// Accepted holds the accepted-value sets of registers the builder leaves
// null. Only RTMR0 (ACPI tables, TD HOB, boot variables: the VM shape and
// the host's QEMU) has one.
type Accepted struct {
	RTMR0 []AcceptedValue `json:"rtmr0"`
}

// AcceptedValue is one register value recorded from a known-good TD
// (`verifier record`) on a named platform profile and VM shape, merged by
// `verifier reference merge`. The verifier accepts any member of the set.
type AcceptedValue struct {
	Name     string  `json:"name"`     // the shape or host, e.g. "tcg-2G-2cpu"; unique within the set
	Platform string  `json:"platform"` // platform profile name
	Memory   string  `json:"memory,omitempty"`
	CPUs     int     `json:"cpus,omitempty"`
	Value    string  `json:"value"`  // lowercase hex register value
	Events   []Event `json:"events"` // the recorded events behind Value
	Source   string  `json:"source"` // "recorded"
}

// TD holds TD attribute expectations.
type TD struct {
	Attributes   string `json:"attributes"`    // 8 bytes hex, as in the quote body
	XFAM         string `json:"xfam"`          // 8 bytes hex
	DebugAllowed bool   `json:"debug_allowed"` // false: DEBUG must be clear
	MinTEETCBSVN string `json:"min_tee_tcb_svn,omitempty"`
	MRSEAM       string `json:"mrseam,omitempty"`
	// The owner fields (48 bytes hex each); empty means all zero.
	MRConfigID    string `json:"mrconfigid,omitempty"`
	MROwner       string `json:"mrowner,omitempty"`
	MROwnerConfig string `json:"mrownerconfig,omitempty"`
}

// TDValues is TD with its hex fields decoded; a field the document leaves
// empty is nil.
type TDValues struct {
	Attributes   []byte // 8 bytes
	XFAM         []byte // 8 bytes
	MinTEETCBSVN []byte // 16 bytes
	MRSEAM       []byte // 48 bytes
	// The owner fields, 48 bytes each; all zero when the document leaves
	// them empty (never nil after Values).
	MRConfigID, MROwner, MROwnerConfig []byte
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
		{"td.mrconfigid", t.MRConfigID, register.Size, &v.MRConfigID},
		{"td.mrowner", t.MROwner, register.Size, &v.MROwner},
		{"td.mrownerconfig", t.MROwnerConfig, register.Size, &v.MROwnerConfig},
	} {
		if *f.dst, err = decodeHex(f.name, f.s, f.n); err != nil {
			return TDValues{}, err
		}
	}
	for _, f := range []*[]byte{&v.MRConfigID, &v.MROwner, &v.MROwnerConfig} {
		if *f == nil {
			*f = make([]byte, register.Size)
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
	var d Document
	if err := canonjson.Decode(r, &d); err != nil {
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
	for _, reg := range register.RTMRs {
		if err := checkEvents("events."+reg.Key(), d.Events[reg.Key()]); err != nil {
			return nil, err
		}
	}
	if err := d.Accepted.Check(); err != nil {
		return nil, err
	}
	return &d, nil
}

// checkEvents checks that every event digest is 96 hex digits or NotPinned.
func checkEvents(field string, evs []Event) error {
	for i, e := range evs {
		if !e.Pinned() {
			continue
		}
		if b, err := hex.DecodeString(e.Digest); err != nil || len(b) != register.Size {
			return fmt.Errorf("reference values: %s[%d] (%q): digest must be 96 hex digits or %q, got %q (an older builder wrote \"\" for unknown digests: rebuild the reference values)", field, i, e.Description, NotPinned, e.Digest)
		}
	}
	return nil
}

// Check validates the accepted-value sets: unique non-empty names, values
// of register size, pinned events (an accepted value is recorded from a
// TD's event log, so every digest is known). Decode calls it, and
// `verifier reference merge` before it adds a recorded value.
func (a *Accepted) Check() error {
	if a == nil {
		return nil
	}
	seen := map[string]bool{}
	for i, m := range a.RTMR0 {
		field := fmt.Sprintf("accepted.rtmr0[%d]", i)
		switch {
		case m.Name == "":
			return fmt.Errorf("reference values: %s has no name", field)
		case seen[m.Name]:
			return fmt.Errorf("reference values: %s: name %q appears twice", field, m.Name)
		}
		seen[m.Name] = true
		if _, err := decodeHex(field+".value", m.Value, register.Size); err != nil || m.Value == "" {
			return fmt.Errorf("reference values: %s.value must be 96 hex digits", field)
		}
		if err := checkEvents(field+".events", m.Events); err != nil {
			return err
		}
		for j, e := range m.Events {
			if !e.Pinned() {
				return fmt.Errorf("reference values: %s.events[%d] (%q) is not pinned: an accepted value's events come from a TD's event log (verifier record)", field, j, e.Description)
			}
		}
	}
	return nil
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
