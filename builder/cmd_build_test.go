package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/image/imagedir"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/register"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/internal/testutil/testdeps"
)

// tinyManifest writes a small manifest: the pinned firmware and kernel
// packages, a local dir payload and a url payload whose address is a
// variable (so measure without it has a missing input).
func tinyManifest(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "site"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "site", "index.html"), []byte("<p>hi</p>\n"), 0o644)
	m := fmt.Sprintf(`variable "extra_url" {
  type = string
}
image {
  name              = "tiny"
  version           = "1"
  source_date_epoch = 1
  dev               = true
}
%skernel {
%s  cmdline = "console=ttyS0"
}
vm {
  cpus     = 2
  memory   = "2G"
  platform = "qemu-7.2-tcg-sim"
}
tdx {
  simulate = true
}
network {
  mode = "none"
}
payload "site" {
  dir {
    path = "site"
  }
}
payload "extra" {
  url {
    url    = var.extra_url
    sha256 = %q
  }
}
agent {
  listen = ":8443"
  tls    = true
}
`, testdeps.FirmwareHCL(t), testdeps.DebHCL(t, testdeps.KernelDeb(t), "boot/vmlinuz-6.12.117+deb12-cloud-amd64"), sha256hex(extraPayload))
	path := filepath.Join(dir, "tiny.hcl")
	if err := os.WriteFile(path, []byte(m), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

var extraPayload = []byte("extra payload\n")

func sha256hex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, cmd func(context.Context, []string, io.Writer, io.Writer) int, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := cmd(context.Background(), args, &out, &errb)
	return result{code, out.String(), errb.String()}
}

// registers returns the "NAME value" lines of measure's text output.
func registers(out string) map[string]string {
	regs := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && (f[0] == "MRTD" || strings.HasPrefix(f[0], "RTMR")) {
			regs[strings.ToLower(f[0])] = f[1]
		}
	}
	return regs
}

