// Package ollamastore lays out an Ollama model store (the OLLAMA_MODELS
// directory) deterministically, without running Ollama: content-addressed
// blobs plus one manifest per model, byte-identical to what Ollama itself
// writes. The GGUF weights are referenced by host path and never loaded.
package ollamastore

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"

	"github.com/tdforge/tdforge/internal/canonjson"
	"github.com/tdforge/tdforge/internal/image/fstree"
	"github.com/tdforge/tdforge/internal/ollama/gguf"
)

// Media types of manifest entries.
const (
	ManifestMediaType = "application/vnd.docker.distribution.manifest.v2+json"
	ConfigMediaType   = "application/vnd.docker.container.image.v1+json"
	ModelMediaType    = "application/vnd.ollama.image.model"
	TemplateMediaType = "application/vnd.ollama.image.template"
	ParamsMediaType   = "application/vnd.ollama.image.params"
	SystemMediaType   = "application/vnd.ollama.image.system"
	LicenseMediaType  = "application/vnd.ollama.image.license"
)

// Registry and namespace of locally laid out models ("<name>:<tag>").
const (
	Registry  = "registry.ollama.ai"
	Namespace = "library"
)

// Model is one model to place in the store.
type Model struct {
	Name, Tag  string // e.g. "tiny", "latest"
	GGUFPath   string // host path of the weights
	GGUFSHA256 string // pinned, already verified digest (hex); "" hashes the file
	GGUFSize   int64  // size in bytes; 0 takes it from the file
	Template   string // prompt template, stored raw
	Params     map[string]any
	System     string // system prompt; "" for none
	License    string // license text; "" for none
	Epoch      int64  // timestamp of every entry

	// Pinned pre-made blobs (fetched by digest) used instead of the text
	// fields above, so a registry model's blobs are kept byte for byte.
	TemplateBlob, ParamsBlob, SystemBlob, LicenseBlob *Blob

	ModelType string // config "model_type", e.g. "124K" or "7.6B"; "" is "unknown"
	FileType  string // config "file_type", e.g. "Q4_K_M"; "" is "unknown"
}

// Blob is a pinned host file stored under its digest.
type Blob struct {
	Path   string // host path
	SHA256 string // hex digest, already verified by whoever fetched it
	Size   int64
}

// Layer is a manifest entry.
type Layer struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// Manifest is the Ollama (Docker v2 schema 2) manifest.
type Manifest struct {
	SchemaVersion int     `json:"schemaVersion"`
	MediaType     string  `json:"mediaType"`
	Config        Layer   `json:"config"`
	Layers        []Layer `json:"layers"`
}

