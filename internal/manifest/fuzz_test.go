package manifest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// FuzzLoad checks that any input either loads or yields error diagnostics
// that all carry a source position, and never panics. Seeds live in
// testdata/fuzz/FuzzLoad.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(base))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, src []byte) {
		path := filepath.Join(dir, "fuzz.hcl")
		if err := os.WriteFile(path, src, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, allow := range []bool{true, false} {
			m, diags := Load(path, LoadOptions{AllowUnknown: allow})
			if diags.HasErrors() != (m == nil) {
				t.Fatalf("manifest %v with errors %v", m != nil, diags.HasErrors())
			}
			for _, d := range diags.Diags {
				if d.Severity == hcl.DiagError && d.Subject == nil {
					t.Fatalf("error without a source position: %s", d.Error())
				}
			}
			var js []JSONDiagnostic
			if err := json.Unmarshal(diags.JSON(), &js); err != nil || len(js) != len(diags.Diags) {
				t.Fatalf("JSON rendering: %v", err)
			}
			if m != nil && !allow && len(m.Unknown) != 0 {
				t.Fatalf("build mode returned unknown attributes %v", m.Unknown)
			}
		}
	})
}
