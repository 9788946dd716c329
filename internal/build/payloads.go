package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tdforge/tdforge/internal/fsutil"
	"github.com/tdforge/tdforge/internal/image/fstree"
	"github.com/tdforge/tdforge/internal/inputs/debpkg"
	"github.com/tdforge/tdforge/internal/inputs/fetch"
	"github.com/tdforge/tdforge/internal/inputs/gobuild"
	"github.com/tdforge/tdforge/internal/inputs/secret"
	"github.com/tdforge/tdforge/internal/manifest"
	"github.com/tdforge/tdforge/internal/ollama/gguf"
	"github.com/tdforge/tdforge/internal/ollama/ollamastore"
)

// builtPayload is a payload's normalized file tree, ready for the disk.
type builtPayload struct {
	name string
	tree *fstree.Tree
}

// resolvePayloads builds each payload's normalized tree. When measuring, a
// payload the plan lists as missing is skipped and one whose download fails
// becomes missing; a build needs them all.
func (p *pipeline) resolvePayloads(ctx context.Context) error {
	for _, v := range p.m.Volumes {
		if err := p.volumeKey(v); err != nil {
			return err
		}
	}
	for _, pl := range p.m.Payloads {
		if slices.ContainsFunc(p.missing, func(m Missing) bool { return m.Payload == pl.Name }) {
			continue
		}
		if pl.Encryption != nil {
			// The key first: a build without it fails before any work.
			key, err := p.payloadKey(pl)
			if !p.publishing && (errors.Is(err, ErrNoSecrets) || errors.Is(err, secret.ErrNotExist)) {
				p.missing = append(p.missing, Missing{Payload: pl.Name, Reason: "its key is not available: " + err.Error(), Pinned: pinned(p.m, pl)})
				continue
			}
			if err != nil {
				return err
			}
			p.keys[pl.Name] = key
		}
		t, err := p.payloadTree(ctx, pl)
		var ne *fetch.NetworkError
		if !p.publishing && errors.As(err, &ne) {
			p.missing = append(p.missing, Missing{Payload: pl.Name, Reason: "its input could not be fetched: " + err.Error(), Pinned: pinned(p.m, pl)})
			continue
		}
		if err != nil {
			return fmt.Errorf("payload %q: %w", pl.Name, err)
		}
		t.Epoch = p.m.Image.SourceDateEpoch
		if err := t.Normalize(); err != nil {
			return fmt.Errorf("payload %q: %w", pl.Name, err)
		}
		p.payloads = append(p.payloads, builtPayload{name: pl.Name, tree: t})
	}
	return nil
}

func (p *pipeline) payloadTree(ctx context.Context, pl manifest.Payload) (*fstree.Tree, error) {
	key := "payload." + pl.Name
	src := pl.Source
	switch src.Kind {
	case "file", "url":
		local, err := p.fetchSource(ctx, key, src)
		if err != nil {
			return nil, err
		}
		name := filepath.Base(src.Path)
		if src.Kind == "url" {
			u, err := url.Parse(src.URL)
			if err != nil {
				return nil, err
			}
			name = path.Base(u.Path)
		}
		if src.Kind == "file" {
			if err := p.lockCheck(key, p.inputs[key]); err != nil {
				return nil, err
			}
		}
		st, err := os.Stat(local)
		if err != nil {
			return nil, err
		}
		mode := fs.FileMode(0o644)
		if st.Mode()&0o111 != 0 {
			mode = 0o755
		}
		return &fstree.Tree{Entries: []fstree.Entry{{Path: name, Type: fstree.File, Mode: mode, Source: local, Size: st.Size()}}}, nil
	case "dir":
		t, digest, err := dirTree(src.Path)
		if err != nil {
			return nil, err
		}
		p.inputs[key] = digest
		if err := p.lockCheck(key, digest); err != nil {
			return nil, err
		}
		return t, nil
	case "deb":
		local, err := p.fetchSource(ctx, key, src)
		if err != nil {
			return nil, err
		}
		dir := filepath.Join(p.work, "deb-"+pl.Name)
		if _, err := debpkg.ExtractTree(local, src.PathInDeb, dir); err != nil {
			return nil, err
		}
		t, _, err := dirTree(dir)
		return t, err
	case "go":
		gc := p.o.Cache.Root() // gobuild keeps its builds under <root>/gobuild/<key>
		pkg := src.GoPackage
		switch {
		case pkg == "." || pkg == "":
			pkg = ""
		case strings.HasPrefix(pkg, "./"):
			pkg = src.Module + "/" + strings.TrimPrefix(pkg, "./")
		}
		var ldflags []string
		for _, f := range src.Ldflags {
			ldflags = append(ldflags, strings.Fields(f)...)
		}
		res, err := gobuild.Build(ctx, gobuild.Spec{
			Module: src.Module, Version: src.Version, Sum: src.Sum, Package: pkg,
			CGO: src.CGO, Static: src.Static, Ldflags: ldflags, Tags: src.Tags,
		}, gc, p.o.Log)
		if err != nil {
			return nil, err
		}
		p.inputs[key] = src.Sum
		p.inputs[key+".binary"] = res.SHA256
		st, err := os.Stat(res.Binary)
		if err != nil {
			return nil, err
		}
		out := src.Output
		if out == "" {
			out = "bin/" + path.Base(src.Module)
		}
		return &fstree.Tree{Entries: []fstree.Entry{{Path: out, Type: fstree.File, Mode: 0o755, Source: res.Binary, Size: st.Size()}}}, nil
	case "ollama_model":
		return p.modelTree(ctx, key, pl)
	}
	return nil, fmt.Errorf("unsupported source kind %q", src.Kind)
}

