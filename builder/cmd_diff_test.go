package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/image/diff"
)

// TestDiffCommand checks the command's exit codes and its JSON and text
// output; internal/image/diff tests the comparison itself.
func TestDiffCommand(t *testing.T) {
	root := t.TempDir()
	write := func(dir string, files map[string]string) string {
		dir = filepath.Join(root, dir)
		for p, c := range files {
			os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
			if err := os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	a := write("a", map[string]string{"cmdline.txt": "console=ttyS0", "notes.txt": "only in a"})
	a2 := write("a2", map[string]string{"cmdline.txt": "console=ttyS0", "notes.txt": "only in a"})
	b := write("b", map[string]string{"cmdline.txt": "console=hvc0"})

	run := func(args ...string) (int, string) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		code := runDiff(context.Background(), args, &stdout, &stderr)
		return code, stdout.String()
	}
	code, text := run(a, a2)
	if code != cli.ExitOK || text != "same       cmdline.txt\nsame       notes.txt\nidentical\n" {
		t.Errorf("identical dirs: exit %d, output:\n%s", code, text)
	}
	code, text = run(a, b)
	if code != cli.ExitFail || !strings.HasPrefix(text, "different  cmdline.txt\n    A: 13 bytes sha256 ") ||
		!strings.HasSuffix(text, "missing in b notes.txt\ndifferent\n") {
		t.Errorf("different dirs: exit %d, output:\n%s", code, text)
	}
	code, js := run("--json", a, b)
	var rep diff.Report
	if err := json.Unmarshal([]byte(js), &rep); err != nil || code != cli.ExitFail || rep.Identical || len(rep.Artifacts) != 2 ||
		rep.Artifacts[1].Status != "missing_in_b" {
		t.Errorf("--json: exit %d, %v:\n%s", code, err, js)
	}
	if code, _ := run(a); code != cli.ExitUsage {
		t.Errorf("one argument: exit %d, want %d", code, cli.ExitUsage)
	}
	if code, _ := run(a, filepath.Join(root, "none")); code != cli.ExitFail {
		t.Errorf("missing directory: exit %d, want %d", code, cli.ExitFail)
	}
}
