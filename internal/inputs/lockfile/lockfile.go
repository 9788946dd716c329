// Package lockfile reads and writes <manifest>.lock.hcl, which records the
// digests of a manifest's local inputs (dir and file sources), like
// Terraform's dependency lock file:
//
//	input "payload.webui" {
//	  kind   = "dir"
//	  sha256 = "..."
//	}
//
// Builds compare each input's digest with its entry and refuse to continue
// on a mismatch unless the caller chooses to record the new digest.
package lockfile

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"

	"github.com/tdforge/tdforge/internal/fsutil"
)

// ErrNotRecorded is returned (wrapped) by Check for a key with no entry.
var ErrNotRecorded = errors.New("input not recorded in the lock file")

// ChangedError is an input whose digest differs from the recorded one.
type ChangedError struct {
	Key, Recorded, Current string
}

func (e *ChangedError) Error() string {
	return fmt.Sprintf("input %s changed: the lock file records sha256 %s but it is now %s", e.Key, e.Recorded, e.Current)
}

// SyntaxError is a lock file that is not valid HCL.
type SyntaxError struct {
	File, Detail string
}

func (e *SyntaxError) Error() string { return fmt.Sprintf("lock file %s: %s", e.File, e.Detail) }

// Entry is one locked input.
type Entry struct {
	Kind   string // source kind, e.g. "dir" or "file"; may be empty
	SHA256 string // the input digest, stored as given
}

// Lock is the content of a lock file.
type Lock struct {
	Entries map[string]Entry
}

const header = "# This file is maintained by builder build; it records the digests of\n" +
	"# local inputs. Commit it. Run builder build -update-lock after changing an input.\n\n"

var schema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "input", LabelNames: []string{"key"}}}}

var entrySchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "kind"}, {Name: "sha256", Required: true}}}

// Read parses the lock file at path. A missing file is an empty lock.
func Read(path string) (*Lock, error) {
	src, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &Lock{Entries: map[string]Entry{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lock file: %w", err)
	}
	return Parse(src, path)
}

// Parse parses lock file content; filename is used in error positions.
func Parse(src []byte, filename string) (*Lock, error) {
	l := &Lock{Entries: map[string]Entry{}}
	f, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, &SyntaxError{File: filename, Detail: diagText(diags)}
	}
	content, diags := f.Body.Content(schema)
	if diags.HasErrors() {
		return nil, fmt.Errorf("lock file %s: %s", filename, diagText(diags))
	}
	for _, b := range content.Blocks {
		key := b.Labels[0]
		if _, dup := l.Entries[key]; dup {
			return nil, fmt.Errorf("lock file %s: %s: input %q is recorded twice; remove one entry", filename, b.DefRange, key)
		}
		ec, diags := b.Body.Content(entrySchema)
		if diags.HasErrors() {
			return nil, fmt.Errorf("lock file %s: %s", filename, diagText(diags))
		}
		var e Entry
		for name, dst := range map[string]*string{"kind": &e.Kind, "sha256": &e.SHA256} {
			a := ec.Attributes[name]
			if a == nil {
				continue
			}
			v, diags := a.Expr.Value(nil)
			if diags.HasErrors() {
				return nil, fmt.Errorf("lock file %s: %s", filename, diagText(diags))
			}
			if v.Type() != cty.String || v.IsNull() {
				return nil, fmt.Errorf("lock file %s: %s: %s must be a string", filename, a.Expr.Range(), name)
			}
			*dst = v.AsString()
		}
		if e.SHA256 == "" {
			return nil, fmt.Errorf("lock file %s: %s: input %q has an empty sha256", filename, b.DefRange, key)
		}
		l.Entries[key] = e
	}
	return l, nil
}

// Has reports whether key is recorded.
func (l *Lock) Has(key string) bool {
	_, ok := l.Entries[key]
	return ok
}

// Check compares digest with the recorded one. A missing entry returns an
// error wrapping ErrNotRecorded; a different digest returns a *ChangedError
// naming both.
func (l *Lock) Check(key, digest string) error {
	e, ok := l.Entries[key]
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotRecorded, key)
	}
	if e.SHA256 != digest {
		return &ChangedError{Key: key, Recorded: e.SHA256, Current: digest}
	}
	return nil
}

// Set records digest for key, keeping the entry's kind.
func (l *Lock) Set(key, digest string) { l.update(key, func(e *Entry) { e.SHA256 = digest }) }

// SetKind records the source kind of key's input (informational).
func (l *Lock) SetKind(key, kind string) { l.update(key, func(e *Entry) { e.Kind = kind }) }

// update applies set to key's entry, creating it (and the map) if needed.
func (l *Lock) update(key string, set func(*Entry)) {
	if l.Entries == nil {
		l.Entries = map[string]Entry{}
	}
	e := l.Entries[key]
	set(&e)
	l.Entries[key] = e
}

// Bytes renders the lock file: a header comment and the entries sorted by key.
func (l *Lock) Bytes() []byte {
	f := hclwrite.NewEmptyFile()
	body := f.Body()
	for i, k := range slices.Sorted(maps.Keys(l.Entries)) {
		if i > 0 {
			body.AppendNewline()
		}
		e := l.Entries[k]
		b := body.AppendNewBlock("input", []string{k}).Body()
		if e.Kind != "" {
			b.SetAttributeValue("kind", cty.StringVal(e.Kind))
		}
		b.SetAttributeValue("sha256", cty.StringVal(e.SHA256))
	}
	out := append([]byte(header), hclwrite.Format(f.Bytes())...)
	return []byte(strings.TrimRight(string(out), "\n") + "\n")
}

// WriteFile atomically writes the lock file to path.
func (l *Lock) WriteFile(path string) error {
	if err := fsutil.WriteFile(path, l.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write lock file: %w", err)
	}
	return nil
}

// diagText renders every diagnostic, not just the first.
func diagText(diags hcl.Diagnostics) string {
	var parts []string
	for _, d := range diags {
		parts = append(parts, d.Error())
	}
	return strings.Join(parts, "; ")
}
