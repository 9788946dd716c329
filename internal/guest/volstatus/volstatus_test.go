package volstatus

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteRead(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "volumes")
	if s := Read(dir, "state"); s.State != Locked || !strings.Contains(s.Reason, "has not opened") {
		t.Fatalf("missing file: got %+v, want locked with a reason", s)
	}
	for _, want := range []Status{{State: Mounted}, {State: Locked, Reason: "key broker refused: RTMR2 mismatch"}, {State: Failed, Reason: "integrity error"}} {
		if err := Write(dir, "state", want); err != nil {
			t.Fatal(err)
		}
		if got := Read(dir, "state"); got != want {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	}
	if got := (Status{State: Locked, Reason: "x"}).String(); got != "locked (x)" {
		t.Fatalf("String = %q", got)
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	if err := Write(dir, "state", Status{State: "open"}); err == nil {
		t.Fatal("Write accepted state \"open\"")
	}
	if err := Write(dir, "../x", Status{State: Mounted}); err == nil {
		t.Fatal("Write accepted a name with a path")
	}
	for name, body := range map[string]string{
		"junk":    "not json",
		"unknown": `{"state":"mounted","extra":1}`,
		"two":     `{"state":"mounted"}{"state":"failed"}`,
		"state":   `{"state":"open"}`,
		"huge":    `{"state":"failed","reason":"` + strings.Repeat("a", 4096) + `"}`,
	} {
		if err := os.WriteFile(Path(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if s := Read(dir, name); s.State != Failed || s.Reason == "" {
			t.Errorf("%s: got %+v, want failed with a reason", name, s)
		}
	}
}
