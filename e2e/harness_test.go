// Package e2e boots the dev image under QEMU TCG with the TDX simulator and
// checks the whole product: build, launch, attestation, verification, chat
// through the attested proxy, the web UI in headless Chromium, supervision,
// and tamper detection. Every QEMU is bounded by timeouts and killed by PID.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/image/imagedir"
	"github.com/tdforge/tdforge/internal/testutil/netutil"
)

var (
	repoRoot string
	binDir   string
	devImage string // built once by TestMain
	artDir   string // test artifacts (screenshots, consoles)
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	wd, _ := os.Getwd()
	repoRoot = filepath.Dir(wd)
	tmp, err := os.MkdirTemp("", "tdforge-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	binDir = filepath.Join(tmp, "bin")
	artDir = filepath.Join(repoRoot, "images", "test-artifacts")
	os.MkdirAll(artDir, 0o755)
	for _, p := range []string{"builder", "verifier"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, p), "./"+p)
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: building %s: %v\n%s", p, err, out)
			return 1
		}
	}
	devImage = filepath.Join(tmp, "dev")
	cmd := exec.Command(filepath.Join(binDir, "builder"), "build", "--secrets", "manifests/dev-secrets", "-o", devImage, "manifests/dev.hcl")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building the dev image: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// vm is one booted guest.
type vm struct {
	t       testing.TB
	dir     string
	port    int
	pid     int
	console string
	qmp     string
	debug   string
	stopped bool
	// simRoot is the launch's simulator root certificate, which `builder
	// launch --simulate` writes next to its --pidfile: each launch makes a
	// fresh simulator PKI, so this is the only root its quotes chain to.
	simRoot string
	// broker is the dev key broker started for this boot (nil: none).
	broker *serveProc
}

type bootOpts struct {
	disk    string
	cmdline string
	debug   bool
	wait    time.Duration
	device  string // an extra QEMU -device (changes the VM's ACPI tables)
	// noBroker boots without the dev key broker (started by default, once
	// the launch wrote its simulator root, while initd retries).
	noBroker bool
	// refs is the reference values the broker appraises against (default:
	// the booted image's own reference-values.json).
	refs string
}

// boot launches image dir with builder launch --simulate --detach and waits
// for the agent's /readyz (or only for /healthz when Ollama is expected to
// be down).
func boot(t testing.TB, dir string, o bootOpts) *vm {
	t.Helper()
	run := t.TempDir()
	v := &vm{t: t, dir: dir, port: netutil.FreePort(t), console: filepath.Join(artDir, sanitize(t.Name())+"-console.log"),
		qmp: filepath.Join(run, "qmp.sock")}
	pidfile := filepath.Join(run, "qemu.pid")
	v.simRoot = filepath.Join(run, "sim-root.pem")
	args := []string{"launch", "--simulate", "--run", "--detach", "--port", strconv.Itoa(v.port),
		"--serial", v.console, "--pidfile", pidfile, "--qmp", v.qmp}
	if o.disk == "" {
		// launch writes a sealed volume's region in place: each boot gets
		// its own copy of the disk, so the built image stays as built
		// (TestRepro compares it) and no test sees another's volume.
		o.disk = filepath.Join(run, "disk.raw")
		if out, err := exec.Command("cp", "--sparse=always", filepath.Join(dir, imagedir.Disk), o.disk).CombinedOutput(); err != nil {
			t.Fatalf("copying the disk: %v %s", err, out)
		}
	}
	args = append(args, "--disk", o.disk)
	if o.cmdline != "" {
		args = append(args, "--cmdline", o.cmdline)
	}
	if o.device != "" {
		args = append(args, "--extra-device", o.device)
	}
	if o.debug {
		v.debug = filepath.Join(run, "debug.sock")
		args = append(args, "--debug-socket", v.debug)
	}
	args = append(args, dir)
	os.Remove(v.console)
	out, err := exec.Command(filepath.Join(binDir, "builder"), args...).CombinedOutput()
	if b, rerr := os.ReadFile(pidfile); rerr == nil {
		v.pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	t.Cleanup(v.kill)
	if err != nil {
		t.Fatalf("builder launch: %v\n%s\nconsole:\n%s", err, out, v.tail())
	}
	if !bytes.Contains(out, []byte("simulator root certificate for verifier --sim-root: "+v.simRoot+"\n")) {
		t.Fatalf("builder launch did not name the launch's simulator root %s:\n%s", v.simRoot, out)
	}
	if !o.noBroker {
		refs := o.refs
		if refs == "" {
			refs = filepath.Join(dir, "reference-values.json")
		}
		v.broker = startBroker(t, v.simRoot, refs)
	}
	wait := o.wait
	if wait == 0 {
		wait = 150 * time.Second
	}
	if err := v.waitHTTP("/healthz", wait); err != nil {
		t.Fatalf("agent never answered /healthz: %v\nconsole:\n%s", err, v.tail())
	}
	return v
}

func sanitize(s string) string { return strings.NewReplacer("/", "_", " ", "_").Replace(s) }

func (v *vm) url(p string) string { return fmt.Sprintf("https://127.0.0.1:%d%s", v.port, p) }

// client trusts any certificate: these requests are test plumbing; the
// verifier is what checks the TD.
func insecureClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
}