// lockCheck compares a local input's digest with the lock file. A missing
// entry is recorded (like `terraform init`); a different one is refused
// unless Options.UpdateLock.
func (p *pipeline) lockCheck(key, digest string) error {
	if p.o.UpdateLock {
		p.lock.Set(key, digest)
		return nil
	}
	if !p.lock.Has(key) {
		p.lock.Set(key, digest)
		p.lockDirty = true
		return nil
	}
	return p.lock.Check(key, digest)
}

// modelTree lays out an Ollama model store.
func (p *pipeline) modelTree(ctx context.Context, key string, pl manifest.Payload) (*fstree.Tree, error) {
	om := pl.Source.Model
	if om == nil {
		return nil, fmt.Errorf("ollama_model source without a model")
	}
	var ggufPath, ggufSHA string
	switch {
	case om.Generate != "" || om.GGUF.Kind == "generate":
		gen := om.Generate
		if gen != "tiny-llama" {
			return nil, fmt.Errorf("gguf generate = %q: the only built-in generator is \"tiny-llama\"", gen)
		}
		dir, err := p.o.Cache.Dir("generated")
		if err != nil {
			return nil, err
		}
		ggufPath = filepath.Join(dir, fmt.Sprintf("tiny-llama-seed%d.gguf", om.Seed))
		if _, err := os.Stat(ggufPath); err != nil {
			if err := fsutil.WriteFrom(ggufPath, 0o644, func(w io.Writer) error { return gguf.GenerateTiny(w, om.Seed) }); err != nil {
				return nil, err
			}
		}
		if ggufSHA, _, err = fileSHA256(ggufPath); err != nil {
			return nil, err
		}
		if om.GGUF.SHA256 != "" && ggufSHA != om.GGUF.SHA256 {
			return nil, fmt.Errorf("generated gguf: sha256 mismatch:\n  manifest pins %s\n  generator made %s\nthe generator changed; update the pin", om.GGUF.SHA256, ggufSHA)
		}
		p.inputs[key+".gguf"] = ggufSHA
	default:
		local, err := p.fetchSource(ctx, key+".gguf", om.GGUF)
		if err != nil {
			return nil, err
		}
		ggufPath, ggufSHA = local, p.inputs[key+".gguf"] // fetch hashed (and checked) it
	}
	// Layout validates the GGUF metadata (a model missing required keys
	// crashes Ollama) and stores pinned template/params/license blobs byte
	// for byte.
	model := ollamastore.Model{
		Name: om.Name, Tag: om.Tag, GGUFPath: ggufPath, GGUFSHA256: ggufSHA,
		Template: om.Template, Params: om.Params, System: om.System, Epoch: p.m.Image.SourceDateEpoch,
	}
	var err error
	if model.TemplateBlob, err = p.fetchBlob(ctx, key+".template", om.TemplateSource); err != nil {
		return nil, err
	}
	if model.ParamsBlob, err = p.fetchBlob(ctx, key+".params", om.ParamsSource); err != nil {
		return nil, err
	}
	if model.LicenseBlob, err = p.fetchBlob(ctx, key+".license", om.License); err != nil {
		return nil, err
	}
	t, manifestDigest, err := ollamastore.Layout(model)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", om.Name, err)
	}
	p.inputs[key+".manifest"] = manifestDigest
	return t, nil
}

// dirTree walks a local directory into a tree (modes normalized to 0755 for
// directories and executables, 0644 otherwise) and returns a digest of the
// listing and contents for the lock file.
func dirTree(root string) (*fstree.Tree, string, error) {
	t := &fstree.Tree{}
	h := sha256.New()
	var paths []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("dir %s: %w", root, err)
	}
	slices.Sort(paths)
	for _, p := range paths {
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		st, err := os.Lstat(p)
		if err != nil {
			return nil, "", err
		}
		switch {
		case st.IsDir():
			t.Entries = append(t.Entries, fstree.Entry{Path: rel, Type: fstree.Dir, Mode: 0o755})
			fmt.Fprintf(h, "d %s\n", rel)
		case st.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return nil, "", err
			}
			t.Entries = append(t.Entries, fstree.Entry{Path: rel, Type: fstree.Symlink, Mode: 0o777, Target: target})
			fmt.Fprintf(h, "l %s %s\n", rel, target)
		case st.Mode().IsRegular():
			mode := fs.FileMode(0o644)
			if st.Mode()&0o111 != 0 {
				mode = 0o755
			}
			sum, size, err := fileSHA256(p)
			if err != nil {
				return nil, "", err
			}
			t.Entries = append(t.Entries, fstree.Entry{Path: rel, Type: fstree.File, Mode: mode, Source: p, Size: size})
			fmt.Fprintf(h, "f %s %o %d %s\n", rel, mode, size, sum)
		default:
			return nil, "", fmt.Errorf("dir %s: %s is not a regular file, directory or symlink", root, rel)
		}
	}
	return t, hex.EncodeToString(h.Sum(nil)), nil
}

// fetchBlob resolves an optional pinned blob (nil source: nil blob).
func (p *pipeline) fetchBlob(ctx context.Context, key string, src *manifest.Source) (*ollamastore.Blob, error) {
	if src == nil {
		return nil, nil
	}
	local, err := p.fetchSource(ctx, key, *src)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(local)
	if err != nil {
		return nil, err
	}
	return &ollamastore.Blob{Path: local, SHA256: p.inputs[key], Size: st.Size()}, nil
}
