package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/verify"

	"github.com/tdforge/tdforge/agent/internal/testenv"
	"github.com/tdforge/tdforge/agent/ratls"
	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/internal/testutil/ollamatest"
)

var (
	buildOnce sync.Once
	agentBin  string
	buildErr  error
)

// buildAgent compiles this command once per test binary.
func buildAgent(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tdforge-agent-bin")
		if err != nil {
			buildErr = err
			return
		}
		agentBin = filepath.Join(dir, "agent")
		out, err := exec.Command("go", "build", "-o", agentBin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return agentBin
}

type agentProc struct {
	cmd    *exec.Cmd
	urls   map[string]string // scheme -> base URL
	stderr *strings.Builder
}

var listenRE = regexp.MustCompile(`^tdforge-agent listening (https?)://(\S+) provider=(\S+)$`)

// startAgent runs the agent binary and waits for its listeners.
func startAgent(t testing.TB, args []string, want int) *agentProc {
	t.Helper()
	cmd := exec.Command(buildAgent(t), args...)
	stdout, _ := cmd.StdoutPipe()
	p := &agentProc{cmd: cmd, urls: map[string]string{}, stderr: &strings.Builder{}}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	deadline := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	for len(p.urls) < want && sc.Scan() {
		if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
			p.urls[m[1]] = m[1] + "://" + m[2]
		}
	}
	if len(p.urls) < want {
		t.Fatalf("agent did not start: %s", p.stderr)
	}
	go io.Copy(io.Discard, stdout)
	return p
}

