// Package secret reads and creates key-broker resources: one file per
// resource id, DIR/<repo>/<type>/<tag> (the id "tdforge/dev/model" is the
// file DIR/tdforge/dev/model), mode 0600. `builder build --secrets DIR`
// reads or creates the keys of encrypted payloads here, and `verifier serve
// --resources DIR` releases them, each only to the reference documents the
// file allows.
//
// A file is JSON:
//
//	{
//	  "schema": "tdforge.resource/v1",
//	  "id": "tdforge/dev/model",
//	  "value": "<base64 of the released bytes: a 64-byte aes-xts-plain64 key>",
//	  "allow": [{"image": "tdforge-dev", "versions": [">=0.1.0", "<0.2.0"]}],
//	  "dev": true
//	}
//
// "dev" marks a fixed secret committed for dev images: only a dev image may
// use it (Check), and only a dev reference may receive it (Allows).
package secret

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/mod/semver"

	"github.com/tdforge/tdforge/internal/canonjson"
)

// Schema identifies resource files.
const Schema = "tdforge.resource/v1"

// KeySize is the size of a payload key: aes-xts-plain64 with AES-256 (two
// 256-bit halves).
const KeySize = 64

// idPattern is a KBS resource path <repo>/<type>/<tag>.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$`)

// ErrNotExist is returned by Load when the resource has no file.
var ErrNotExist = errors.New("no such resource")

// ErrDevSecret is returned by Check for a dev secret and a non-dev image.
var ErrDevSecret = errors.New("a fixed dev secret (\"dev\": true) is for dev images only")

// Resource is one resource file.
type Resource struct {
	Schema string  `json:"schema"`
	ID     string  `json:"id"`
	Value  []byte  `json:"value"` // base64 in JSON
	Allow  []Grant `json:"allow"`
	Dev    bool    `json:"dev,omitempty"`
}

// Grant allows one image, at the versions every constraint admits.
type Grant struct {
	Image string `json:"image"`
	// Versions are constraints "OP VERSION" with OP one of = != < <= > >=
	// (semantic versions, "v" optional); empty admits every version.
	Versions []string `json:"versions,omitempty"`
}

// CheckID reports whether id is a valid resource id.
func CheckID(id string) error {
	if !idPattern.MatchString(id) || strings.Contains(id, "..") {
		return fmt.Errorf("resource id %q must be <repo>/<type>/<tag> (letters, digits, '.', '_', '-'; no '..')", id)
	}
	return nil
}

// Path is the file of resource id in dir.
func Path(dir, id string) string { return filepath.Join(dir, filepath.FromSlash(id)) }

// Load reads resource id from dir; ErrNotExist (wrapped) when it has no file.
// A real key in a file readable or writable by others is refused, as ssh
// refuses such a private key, for the builder and the key broker alike;
// the public dev secrets ("dev": true) are exempt (git checks them out
// 0644).
func Load(dir, id string) (*Resource, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	p := Path(dir, id)
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", p, ErrNotExist)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	r, err := Decode(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if r.ID != id {
		return nil, fmt.Errorf("%s: the file holds resource %q, not %q (files are named by their id)", p, r.ID, id)
	}
	if perm := st.Mode().Perm(); !r.Dev && perm&0o077 != 0 {
		clear(r.Value)
		return nil, fmt.Errorf("key file %s is readable or writable by others (mode %04o); run chmod 600 %s", p, perm, p)
	}
	return r, nil
}

// Decode strictly parses and validates a resource file.
func Decode(raw []byte) (*Resource, error) {
	var r Resource
	if err := canonjson.Decode(bytes.NewReader(raw), &r); err != nil {
		return nil, fmt.Errorf("resource: %w", err)
	}
	if r.Schema != Schema {
		return nil, fmt.Errorf("resource: schema %q is not supported (want %q)", r.Schema, Schema)
	}
	if err := CheckID(r.ID); err != nil {
		return nil, err
	}
	if len(r.Value) == 0 {
		return nil, fmt.Errorf("resource %s: empty value", r.ID)
	}
	if len(r.Allow) == 0 {
		return nil, fmt.Errorf("resource %s: no \"allow\" entry, so no TD could receive it; name the image (and versions) that may", r.ID)
	}
	for i, g := range r.Allow {
		if g.Image == "" {
			return nil, fmt.Errorf("resource %s: allow[%d] names no image", r.ID, i)
		}
		for _, c := range g.Versions {
			if _, _, err := parseConstraint(c); err != nil {
				return nil, fmt.Errorf("resource %s: allow[%d]: %w", r.ID, i, err)
			}
		}
	}
	return &r, nil
}

