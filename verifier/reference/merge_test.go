package reference

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/internal/tdx/signing"
)

func hexOf(b byte) string {
	return hex.EncodeToString(bytes.Repeat([]byte{b}, 48))
}

// A builder reference for a real-TDX profile (RTMR0 null) and a recording
// of the same image on trusted hardware.
func mergeDocs() (ref, rec *refvalues.Document) {
	ref = &refvalues.Document{Schema: refvalues.Schema, Image: refvalues.Image{Name: "img", Version: "1", Memory: "2G", CPUs: 2},
		Platform: refvalues.Platform{Name: "qemu-10.2-tdx"}, Events: map[string][]refvalues.Event{}, Source: "builder",
		Reasons: map[string]string{"rtmr0": "no ACPI digests"}}
	rec = &refvalues.Document{Schema: refvalues.Schema, Image: refvalues.Image{Name: "recorded"}, Source: "recorded",
		Events: map[string][]refvalues.Event{"rtmr0": {{Type: "EV_SEPARATOR", Description: "separator", Digest: hexOf(0x39)}}}}
	for i, reg := range register.All {
		rec.Registers.Set(reg, bytes.Repeat([]byte{byte(i + 1)}, 48))
		if reg != register.RTMR0 {
			ref.Registers.Set(reg, bytes.Repeat([]byte{byte(i + 1)}, 48))
		}
	}
	return ref, rec
}

func TestMerge(t *testing.T) {
	ref, rec := mergeDocs()
	if replaced, err := Merge(ref, rec, Shape{Name: "tdx-2G-2cpu"}); err != nil || replaced {
		t.Fatal(replaced, err)
	}
	m := ref.Accepted.RTMR0[0]
	if m.Value != hexOf(2) || m.Platform != "qemu-10.2-tdx" || m.Memory != "2G" || m.CPUs != 2 || m.Source != "recorded" || len(m.Events) != 1 {
		t.Fatalf("member %+v", m)
	}
	// Another shape adds a member; the same name replaces it.
	rec.Registers.Set(register.RTMR0, bytes.Repeat([]byte{0x77}, 48))
	if replaced, err := Merge(ref, rec, Shape{Name: "tdx-16G-4cpu", Memory: "16G", CPUs: 4}); err != nil || replaced || len(ref.Accepted.RTMR0) != 2 {
		t.Fatal(replaced, err, len(ref.Accepted.RTMR0))
	}
	if replaced, err := Merge(ref, rec, Shape{Name: "tdx-2G-2cpu"}); err != nil || !replaced || len(ref.Accepted.RTMR0) != 2 || ref.Accepted.RTMR0[0].Value != hexOf(0x77) {
		t.Fatal(replaced, err, ref.Accepted.RTMR0)
	}
	// The merged document decodes strictly and survives signing.
	raw, err := ref.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	priv, pub, err := signing.GenerateKey("ecdsa-p256")
	if err != nil {
		t.Fatal(err)
	}
	env, err := signing.Sign(raw, priv)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ref.dsse.json"), env, 0o644)
	os.WriteFile(filepath.Join(dir, "pub.pem"), pub, 0o644)
	got, chk, err := Load(filepath.Join(dir, "ref.dsse.json"), filepath.Join(dir, "pub.pem"))
	if err != nil || got == nil || got.Accepted == nil || len(got.Accepted.RTMR0) != 2 || got.Accepted.RTMR0[1].Name != "tdx-16G-4cpu" {
		t.Fatalf("signed merged document: %v %+v", err, chk)
	}

	// Refusals.
	for name, tc := range map[string]struct {
		edit func(ref, rec *refvalues.Document, s *Shape)
		want string
	}{
		"no name":        {func(_, _ *refvalues.Document, s *Shape) { s.Name = "" }, "needs a name"},
		"pinned RTMR0":   {func(ref, _ *refvalues.Document, _ *Shape) { ref.Registers.Set(register.RTMR0, make([]byte, 48)) }, "already pins RTMR0"},
		"not recorded":   {func(_, rec *refvalues.Document, _ *Shape) { rec.Source = "builder" }, "verifier record"},
		"other image":    {func(_, rec *refvalues.Document, _ *Shape) { rec.Registers.Set(register.RTMR1, make([]byte, 48)) }, "does not run this reference's image: its RTMR1"},
		"other platform": {func(_, _ *refvalues.Document, s *Shape) { s.Platform = "qemu-7.2-tcg-sim" }, "is not the reference's"},
		"unpinned event": {func(_, rec *refvalues.Document, _ *Shape) { rec.Events["rtmr0"][0].Digest = refvalues.NotPinned }, "is not pinned"},
	} {
		ref, rec := mergeDocs()
		s := Shape{Name: "x"}
		tc.edit(ref, rec, &s)
		if _, err := Merge(ref, rec, s); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}
