package secret

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCreateLoadAllows(t *testing.T) {
	dir := t.TempDir()
	r, err := Create(dir, "tdforge/prod/model", []Grant{{Image: "tdforge-confidential-ai", Versions: []string{">=1.0.0", "<2.0.0"}}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(Path(dir, "tdforge/prod/model"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", st.Mode(), err)
	}
	if _, err := Create(dir, "tdforge/prod/model", r.Allow); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("replaced an existing key: %v", err)
	}
	got, err := Load(dir, "tdforge/prod/model")
	if err != nil {
		t.Fatal(err)
	}
	if k, err := got.Key(); err != nil || string(k) != string(r.Value) {
		t.Fatalf("key round trip: %v", err)
	}
	for _, c := range []struct {
		image, version string
		dev, want      bool
		why            string
	}{
		{"tdforge-confidential-ai", "1.2.0", false, true, "allows"},
		{"tdforge-confidential-ai", "2.0.0", false, false, `fails "<2.0.0"`},
		{"tdforge-confidential-ai", "0.9.1", false, false, `fails ">=1.0.0"`},
		{"tdforge-dev", "1.2.0", true, false, "not tdforge-dev"},
		{"tdforge-confidential-ai", "latest", false, false, "not a semantic version"},
	} {
		ok, why := got.Allows(c.image, c.version, c.dev)
		if ok != c.want || !strings.Contains(why, c.why) {
			t.Errorf("%s %s: %v %q", c.image, c.version, ok, why)
		}
	}
	if _, err := Load(dir, "tdforge/prod/other"); !errors.Is(err, ErrNotExist) {
		t.Fatalf("missing resource: %v", err)
	}
}

func TestDevSecret(t *testing.T) {
	r := &Resource{Schema: Schema, ID: "tdforge/dev/model", Value: make([]byte, KeySize), Allow: []Grant{{Image: "tdforge-dev"}}, Dev: true}
	if err := r.Check(false); !errors.Is(err, ErrDevSecret) {
		t.Fatalf("dev secret accepted for a non-dev image: %v", err)
	}
	if err := r.Check(true); err != nil {
		t.Fatal(err)
	}
	if ok, why := r.Allows("tdforge-dev", "0.1.0", false); ok || !strings.Contains(why, "dev secret") {
		t.Fatalf("dev secret released to a non-dev reference: %q", why)
	}
	if ok, _ := r.Allows("tdforge-dev", "0.1.0", true); !ok {
		t.Fatal("dev secret refused to its dev image")
	}
}

// TestLoadRefusesOpenKeyFile: Load, which the builder and the key broker
// share, refuses a real key that others may read or write; a dev secret
// (public anyway, checked out 0644) is exempt.
func TestLoadRefusesOpenKeyFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := Create(dir, "acme/models/llm", []Grant{{Image: "acme-ai"}}); err != nil {
		t.Fatal(err)
	}
	p := Path(dir, "acme/models/llm")
	for _, mode := range []os.FileMode{0o640, 0o604, 0o620} {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dir, "acme/models/llm"); err == nil || !strings.Contains(err.Error(), "run chmod 600 "+p) {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
	if err := os.Chmod(p, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, "acme/models/llm"); err != nil {
		t.Errorf("mode 0400: %v", err)
	}
	dev := &Resource{Schema: Schema, ID: "tdforge/dev/model", Value: make([]byte, KeySize), Allow: []Grant{{Image: "tdforge-dev"}}, Dev: true}
	if err := os.MkdirAll(filepath.Dir(Path(dir, dev.ID)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(Path(dir, dev.ID), mustJSON(dev), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, dev.ID); err != nil {
		t.Errorf("dev secret 0644: %v", err)
	}
}

func TestBadInput(t *testing.T) {
	for _, c := range []struct{ id, want string }{
		{"../etc/passwd", "must be <repo>/<type>/<tag>"},
		{"a/b", "must be <repo>/<type>/<tag>"},
		{"a/../b", "must be"},
	} {
		if err := CheckID(c.id); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.id, err)
		}
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "a", "b", "c")
	os.MkdirAll(filepath.Dir(p), 0o700)
	for _, c := range []struct{ body, want string }{
		{`{"schema":"x"}`, "schema"},
		{`{"schema":"tdforge.resource/v1","id":"a/b/c","value":"AAAA","allow":[]}`, "no \"allow\""},
		{`{"schema":"tdforge.resource/v1","id":"a/b/c","value":"AAAA","allow":[{"image":"i","versions":["~1"]}]}`, "OP VERSION"},
		{`{"schema":"tdforge.resource/v1","id":"a/b/d","value":"AAAA","allow":[{"image":"i"}]}`, "not \"a/b/c\""},
		{`{"schema":"tdforge.resource/v1","id":"a/b/c","value":"AAAA","allow":[{"image":"i"}],"extra":1}`, "unknown field"},
		{`{"schema":"tdforge.resource/v1","id":"a/b/c","value":"AAAA","allow":[{"image":"i"}]}{}`, "trailing data"},
	} {
		os.WriteFile(p, []byte(c.body), 0o600)
		if _, err := Load(dir, "a/b/c"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.body, err)
		}
	}
	r := &Resource{ID: "a/b/c", Value: []byte{1, 2}}
	if _, err := r.Key(); err == nil || !strings.Contains(err.Error(), "64") {
		t.Fatalf("short key: %v", err)
	}
}

// Every grant naming the image is tried: a version gap can be expressed.
// Before, the first grant naming the image decided alone.
func TestAllowsEveryGrant(t *testing.T) {
	r := &Resource{Schema: Schema, ID: "a/b/c", Value: make([]byte, KeySize), Allow: []Grant{
		{Image: "img", Versions: []string{"<0.2.0"}}, {Image: "img", Versions: []string{">=0.3.0"}},
	}}
	for v, want := range map[string]bool{"0.1.0": true, "0.2.5": false, "0.3.0": true} {
		if ok, why := r.Allows("img", v, false); ok != want {
			t.Errorf("%s: %v (%s)", v, ok, why)
		}
	}
}

// Two builds creating the same key at once: one wins, the other is
// refused, and the file holds the winner's key (never replaced).
func TestCreateNeverReplaces(t *testing.T) {
	dir := t.TempDir()
	grants := []Grant{{Image: "img"}}
	type res struct {
		r   *Resource
		err error
	}
	out := make(chan res, 8)
	for range 8 {
		go func() { r, err := Create(dir, "a/b/c", grants); out <- res{r, err} }()
	}
	var won *Resource
	for range 8 {
		x := <-out
		if x.err == nil {
			if won != nil {
				t.Fatal("two concurrent creates both succeeded")
			}
			won = x.r
		} else if !strings.Contains(x.err.Error(), "already exists") {
			t.Fatal(x.err)
		}
	}
	got, err := Load(dir, "a/b/c")
	if err != nil || won == nil || string(got.Value) != string(won.Value) {
		t.Fatalf("the file does not hold the winner's key: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "a", "b", ".tmp-*")); len(m) != 0 {
		t.Fatalf("temporary files left: %v", m)
	}
}