// One pipeline: measure reports the missing input and the registers it
// leaves unknown; build and measure with every input agree on every
// register; the tools' output goes to a log beside the output directory.
func TestBuildMeasureInspectCommands(t *testing.T) {
	manifest := tinyManifest(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(extraPayload) }))
	defer srv.Close()
	cache := "-cache=" + t.TempDir()

	r := run(t, runValidate, manifest)
	if r.code != cli.ExitOK || !strings.Contains(r.stdout, "manifest OK: tiny 1 (2 payloads, 0 services)") || !strings.Contains(r.stderr, "payload.extra.url.url") {
		t.Fatalf("validate: %+v", r)
	}

	r = run(t, runMeasure, cache, manifest)
	if r.code != cli.ExitOK {
		t.Fatalf("measure without extra_url: %+v", r)
	}
	for _, want := range []string{`missing   payload "extra": depends on unset variables (payload.extra.url.url) (no verity_root_hash pin)`,
		"RTMR3     unknown: payload(s) extra have no verity root hash here", "RTMR2     unknown: the initrd holds the boot policy"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("measure output lacks %q:\n%s", want, r.stdout)
		}
	}
	if !strings.Contains(r.stderr, "[3/7] payloads: skipped: RTMR3 cannot be computed without the bytes or the verity_root_hash pin of extra") {
		t.Errorf("measure did not report the skipped step:\n%s", r.stderr)
	}
	if regs := registers(r.stdout); regs["mrtd"] == "" || regs["rtmr0"] == "" {
		t.Errorf("MRTD/RTMR0 need no payload: %v", regs)
	}

	// A download that fails is a missing input too, not an error.
	r = run(t, runMeasure, cache, "-var", "extra_url=http://127.0.0.1:1/x", manifest)
	if r.code != cli.ExitOK || !strings.Contains(r.stdout, `payload "extra": its input could not be fetched`) {
		t.Fatalf("measure with an unreachable input: %+v", r)
	}

	out := filepath.Join(t.TempDir(), "img")
	r = run(t, runBuild, cache, "-o", out, "-var", "extra_url="+srv.URL+"/extra", manifest)
	if r.code != cli.ExitOK || !strings.Contains(r.stdout, "built tiny 1 [DEV, SIMULATED TDX] into "+out) {
		t.Fatalf("build: %+v", r)
	}
	if !strings.Contains(r.stderr, "[1/9] firmware: fetch and check the firmware") || !strings.Contains(r.stderr, "[9/9] info: write build.json") {
		t.Errorf("build did not print its steps:\n%s", r.stderr)
	}
	if _, err := os.Stat(out + ".build.log"); err != nil {
		t.Errorf("no build log beside the output: %v", err)
	}
	info, err := imagedir.ReadInfo(out)
	if err != nil {
		t.Fatal(err)
	}
	for name := range info.Artifacts {
		if strings.Contains(name, "log") {
			t.Errorf("the output directory holds %s", name)
		}
		// The simulator PKI is made per launch, never built: a build
		// output anyone can rebuild must not hold (or derive) its keys.
		if strings.HasPrefix(name, "sim") || strings.Contains(name, "pki") {
			t.Errorf("the output directory holds simulator PKI material %s", name)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "sim")); !os.IsNotExist(err) {
		t.Errorf("a simulated image's build output has sim/: %v", err)
	}
	ref, err := refvalues.ReadFile(filepath.Join(out, imagedir.ReferenceValues))
	if err != nil {
		t.Fatal(err)
	}

	r = run(t, runMeasure, cache, "-var", "extra_url="+srv.URL+"/extra", manifest)
	if r.code != cli.ExitOK || strings.Contains(r.stdout, "missing") {
		t.Fatalf("measure with every input: %+v", r)
	}
	regs := registers(r.stdout)
	for _, reg := range register.All {
		n := reg.Key()
		v := ref.Registers.Get(reg)
		if v == nil || regs[n] != *v {
			t.Errorf("%s: measure says %q, the build %v", n, regs[n], v)
		}
	}
	if !strings.Contains(r.stdout, "RTMR3     "+regs["rtmr3"]) || len(regs) != 5 {
		t.Errorf("measure output:\n%s", r.stdout)
	}

	testSimulatedLaunchPKI(t, out)

	r = run(t, runInspect, out)
	if r.code != cli.ExitOK || !strings.Contains(r.stdout, "payload   #1 site") || !strings.Contains(r.stdout, "rtmr3     "+regs["rtmr3"]) {
		t.Errorf("inspect: %+v", r)
	}

	// A changed local input is refused; the CLI adds the flag that accepts it.
	os.WriteFile(filepath.Join(filepath.Dir(manifest), "site", "index.html"), []byte("<p>changed</p>\n"), 0o644)
	r = run(t, runBuild, cache, "-o", out, "-var", "extra_url="+srv.URL+"/extra", manifest)
	if r.code != cli.ExitFail || !strings.Contains(r.stderr, "input payload.site changed") ||
		!strings.Contains(r.stderr, "builder build: hint: if the change is intended, run 'builder build -update-lock'") {
		t.Errorf("changed input: %+v", r)
	}
}

func TestBuildLog(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		failed, verbose bool
		want            string // on stderr
	}{
		{false, false, ""},
		{true, false, "build log " + filepath.Join(dir, "x.build.log") + ":\nwarning: chatter\n"},
		{false, true, "warning: chatter\n"},
		{true, true, "warning: chatter\n"},
	} {
		var stderr bytes.Buffer
		l, err := openBuildLog(filepath.Join(dir, "x.build.log"), tc.verbose, &stderr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(l, "warning: chatter\n")
		l.finish(tc.failed, tc.verbose, &stderr)
		if stderr.String() != tc.want {
			t.Errorf("failed=%v verbose=%v: stderr %q, want %q", tc.failed, tc.verbose, stderr.String(), tc.want)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "x.build.log")); string(b) != "warning: chatter\n" {
			t.Errorf("log holds %q", b)
		}
	}
	// A scratch log (measure) is removed after a successful run, kept after a failure.
	var stderr bytes.Buffer
	l, err := openBuildLog("", false, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	l.finish(false, false, &stderr)
	if _, err := os.Stat(l.path); !os.IsNotExist(err) {
		t.Errorf("scratch log left behind: %v", err)
	}
	long := &bytes.Buffer{}
	for i := range logTail + 5 {
		fmt.Fprintf(long, "line %d\n", i)
	}
	l, _ = openBuildLog("", false, &stderr)
	l.Write(long.Bytes())
	l.finish(true, false, &stderr)
	defer os.Remove(l.path)
	if s := stderr.String(); !strings.Contains(s, "(5 earlier lines in "+l.path+")") || strings.Contains(s, "line 4\n") || !strings.HasSuffix(s, fmt.Sprintf("\nline %d\n", logTail+4)) {
		t.Errorf("failure tail:\n%s", s)
	}
}