type config struct {
	ModelFormat   string   `json:"model_format"`
	ModelFamily   string   `json:"model_family"`
	ModelFamilies []string `json:"model_families"`
	ModelType     string   `json:"model_type"`
	FileType      string   `json:"file_type"`
	Architecture  string   `json:"architecture"`
	OS            string   `json:"os"`
	RootFS        struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// ModelNamePattern is the pattern of an Ollama model name in the store.
const ModelNamePattern = `^[a-z0-9][a-z0-9._-]{0,79}$`

// ValidModelName reports whether name matches ModelNamePattern.
func ValidModelName(name string) bool { return nameRE.MatchString(name) }

// ValidTag reports whether tag is a valid model tag (letters, digits, '.',
// '_' or '-', at most 128, not starting with '.' or '-').
func ValidTag(tag string) bool { return tagRE.MatchString(tag) }

var (
	nameRE = regexp.MustCompile(ModelNamePattern)
	tagRE  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
	hexRE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// encode renders v as Ollama does: compact JSON with Go's HTML escaping and
// a trailing newline.
func encode(v any) []byte {
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(v); err != nil {
		panic(err) // only plain data is encoded here
	}
	return b.Bytes()
}

// ParamsJSON renders a params blob: JSON with sorted keys plus "\n".
func ParamsJSON(p map[string]any) ([]byte, error) {
	if p == nil {
		p = map[string]any{}
	}
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(p); err != nil {
		return nil, fmt.Errorf("ollamastore: params: %v", err)
	}
	return b.Bytes(), nil
}

// store accumulates blobs and entries.
type store struct {
	entries []fstree.Entry
	blobs   map[string]bool
}

func blobPath(hexDigest string) string { return "blobs/sha256-" + hexDigest }

func (s *store) data(b []byte) Layer {
	sum := sha256.Sum256(b)
	h := hex.EncodeToString(sum[:])
	if !s.blobs[h] {
		s.blobs[h] = true
		s.entries = append(s.entries, fstree.Entry{Path: blobPath(h), Type: fstree.File, Mode: 0o644, Data: b, Size: int64(len(b))})
	}
	return Layer{Digest: "sha256:" + h, Size: int64(len(b))}
}

func (s *store) file(b *Blob) Layer {
	if !s.blobs[b.SHA256] {
		s.blobs[b.SHA256] = true
		s.entries = append(s.entries, fstree.Entry{Path: blobPath(b.SHA256), Type: fstree.File, Mode: 0o644, Source: b.Path, Size: b.Size})
	}
	return Layer{Digest: "sha256:" + b.SHA256, Size: b.Size}
}

// checkBlob validates a pinned blob's digest syntax and size against the
// host file (the content digest is trusted as pinned).
func checkBlob(what string, b *Blob) error {
	if !hexRE.MatchString(b.SHA256) {
		return fmt.Errorf("ollamastore: %s blob %s: sha256 %q must be 64 lowercase hex digits", what, b.Path, b.SHA256)
	}
	fi, err := os.Stat(b.Path)
	if err != nil {
		return fmt.Errorf("ollamastore: %s blob: %v", what, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("ollamastore: %s blob %s is not a regular file", what, b.Path)
	}
	if b.Size == 0 {
		b.Size = fi.Size()
	}
	if fi.Size() != b.Size {
		return fmt.Errorf("ollamastore: %s blob %s is %d bytes, pinned size is %d", what, b.Path, fi.Size(), b.Size)
	}
	return nil
}

// CheckName validates an Ollama model name and tag.
func CheckName(name, tag string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("ollamastore: model name %q must be lowercase letters, digits, '.', '_' or '-' (at most 80, starting with a letter or digit)", name)
	}
	if !ValidTag(tag) {
		return fmt.Errorf("ollamastore: model tag %q must be letters, digits, '.', '_' or '-' (at most 128)", tag)
	}
	return nil
}

// ManifestPath is the store-relative path of name:tag's manifest.
func ManifestPath(name, tag string) string {
	return path.Join("manifests", Registry, Namespace, name, tag)
}

// Layout returns the store's tree (paths relative to the OLLAMA_MODELS
// directory, normalized, every entry at m.Epoch) and the manifest digest
// (hex sha256 of the manifest file). The GGUF's metadata is validated
// first (reading only its header), so a model that would crash Ollama is
// refused at build time.
func Layout(m Model) (*fstree.Tree, string, error) {
	if m.Tag == "" {
		m.Tag = "latest"
	}
	if err := CheckName(m.Name, m.Tag); err != nil {
		return nil, "", err
	}
	model := &Blob{Path: m.GGUFPath, SHA256: m.GGUFSHA256, Size: m.GGUFSize}
	md, err := readGGUF(model)
	if err != nil {
		return nil, "", err
	}
	s := &store{blobs: map[string]bool{}}
	add := func(l Layer, mt string, layers []Layer) []Layer {
		l.MediaType = mt
		return append(layers, l)
	}
	layers := add(s.file(model), ModelMediaType, nil)

	texts := []struct {
		mt   string
		blob *Blob
		text string
		set  bool
	}{
		{TemplateMediaType, m.TemplateBlob, m.Template, m.Template != ""},
		{ParamsMediaType, m.ParamsBlob, "", true},
		{SystemMediaType, m.SystemBlob, m.System, m.System != ""},
		{LicenseMediaType, m.LicenseBlob, m.License, m.License != ""},
	}
	for _, t := range texts {
		switch {
		case t.blob != nil:
			if t.set && t.mt != ParamsMediaType {
				return nil, "", fmt.Errorf("ollamastore: %s: both inline text and a pinned blob are given; use one", t.mt)
			}
			if t.mt == ParamsMediaType && m.Params != nil {
				return nil, "", fmt.Errorf("ollamastore: params: both Params and a pinned params blob are given; use one")
			}
			b := *t.blob
			if err := checkBlob(t.mt, &b); err != nil {
				return nil, "", err
			}
			layers = add(s.file(&b), t.mt, layers)
		case t.mt == ParamsMediaType:
			if m.Params == nil {
				continue
			}
			pj, err := ParamsJSON(m.Params)
			if err != nil {
				return nil, "", err
			}
			layers = add(s.data(pj), t.mt, layers)
		case t.set:
			layers = add(s.data([]byte(t.text)), t.mt, layers)
		}
	}

	var cfg config
	cfg.ModelFormat = "gguf"
	cfg.ModelFamily = md.Architecture()
	cfg.ModelFamilies = []string{cfg.ModelFamily}
	cfg.ModelType = orUnknown(m.ModelType)
	cfg.FileType = orUnknown(m.FileType)
	cfg.Architecture, cfg.OS = "amd64", "linux"
	cfg.RootFS.Type = "layers"
	cfg.RootFS.DiffIDs = []string{}
	for _, l := range layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.Digest)
	}
	cl := s.data(encode(cfg))
	cl.MediaType = ConfigMediaType

	man := encode(Manifest{SchemaVersion: 2, MediaType: ManifestMediaType, Config: cl, Layers: layers})
	return s.finish(m.Name, m.Tag, man, m.Epoch)
}