// Create writes a new resource id in dir (0600, parent directories 0700)
// holding a fresh random KeySize-byte key; it refuses to replace a file.
func Create(dir, id string, allow []Grant) (*Resource, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	r := &Resource{Schema: Schema, ID: id, Value: make([]byte, KeySize), Allow: allow}
	if _, err := rand.Read(r.Value); err != nil {
		return nil, err
	}
	if _, err := Decode(mustJSON(r)); err != nil {
		return nil, err
	}
	p := Path(dir, id)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, err
	}
	// Write a complete temporary file, then link it into place: link, unlike
	// rename, never replaces a key another build created meanwhile.
	tmp, err := os.CreateTemp(filepath.Dir(p), ".tmp-"+filepath.Base(p)+"-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(mustJSON(r)); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Link(tmp.Name(), p); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%s already exists; remove it only if no released image still needs that key", p)
		}
		return nil, err
	}
	return r, nil
}

func mustJSON(r *Resource) []byte {
	b, err := canonjson.Marshal(r)
	if err != nil {
		panic(err) // a Resource always marshals
	}
	return b
}

// Key returns the value as a payload key, checking its size.
func (r *Resource) Key() ([]byte, error) {
	if len(r.Value) != KeySize {
		return nil, fmt.Errorf("resource %s holds %d bytes; a payload key is %d (aes-xts-plain64, 512-bit)", r.ID, len(r.Value), KeySize)
	}
	return r.Value, nil
}

// Check refuses a dev secret for a non-dev image.
func (r *Resource) Check(devImage bool) error {
	if r.Dev && !devImage {
		return fmt.Errorf("resource %s: %w", r.ID, ErrDevSecret)
	}
	return nil
}

// Allows reports whether a TD whose matched reference document names image
// at version (dev: whether it is a dev reference) may receive r, and why.
func (r *Resource) Allows(image, version string, dev bool) (bool, string) {
	if r.Dev && !dev {
		return false, fmt.Sprintf("resource %s is a dev secret and the reference %s %s is not a dev image", r.ID, image, version)
	}
	var refusals []string
	for _, g := range r.Allow {
		if g.Image != image {
			continue
		}
		ok, why := admits(g.Versions, version)
		if ok {
			return true, fmt.Sprintf("resource %s allows %s %s", r.ID, image, version)
		}
		refusals = append(refusals, fmt.Sprintf("versions %s: %s", strings.Join(g.Versions, ", "), why))
	}
	if len(refusals) > 0 {
		return false, fmt.Sprintf("resource %s allows %s only at %s", r.ID, image, strings.Join(refusals, "; or "))
	}
	names := make([]string, 0, len(r.Allow))
	for _, g := range r.Allow {
		names = append(names, g.Image)
	}
	return false, fmt.Sprintf("resource %s allows images %s, not %s", r.ID, strings.Join(names, ", "), image)
}

func admits(constraints []string, version string) (bool, string) {
	v := canonical(version)
	if len(constraints) > 0 && !semver.IsValid(v) {
		return false, fmt.Sprintf("version %q is not a semantic version", version)
	}
	for _, c := range constraints {
		op, want, _ := parseConstraint(c)
		cmp := semver.Compare(v, want)
		ok := map[string]bool{"=": cmp == 0, "!=": cmp != 0, "<": cmp < 0, "<=": cmp <= 0, ">": cmp > 0, ">=": cmp >= 0}[op]
		if !ok {
			return false, fmt.Sprintf("%s fails %q", version, c)
		}
	}
	return true, ""
}

func parseConstraint(c string) (op, version string, err error) {
	s := strings.TrimSpace(c)
	for _, o := range []string{">=", "<=", "!=", "=", "<", ">"} {
		if rest, ok := strings.CutPrefix(s, o); ok {
			v := canonical(strings.TrimSpace(rest))
			if !semver.IsValid(v) {
				break
			}
			return o, v, nil
		}
	}
	return "", "", fmt.Errorf("version constraint %q must be OP VERSION, e.g. \">=0.1.0\" (OP one of = != < <= > >=)", c)
}

func canonical(v string) string {
	if !strings.HasPrefix(v, "v") {
		v = "v" + v
	}
	return v
}
