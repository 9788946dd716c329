package lockfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const digA = "1111111111111111111111111111111111111111111111111111111111111111"
const digB = "2222222222222222222222222222222222222222222222222222222222222222"

func TestMissingFileIsEmpty(t *testing.T) {
	l, err := Read(filepath.Join(t.TempDir(), "none.lock.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Entries) != 0 || l.Has("payload.webui") {
		t.Fatalf("want empty lock, got %+v", l.Entries)
	}
	err = l.Check("payload.webui", digA)
	if !errors.Is(err, ErrNotRecorded) || !strings.Contains(err.Error(), "payload.webui") {
		t.Fatalf("Check on empty lock: %v", err)
	}
}

func TestRoundTripSortedAndAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.hcl.lock.hcl")
	l := &Lock{}
	l.Set("payload.webui", digA)
	l.SetKind("payload.webui", "dir")
	l.Set("payload.extra", digB)
	if err := l.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	want := "input \"payload.extra\" {\n  sha256 = \"" + digB + "\"\n}\n\ninput \"payload.webui\" {\n  kind   = \"dir\"\n  sha256 = \"" + digA + "\"\n}\n"
	if !strings.HasSuffix(s, want) || !strings.HasPrefix(s, "# This file is maintained by builder build") {
		t.Fatalf("lock file content:\n%s\nwant suffix:\n%s", s, want)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temporary files left behind: %v", ents)
	}
	r, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if r.Entries["payload.webui"] != (Entry{Kind: "dir", SHA256: digA}) || r.Entries["payload.extra"] != (Entry{SHA256: digB}) {
		t.Fatalf("read back %+v", r.Entries)
	}
	if err := r.Check("payload.webui", digA); err != nil {
		t.Fatal(err)
	}
	err = r.Check("payload.webui", digB)
	var ce *ChangedError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), digA) || !strings.Contains(err.Error(), digB) {
		t.Fatalf("mismatch error must be a *ChangedError showing both digests: %v", err)
	}
	// Writing the same lock twice yields identical bytes.
	if string(r.Bytes()) != s {
		t.Fatalf("re-rendered lock differs:\n%s", r.Bytes())
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`input "a" {`, "Unclosed configuration block"},
		{`input "a" { sha256 = "x" }` + "\n" + `input "a" { sha256 = "y" }`, `input "a" is recorded twice`},
		{`input "a" { kind = "dir" }`, `Missing required argument`},
		{`input "a" { sha256 = 3 }`, "must be a string"},
		{`input "a" { sha256 = "" }`, "empty sha256"},
		{`other "a" {}`, "Unsupported block type"},
		{`input "a" { sha265 = "x" }`, `Did you mean "sha256"?`},
	} {
		_, err := Parse([]byte(tc.src), "x.lock.hcl")
		var se *SyntaxError
		if tc.want == "Unclosed configuration block" && !errors.As(err, &se) {
			t.Errorf("Parse(%q) = %v, want a *SyntaxError", tc.src, err)
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", tc.src, err, tc.want)
		}
	}
}