func (s *store) finish(name, tag string, man []byte, epoch int64) (*fstree.Tree, string, error) {
	s.entries = append(s.entries, fstree.Entry{Path: ManifestPath(name, tag), Type: fstree.File, Mode: 0o644, Data: man, Size: int64(len(man))})
	t := &fstree.Tree{Epoch: epoch, Entries: s.entries}
	if err := t.Normalize(); err != nil {
		return nil, "", fmt.Errorf("ollamastore: %v", err)
	}
	sum := sha256.Sum256(man)
	return t, hex.EncodeToString(sum[:]), nil
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// readGGUF checks the weights file: size, digest (hashing it when not
// pinned) and metadata.
func readGGUF(b *Blob) (*gguf.Metadata, error) {
	if b.Path == "" {
		return nil, fmt.Errorf("ollamastore: no GGUF path given")
	}
	f, err := os.Open(b.Path)
	if err != nil {
		return nil, fmt.Errorf("ollamastore: model weights: %v", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("ollamastore: model weights %s are not a regular file", b.Path)
	}
	if b.Size == 0 {
		b.Size = fi.Size()
	} else if b.Size != fi.Size() {
		return nil, fmt.Errorf("ollamastore: model weights %s are %d bytes, pinned size is %d", b.Path, fi.Size(), b.Size)
	}
	md, err := gguf.ReadMetadata(f)
	if err != nil {
		return nil, fmt.Errorf("ollamastore: %s: %v", b.Path, err)
	}
	if err := md.Validate(); err != nil {
		return nil, fmt.Errorf("ollamastore: %s: %v", b.Path, err)
	}
	if b.SHA256 != "" {
		if !hexRE.MatchString(b.SHA256) {
			return nil, fmt.Errorf("ollamastore: GGUF sha256 %q must be 64 lowercase hex digits", b.SHA256)
		}
		return md, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("ollamastore: hashing %s: %v", b.Path, err)
	}
	b.SHA256 = hex.EncodeToString(h.Sum(nil))
	return md, nil
}

// LayoutManifest places a registry model exactly as published: the pinned
// manifest file plus every blob it references (config and layers), each
// given as a pinned host file. Every referenced blob must be supplied with
// the manifest's digest and size; the model layer's GGUF metadata is
// validated. It returns the tree and the manifest digest.
func LayoutManifest(name, tag string, manifest Blob, blobs []Blob, epoch int64) (*fstree.Tree, string, error) {
	if tag == "" {
		tag = "latest"
	}
	if err := CheckName(name, tag); err != nil {
		return nil, "", err
	}
	if err := checkBlob("manifest", &manifest); err != nil {
		return nil, "", err
	}
	if manifest.Size > 1<<20 {
		return nil, "", fmt.Errorf("ollamastore: manifest %s is %d bytes; a model manifest is a few KB", manifest.Path, manifest.Size)
	}
	raw, err := os.ReadFile(manifest.Path)
	if err != nil {
		return nil, "", err
	}
	if sum := sha256.Sum256(raw); hex.EncodeToString(sum[:]) != manifest.SHA256 {
		return nil, "", fmt.Errorf("ollamastore: manifest %s hashes to %x, pinned %s", manifest.Path, sum, manifest.SHA256)
	}
	var man Manifest
	if err := canonjson.Decode(bytes.NewReader(raw), &man); err != nil {
		return nil, "", fmt.Errorf("ollamastore: manifest %s: %v", manifest.Path, err)
	}
	if man.SchemaVersion != 2 || man.MediaType != ManifestMediaType || man.Config.MediaType != ConfigMediaType {
		return nil, "", fmt.Errorf("ollamastore: manifest %s is not a Docker v2 schema 2 model manifest", manifest.Path)
	}
	byDigest := map[string]*Blob{}
	for i := range blobs {
		b := blobs[i]
		if err := checkBlob("model", &b); err != nil {
			return nil, "", err
		}
		byDigest["sha256:"+b.SHA256] = &b
	}
	s := &store{blobs: map[string]bool{}}
	models := 0
	for _, l := range append([]Layer{man.Config}, man.Layers...) {
		b, ok := byDigest[l.Digest]
		if !ok {
			return nil, "", fmt.Errorf("ollamastore: manifest %s references %s (%s, %d bytes) but no such blob was supplied", manifest.Path, l.Digest, l.MediaType, l.Size)
		}
		if b.Size != l.Size {
			return nil, "", fmt.Errorf("ollamastore: blob %s is %d bytes, the manifest says %d", l.Digest, b.Size, l.Size)
		}
		if l.MediaType == ModelMediaType {
			models++
			if _, err := readGGUF(b); err != nil {
				return nil, "", err
			}
		}
		s.file(b)
	}
	if models != 1 {
		return nil, "", fmt.Errorf("ollamastore: manifest %s has %d model layers, want 1", manifest.Path, models)
	}
	return s.finish(name, tag, raw, epoch)
}
