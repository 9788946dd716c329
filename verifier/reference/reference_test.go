package reference

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/signing"
	"github.com/tdforge/tdforge/verifier/verify"
)

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	w := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	doc := &refvalues.Document{Schema: refvalues.Schema, Image: refvalues.Image{Name: "img", Version: "1"}, Events: map[string][]refvalues.Event{}, Source: "builder"}
	raw, _ := doc.Marshal()
	plain := w("ref.json", raw)
	dev := *doc
	dev.Image.Dev = true
	devRaw, _ := dev.Marshal()
	plainDev := w("dev.json", devRaw)
	priv, pub, err := signing.GenerateKey("ecdsa-p256")
	if err != nil {
		t.Fatal(err)
	}
	_, otherPub, _ := signing.GenerateKey("ecdsa-p256")
	env, err := signing.Sign(raw, priv)
	if err != nil {
		t.Fatal(err)
	}
	signed := w("ref.dsse.json", env)
	key, other := w("pub.pem", pub), w("other.pem", otherPub)
	tampered := w("tampered.json", []byte(strings.Replace(string(env), `"payload": "`, `"payload": "eyJ`, 1)))

	d, c, err := Load(signed, key)
	if err != nil || d == nil || c.Status != verify.Pass || d.Image.Name != "img" {
		t.Fatalf("signed: %v %+v", err, c)
	}
	// Issue 12: an envelope is never used unverified. Before the fix it
	// was read with a SKIPPED check, even with a garbage signature.
	garbageEnv := strings.Replace(string(env), `"sig": "`, `"sig": "AAAA`, 1)
	if garbageEnv == string(env) {
		t.Fatalf("no signature to spoil in %s", env)
	}
	garbage := w("garbage.dsse.json", []byte(garbageEnv))
	for _, p := range []string{signed, garbage} {
		d, _, err = Load(p, "")
		if d != nil || !errors.Is(err, ErrNoKey) || !errors.Is(err, ErrInput) || strings.Contains(err.Error(), "--") {
			t.Fatalf("%s without key: %v, document %v", p, err, d != nil)
		}
	}
	if d, c, err = Load(plainDev, ""); err != nil || d == nil || c.Status != verify.Skipped || c.Cause != nil {
		t.Fatalf("plain dev without key: %v %+v", err, c)
	}
	if d, c, err = Load(plain, ""); err != nil || d != nil || c.Status != verify.Fail || !errors.Is(c.Cause, ErrUnsignedRelease) || !strings.Contains(c.Reason, `image "img"`) {
		t.Fatalf("plain release reference without key: %v %+v", err, c)
	}
	for name, tc := range map[string]struct{ path, key, want string }{
		"unsigned":  {plain, key, "not signed"},
		"wrong key": {signed, other, "signature check"},
		"tampered":  {tampered, key, "signature check"},
		"garbage":   {garbage, key, "signature check"},
	} {
		d, c, err := Load(tc.path, tc.key)
		if err != nil || d != nil || c.Status != verify.Fail || !strings.Contains(c.Reason, tc.want) {
			t.Errorf("%s: %v %+v", name, err, c)
		}
		if name == "unsigned" && (!errors.Is(c.Cause, ErrUnsigned) || strings.Contains(c.Reason, "--")) {
			t.Errorf("unsigned: cause %v, reason %q", c.Cause, c.Reason)
		}
		if r := verify.Refused(c); r.Trusted || r.ExitCode() != 1 {
			t.Errorf("%s: refused report exit %d", name, r.ExitCode())
		}
	}
	if _, _, err := Load(filepath.Join(dir, "missing.json"), ""); err == nil {
		t.Error("missing file loaded")
	}
	if _, _, err := Load(signed, w("junk.pem", []byte("junk"))); err == nil {
		t.Error("junk key accepted")
	}
}

// One Key checks many documents: the key is parsed once, a junk key
// fails each signed document as an input error, and an unsigned document
// is still refused as unsigned before the key is parsed (as Load does).
func TestDecodeWithOneKey(t *testing.T) {
	dir := t.TempDir()
	priv, pub, err := signing.GenerateKey("ed25519")
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, "pub.pem")
	os.WriteFile(keyPath, pub, 0o644)
	key, err := ReadKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"1", "2"} {
		raw, _ := (&refvalues.Document{Schema: refvalues.Schema, Image: refvalues.Image{Name: "img", Version: v}, Events: map[string][]refvalues.Event{}, Source: "builder"}).Marshal()
		env, err := signing.Sign(raw, priv)
		if err != nil {
			t.Fatal(err)
		}
		d, c, err := Decode("ref-"+v+".json", env, key)
		if err != nil || d == nil || d.Image.Version != v || c.Status != verify.Pass || c.Reason != "signed by "+keyPath {
			t.Fatalf("document %s: %v %+v", v, err, c)
		}
		if key.pub == nil {
			t.Fatal("key not kept parsed")
		}
		junkPath := filepath.Join(dir, "junk.pem")
		os.WriteFile(junkPath, []byte("junk"), 0o644)
		junk, err := ReadKey(junkPath)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := Decode("ref.json", env, junk); !errors.Is(err, ErrInput) {
			t.Fatalf("junk key: %v", err)
		}
		if d, c, err := Decode("plain.json", raw, junk); err != nil || d != nil || !errors.Is(c.Cause, ErrUnsigned) {
			t.Fatalf("unsigned with a junk key: %v %+v", err, c)
		}
	}
	if _, err := ReadKey(filepath.Join(dir, "missing.pem")); !errors.Is(err, ErrInput) {
		t.Fatalf("missing key: %v", err)
	}
}
