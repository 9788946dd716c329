package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReproducibleBuild rebuilds manifests/dev.hcl under different
// conditions — another checkout directory, output directory, TZ, umask,
// HOME, input cache, Go build cache and wall-clock date (faketime) — and
// asserts every artifact is byte-identical to the first build.
func TestReproducibleBuild(t *testing.T) {
	faketime, err := exec.LookPath("faketime")
	if err != nil {
		t.Fatal("faketime missing: run 'make deps' (Debian package faketime)")
	}
	// A second checkout: only tracked and new source files, elsewhere.
	src := filepath.Join(t.TempDir(), "elsewhere", "tdforge")
	files, err := exec.Command("git", "-C", repoRoot, "ls-files", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Split(strings.TrimSpace(string(files)), "\n") {
		if f == "" {
			continue
		}
		from := filepath.Join(repoRoot, f)
		st, err := os.Lstat(from)
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		to := filepath.Join(src, f)
		os.MkdirAll(filepath.Dir(to), 0o755)
		if err := os.WriteFile(to, b, st.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	home := t.TempDir()
	out := filepath.Join(t.TempDir(), "other-output")
	gomodcache, _ := exec.Command("go", "env", "GOMODCACHE").Output()
	script := `umask 077 && exec "$@"`
	cmd := exec.Command("bash", "-c", script, "bash", faketime, "-f", "+1900d",
		filepath.Join(binDir, "builder"), "build", "--secrets", "manifests/dev-secrets", "-o", out, "manifests/dev.hcl")
	cmd.Dir = src
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + home, "TZ=Pacific/Kiritimati", "LANG=C",
		"TDFORGE_CACHE=" + filepath.Join(home, "other-cache"),
		"GOCACHE=" + filepath.Join(home, "gocache"), "GOMODCACHE=" + strings.TrimSpace(string(gomodcache)),
		"GOTOOLCHAIN=local", "GOFLAGS=-buildvcs=false",
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("second build: %v\n%s", err, b)
	}
	read := func(dir string) map[string]string {
		var info struct {
			Artifacts map[string]string `json:"artifacts"`
		}
		b, err := os.ReadFile(filepath.Join(dir, "build.json"))
		if err != nil {
			t.Fatal(err)
		}
		json.Unmarshal(b, &info)
		return info.Artifacts
	}
	a, b := read(devImage), read(out)
	if len(a) == 0 {
		t.Fatal("no artifacts recorded")
	}
	for name, sum := range a {
		if b[name] != sum {
			t.Errorf("%s differs: %s vs %s", name, sum, b[name])
		}
	}
	if len(a) != len(b) {
		t.Errorf("artifact sets differ: %d vs %d", len(a), len(b))
	}
	if t.Failed() {
		d, _ := exec.Command(filepath.Join(binDir, "builder"), "diff", devImage, out).CombinedOutput()
		t.Logf("builder diff:\n%s", d)
		return
	}
	if d, err := exec.Command(filepath.Join(binDir, "builder"), "diff", devImage, out).CombinedOutput(); err != nil {
		t.Fatalf("builder diff reports differences: %v\n%s", err, d)
	}
	t.Logf("%d artifacts byte-identical across checkouts, TZ, umask, HOME, caches and a clock 1900 days ahead", len(a))
}