func TestValidateAndFmtCommands(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.hcl")
	os.WriteFile(path, []byte("image {\nname = \"x\"\n}\n"), 0o644)
	r := run(t, runFmt, "-check", path)
	if r.code != cli.ExitFail || r.stdout != path+"\n" {
		t.Fatalf("fmt -check: %+v", r)
	}
	if r = run(t, runFmt, path); r.code != cli.ExitOK {
		t.Fatalf("fmt: %+v", r)
	}
	if b, _ := os.ReadFile(path); string(b) != "image {\n  name = \"x\"\n}\n" {
		t.Fatalf("formatted: %q", b)
	}
	if r = run(t, runFmt, "-check", dir); r.code != cli.ExitOK || r.stdout != "" {
		t.Fatalf("fmt -check after fmt: %+v", r)
	}
	if r = run(t, runFmt); r.code != cli.ExitUsage {
		t.Fatalf("fmt without args: %+v", r)
	}
	r = run(t, runValidate, "--json", path)
	if r.code != cli.ExitFail || !strings.HasPrefix(r.stdout, "[") || !strings.Contains(r.stdout, "version") {
		t.Fatalf("validate --json of an incomplete manifest: %+v", r)
	}
	if r = run(t, runValidate); r.code != cli.ExitUsage || !strings.Contains(r.stderr, "want exactly one MANIFEST") {
		t.Fatalf("validate without args: %+v", r)
	}
}

func TestProgramHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := program().Run(context.Background(), []string{"help"}, &out, &errb); code != cli.ExitOK {
		t.Fatal(code)
	}
	for _, c := range program().Commands {
		if !strings.Contains(out.String(), "  "+c.Name+" ") {
			t.Errorf("help lacks %s", c.Name)
		}
	}
	if !strings.Contains(out.String(), "3  a remote input could not be fetched") {
		t.Errorf("help lacks the exit codes:\n%s", out.String())
	}
}

// A setting outside the payloads that depends on a variable without a value
// is never measured as empty: the registers it reaches are unknown, and an
// input of every register stops measure with a hint.
func TestMeasureUnsetSettings(t *testing.T) {
	manifest := tinyManifest(t)
	src, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	write := func(old, new string) string {
		t.Helper()
		s := strings.Replace(string(src), old, new, 1)
		if s == string(src) {
			t.Fatalf("%q not in the manifest", old)
		}
		s += "variable \"setting\" {\n  type = string\n}\n"
		p := filepath.Join(filepath.Dir(manifest), "unset.hcl")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cache := "-cache=" + t.TempDir()

	r := run(t, runMeasure, cache, "-var", "extra_url=http://127.0.0.1:1/x", write(`cmdline = "console=ttyS0"`, "cmdline = var.setting"))
	if r.code != cli.ExitOK {
		t.Fatalf("measure with an unset cmdline: %+v", r)
	}
	regs := registers(r.stdout)
	if regs["mrtd"] == "" || regs["rtmr0"] == "" || regs["rtmr1"] != "" || regs["rtmr2"] != "" || regs["rtmr3"] != "" {
		t.Errorf("an unset kernel.cmdline must leave RTMR1..3 unknown and MRTD/RTMR0 known: %v\n%s", regs, r.stdout)
	}
	if strings.Contains(r.stdout, "could not be fetched") || !strings.Contains(r.stderr, "[3/7] payloads: skipped: RTMR3 cannot be computed: its configuration event covers kernel.cmdline") {
		t.Errorf("measure built payloads whose registers it cannot compute:\n%s", r.stderr)
	}
	for _, want := range []string{"missing   kernel.cmdline: depends on a variable without a value",
		"RTMR2     unknown: the kernel command line and the boot policy in the initrd are measured, and kernel.cmdline depends on a variable without a value\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("measure output lacks %q:\n%s", want, r.stdout)
		}
	}

	r = run(t, runMeasure, cache, write(`memory   = "2G"`, "memory   = var.setting"))
	if r.code != cli.ExitFail || !strings.Contains(r.stderr, "builder measure: cannot measure: vm.memory has no value") ||
		!strings.Contains(r.stderr, "builder measure: hint: give each variable a value with -var NAME=VALUE or -var-file FILE") {
		t.Errorf("measure with an unset vm.memory: %+v", r)
	}
}