// waitHTTP waits up to limit for the agent to answer path with 200; it
// gives up at once when QEMU exits.
func (v *vm) waitHTTP(path string, limit time.Duration) error {
	return netutil.WaitOK(insecureClient(3*time.Second), v.url(path), limit, func() error {
		if v.pid > 0 && syscall.Kill(v.pid, 0) != nil {
			return errors.New("QEMU exited")
		}
		return nil
	})
}

func (v *vm) tail() string {
	b, _ := os.ReadFile(v.console)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// consoleHas waits until the console log contains s.
func (v *vm) consoleHas(s string, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(v.console); bytes.Contains(b, []byte(s)) {
			return true
		}
		time.Sleep(300 * time.Millisecond)
	}
	return false
}

// shutdown powers the guest off through the ACPI power button.
func (v *vm) shutdown() error {
	if v.stopped {
		return nil
	}
	v.stopped = true
	tmp, err := os.MkdirTemp("", "tdforge-e2e-pid")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	pidfile := filepath.Join(tmp, "pid")
	os.WriteFile(pidfile, []byte(strconv.Itoa(v.pid)), 0o644)
	out, err := exec.Command(filepath.Join(binDir, "builder"), "shutdown", "--qmp", v.qmp, "--pidfile", pidfile, "--timeout", "40s").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

func (v *vm) kill() {
	if v.pid > 0 && syscall.Kill(v.pid, 0) == nil {
		syscall.Kill(v.pid, syscall.SIGKILL)
	}
}

// debugCommand sends one line on the dev-only debug channel.
func (v *vm) debugCommand(cmd string) (string, error) {
	c, err := net.DialTimeout("unix", v.debug, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", cmd); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// verifierResult is the part of `verifier --json` the tests read.
type verifierResult struct {
	Service struct {
		Ready bool   `json:"ready"`
		Error string `json:"error"`
	} `json:"service"`
	Verdict    string `json:"verdict"`
	Trusted    bool   `json:"trusted"`
	Simulated  bool   `json:"simulated"`
	Checks     []struct{ Name, Status, Reason string }
	Mismatches []struct {
		Register    string `json:"register"`
		EventIndex  int    `json:"event_index"`
		Description string `json:"description"`
		Component   string `json:"component"`
		Expected    string `json:"expected"`
		Got         string `json:"got"`
	} `json:"mismatches"`
}

// attest runs `verifier attest --json` against the guest, with extra
// verifier flags.
func (v *vm) attest(t *testing.T, ref string, extra ...string) (*verifierResult, int, string) {
	t.Helper()
	if ref == "" {
		ref = filepath.Join(v.dir, "reference-values.json")
	}
	args := append([]string{"attest", "--json", "--reference", ref,
		"--allow-simulated", "--sim-root", v.simRoot}, extra...)
	cmd := exec.Command(filepath.Join(binDir, "verifier"), append(args, fmt.Sprintf("https://127.0.0.1:%d", v.port))...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("verifier: %v", err)
	}
	var r verifierResult
	if jerr := json.Unmarshal(stdout.Bytes(), &r); jerr != nil {
		t.Fatalf("verifier --json output (exit %d) is not JSON: %v\nstdout:\n%s\nstderr:\n%s", code, jerr, stdout.String(), stderr.String())
	}
	return &r, code, stdout.String() + stderr.String()
}

// attestationRTMR3 returns RTMR3 from a fresh quote, read raw.
func (v *vm) attestationRTMR3(t *testing.T) string {
	t.Helper()
	nonce := strings.Repeat("ab", 32)
	resp, err := insecureClient(30 * time.Second).Get(v.url("/v1/attestation?nonce=" + nonce))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Quote []byte `json:"quote"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	const rtmr3 = 48 + 0x1d8
	if len(body.Quote) < rtmr3+48 {
		t.Fatalf("quote too short: %d bytes", len(body.Quote))
	}
	return fmt.Sprintf("%x", body.Quote[rtmr3:rtmr3+48])
}

// postJSON posts body as JSON to url and returns the status and body.
func postJSON(c *http.Client, url, body string) (int, []byte, error) {
	return httpDo(c, "", "POST", url, body)
}

// httpDo sends body as JSON with method to url, with bearer as the
// Authorization token unless it is empty, and returns the status and body.
func httpDo(c *http.Client, bearer, method, url, body string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// copyImage copies a build output directory so a test can tamper with it.
func copyImage(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "img")
	out, err := exec.Command("cp", "-a", "--sparse=always", src, dst).CombinedOutput()
	if err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	return dst
}