// TestAgentProcess runs the real binary: RA-TLS handshake, attestation over
// TLS bound to the peer certificate, plain dev listener, clean SIGTERM.
func TestAgentProcess(t *testing.T) {
	up, _ := ollamatest.Fake(t, nil)
	env, err := testenv.Setup(t.TempDir(), up.URL)
	if err != nil {
		t.Fatal(err)
	}
	p := startAgent(t, append(env.Args(), "-plain-http", "127.0.0.1:0"), 2)

	var peer *tls.ConnectionState
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, // trust comes from the quote in the certificate
		VerifyConnection: func(cs tls.ConnectionState) error {
			leaf := cs.PeerCertificates[0]
			ev, err := ratls.Extract(leaf)
			if err != nil {
				return err
			}
			if err := ratls.CheckBinding(leaf, ev); err != nil {
				return err
			}
			if err := verify.RawTdxQuote(ev.Quote, &verify.Options{TrustedRoots: sim.RootPool(env.PKI)}); err != nil {
				return err
			}
			peer = &cs
			return nil
		},
	}}}
	nonce := strings.Repeat("c3", 24)
	resp, err := client.Get(p.urls["https"] + "/v1/attestation?nonce=" + nonce)
	if err != nil {
		t.Fatalf("%v\n%s", err, p.stderr)
	}
	var att attestation.Response
	if err := json.NewDecoder(resp.Body).Decode(&att); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if peer == nil {
		t.Fatal("RA-TLS certificate not checked")
	}
	spki := attestation.SPKIHash(peer.PeerCertificates[0].RawSubjectPublicKeyInfo)
	nb, _ := hex.DecodeString(nonce)
	want, _ := attestation.ReportData(nb, spki)
	got, _ := sim.ReportData(att.Quote)
	if got != want || att.ReportData.SPKIHash != hex.EncodeToString(spki[:]) {
		t.Fatal("attestation quote does not bind the nonce and the TLS key the client is talking to")
	}
	if err := verify.RawTdxQuote(att.Quote, &verify.Options{TrustedRoots: sim.RootPool(env.PKI)}); err != nil {
		t.Fatal(err)
	}
	// Chat through TLS.
	resp, err = client.Post(p.urls["https"]+"/api/chat", "application/json", strings.NewReader(`{"model":"m"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Count(string(body), "\n") != 4 || !strings.Contains(string(body), "eval_count") {
		t.Fatalf("chat body %q", body)
	}
	// The plain dev listener.
	resp, err = http.Get(p.urls["http"] + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent exit after SIGTERM: %v\n%s", err, p.stderr)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("agent did not stop on SIGTERM")
	}
}

// runAgentExpectFailure runs the agent in this process with buffers: it
// must exit 1 before listening, naming want in its log.
func runAgentExpectFailure(t *testing.T, args []string, want string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run(args, &stdout, &stderr); code != cli.ExitFail || stdout.Len() != 0 {
		t.Fatalf("want exit 1 and no listener, got %d: %s%s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), want) {
		t.Fatalf("log does not mention %q:\n%s", want, stderr.String())
	}
}

// Without tdx.simulate the agent refuses initd's simulator backend.
func TestAgentNeverFallsBackToSimulator(t *testing.T) {
	env, err := testenv.Setup(t.TempDir(), "http://127.0.0.1:11434")
	if err != nil {
		t.Fatal(err)
	}
	env.Policy.TDX.Simulate = false
	b, _ := env.Policy.Marshal()
	os.WriteFile(env.PolicyPath, b, 0o644)
	runAgentExpectFailure(t, env.Args(), "initd quotes with simulator but the boot policy says tdx.simulate = false")
}

func TestAgentBadInputs(t *testing.T) {
	env, err := testenv.Setup(t.TempDir(), "http://127.0.0.1:11434")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(env.PolicyPath, []byte(`{"version":1,"bogus":true}`), 0o644)
	runAgentExpectFailure(t, env.Args(), "boot policy")

	env, _ = testenv.Setup(t.TempDir(), "http://127.0.0.1:11434")
	os.Remove(env.RuntimeLog)
	runAgentExpectFailure(t, env.Args(), "runtime event log unavailable")

	env, _ = testenv.Setup(t.TempDir(), "ftp://nowhere")
	runAgentExpectFailure(t, env.Args(), "must be an http(s) URL")

	// Without initd's quoting socket the agent names it; the hint says
	// the agent quotes through initd.
	env, _ = testenv.Setup(t.TempDir(), "http://127.0.0.1:11434")
	os.Remove(env.Socket)
	runAgentExpectFailure(t, env.Args(), "hint: the agent quotes through initd")

	var stdout, stderr bytes.Buffer
	if code := run([]string{"-nope"}, &stdout, &stderr); code != cli.ExitUsage || !strings.Contains(stderr.String(), "-nope") {
		t.Fatalf("bad flag: exit %d, stderr %q", code, stderr.String())
	}
	stderr.Reset()
	if code := run([]string{"extra"}, &stdout, &stderr); code != cli.ExitUsage ||
		!strings.Contains(stderr.String(), "agent: unexpected arguments") || !strings.Contains(stderr.String(), "agent: hint: ") {
		t.Fatalf("stray argument: exit %d, stderr %q", code, stderr.String())
	}
	if stdout.Len() != 0 {
		t.Fatalf("stdout %q", stdout.String())
	}
}

// vmHWM reads a process's peak resident set (VmHWM) in bytes.
func vmHWM(tb testing.TB, pid int) float64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb float64
			fmt.Sscanf(strings.TrimSpace(v), "%f kB", &kb)
			return kb * 1024
		}
	}
	tb.Fatal("no VmHWM")
	return 0
}

// BenchmarkAgentRSS64Streams runs the agent as its own process and holds 64
// concurrent streaming chats open through TLS; it reports the agent's peak
// RSS (VmHWM) against the 64 MiB goal and against the idle agent (baseline).
func BenchmarkAgentRSS64Streams(b *testing.B) {
	const streams = 64
	release := make(chan struct{})
	var started sync.WaitGroup
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/version" {
			io.WriteString(w, `{"version":"0.5.7"}`)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		io.WriteString(w, `{"message":{"content":"first"},"done":false}`+"\n")
		w.(http.Flusher).Flush()
		started.Done()
		for i := 0; ; i++ {
			select {
			case <-release:
				io.WriteString(w, `{"done":true}`+"\n")
				return
			case <-r.Context().Done():
				return
			case <-time.After(20 * time.Millisecond):
				fmt.Fprintf(w, `{"message":{"content":"t%d"},"done":false}`+"\n", i)
				w.(http.Flusher).Flush()
			}
		}
	}))
	defer up.Close()
	env, err := testenv.Setup(b.TempDir(), up.URL)
	if err != nil {
		b.Fatal(err)
	}
	p := startAgent(b, env.Args(), 1)
	pid := p.cmd.Process.Pid
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true}, // load only; binding is tested elsewhere
		MaxIdleConnsPerHost: streams,
	}}
	resp, err := client.Get(p.urls["https"] + "/v1/attestation?nonce=" + strings.Repeat("00", 32))
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	idle := vmHWM(b, pid)
	var peak float64
	for b.Loop() {
		release = make(chan struct{})
		started.Add(streams)
		var done sync.WaitGroup
		for i := 0; i < streams; i++ {
			done.Add(1)
			go func() {
				defer done.Done()
				resp, err := client.Post(p.urls["https"]+"/api/chat", "application/json", strings.NewReader(`{"model":"m","stream":true}`))
				if err != nil {
					b.Error(err)
					started.Done()
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}()
		}
		started.Wait()
		time.Sleep(500 * time.Millisecond) // streams flowing
		peak = max(peak, vmHWM(b, pid))
		close(release)
		done.Wait()
	}
	const mib = 1 << 20
	b.ReportMetric(peak/mib, "VmHWM-MiB")
	b.ReportMetric(idle/mib, "idle-VmHWM-MiB")
	b.ReportMetric(peak/(64*mib), "VmHWM/64MiB-goal")
	b.ReportMetric(peak/idle, "VmHWM/idle")
}