// testSimulatedLaunchPKI: every `builder launch --simulate` makes a fresh
// simulator PKI; only its root certificate is published (next to
// --pidfile, 0644, path on stdout), while the private keys stay in the
// launch's private 0700 state directory that QEMU reads.
func testSimulatedLaunchPKI(t *testing.T, img string) {
	t.Helper()
	runDir := t.TempDir()
	pidfile := filepath.Join(runDir, "qemu.pid")
	var roots []string
	var pkis []sim.PKI
	for i := 0; i < 2; i++ {
		r := run(t, runLaunch, "--simulate", "--pidfile", pidfile, img)
		rootPath := filepath.Join(runDir, imagedir.SimRootFile)
		if r.code != cli.ExitOK || !strings.Contains(r.stdout, "# simulator root certificate for verifier --sim-root: "+rootPath+"\n") {
			t.Fatalf("launch --simulate: %+v", r)
		}
		st, err := os.Stat(rootPath)
		if err != nil || st.Mode().Perm() != 0o644 {
			t.Fatalf("%s: %v %v", rootPath, err, st)
		}
		root, _ := os.ReadFile(rootPath)
		if !strings.Contains(string(root), "BEGIN CERTIFICATE") || strings.Contains(string(root), "PRIVATE KEY") {
			t.Fatalf("%s is not just a certificate:\n%s", rootPath, root)
		}
		roots = append(roots, string(root))
		// The fw_cfg PKI (with the private keys) is in the state directory.
		var pkiFile string
		for _, a := range strings.Fields(r.stdout) {
			if f, ok := strings.CutPrefix(a, "name="+sim.FWCfgPKI+",file="); ok {
				pkiFile = f
			}
		}
		if pkiFile == "" {
			t.Fatalf("no -fw_cfg %s in %s", sim.FWCfgPKI, r.stdout)
		}
		defer os.RemoveAll(filepath.Dir(pkiFile))
		fst, err := os.Stat(pkiFile)
		dst, _ := os.Stat(filepath.Dir(pkiFile))
		if err != nil || fst.Mode().Perm() != 0o600 || dst.Mode().Perm() != 0o700 {
			t.Fatalf("private PKI %s: %v file %v dir %v", pkiFile, err, fst.Mode(), dst.Mode())
		}
		b, _ := os.ReadFile(pkiFile)
		var pki sim.PKI
		if err := json.Unmarshal(b, &pki); err != nil || pki.RootCert != string(root) || pki.AttestationKey == "" {
			t.Fatalf("the launch's PKI does not match its published root: %v", err)
		}
		pkis = append(pkis, pki)
	}
	if roots[0] == roots[1] {
		t.Fatal("two launches of the same image share a simulator root")
	}
	// The verifier given this launch's root refuses anyone else's quotes,
	// the previous launch's included.
	testForgedSimulatorMITM(t, []byte(roots[1]), &pkis[1], &pkis[0])
}
