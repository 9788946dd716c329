package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/testutil/netutil"
)

const generateBody = `{"model":"tiny","prompt":"Hello tdforge","stream":false,"options":{"temperature":0,"num_predict":16,"num_thread":1,"seed":1}}`

// TestDevImage boots the dev image once and walks the user's path: verify,
// chat through the attested proxy, the web UI, a service crash, a clean
// power-off.
func TestDevImage(t *testing.T) {
	v := boot(t, devImage, bootOpts{debug: true})
	if err := v.waitHTTP("/readyz", 120*time.Second); err != nil {
		t.Fatalf("agent not ready (Ollama + quoting): %v\nconsole:\n%s", err, v.tail())
	}

	t.Run("verify", func(t *testing.T) {
		r, code, out := v.attest(t, "")
		if code != 0 || !r.Trusted || !r.Simulated || !strings.Contains(r.Verdict, "SIMULATED") {
			t.Fatalf("verifier: exit %d verdict %q\n%s", code, r.Verdict, out)
		}
		if !r.Service.Ready {
			t.Errorf("service reported down: %s", r.Service.Error)
		}
		for _, c := range r.Checks {
			if c.Status == "FAIL" {
				t.Errorf("check %s failed: %s", c.Name, c.Reason)
			}
		}
		// The agent quotes through initd's quoting socket (the one
		// privileged quoting path), which names the simulator backend.
		if !v.consoleHas("initd: quoting via simulator on /run/tdforge/quote.sock", time.Second) || !v.consoleHas("provider=simulator", time.Second) {
			t.Errorf("the agent does not quote through initd:\n%s", v.tail())
		}
		// Without --allow-simulated the same TD is refused.
		cmd := exec.Command(filepath.Join(binDir, "verifier"), "attest", "--reference", filepath.Join(devImage, "reference-values.json"), v.url(""))
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Fatalf("simulated quote accepted without --allow-simulated:\n%s", out)
		}
	})

	t.Run("rtmr3-equals-builder", func(t *testing.T) {
		var ref struct {
			Registers map[string]*string `json:"registers"`
		}
		b, _ := os.ReadFile(filepath.Join(devImage, "reference-values.json"))
		json.Unmarshal(b, &ref)
		if got := v.attestationRTMR3(t); ref.Registers["rtmr3"] == nil || got != *ref.Registers["rtmr3"] {
			t.Fatalf("RTMR3 in the quote %s, builder precomputed %v", got, ref.Registers["rtmr3"])
		}
	})

	var proxyURL string
	t.Run("proxy-chat", func(t *testing.T) {
		port := netutil.FreePort(t)
		proxyURL = fmt.Sprintf("http://127.0.0.1:%d", port)
		cmd := exec.Command(filepath.Join(binDir, "verifier"), "proxy", "--listen", fmt.Sprintf("127.0.0.1:%d", port),
			"--reference", filepath.Join(devImage, "reference-values.json"),
			"--allow-simulated", "--sim-root", v.simRoot, v.url(""))
		logf, _ := os.Create(filepath.Join(artDir, "proxy.log"))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); logf.Close() })
		c := &http.Client{Timeout: 120 * time.Second}
		var code int
		var body []byte
		var err error
		for i := 0; i < 50; i++ {
			code, body, err = postJSON(c, proxyURL+"/api/generate", generateBody)
			if err == nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil || code != 200 {
			t.Fatalf("generate through the proxy: %d %v %s", code, err, body)
		}
		var r struct {
			Response  string `json:"response"`
			EvalCount int    `json:"eval_count"`
		}
		json.Unmarshal(body, &r)
		if r.Response == "" || r.EvalCount == 0 {
			t.Fatalf("empty answer: %s", body)
		}
		t.Logf("answer: %q (%d tokens)", r.Response, r.EvalCount)
		// OpenAI-compatible API, streamed.
		req, _ := http.NewRequest("POST", proxyURL+"/v1/chat/completions", strings.NewReader(
			`{"model":"tiny","messages":[{"role":"user","content":"Hi"}],"stream":true,"max_tokens":8,"temperature":0}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		chunks := 0
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: {") {
				chunks++
			}
		}
		if resp.StatusCode != 200 || chunks < 2 {
			t.Fatalf("streamed OpenAI chat: HTTP %d, %d chunks", resp.StatusCode, chunks)
		}
	})

	t.Run("webui", func(t *testing.T) { testWebUI(t, v) })

	t.Run("ollama-crash-restarts", func(t *testing.T) {
		before := v.attestationRTMR3(t)
		out, err := v.debugCommand("kill ollama")
		if err != nil || !strings.HasPrefix(out, "ok") {
			t.Fatalf("debug channel: %q %v\nconsole:\n%s", out, err, v.tail())
		}
		if !v.consoleHas("restarting service ollama", 20*time.Second) {
			t.Fatalf("ollama was not restarted\n%s", v.tail())
		}
		if err := v.waitHTTP("/readyz", 60*time.Second); err != nil {
			t.Fatalf("not ready after the restart: %v", err)
		}
		code, body, err := postJSON(insecureClient(120*time.Second), v.url("/api/generate"), generateBody)
		if err != nil || code != 200 {
			t.Fatalf("chat after the restart: %d %v %s", code, err, body)
		}
		if after := v.attestationRTMR3(t); after != before {
			t.Fatalf("RTMR3 changed across a service restart: %s -> %s", before, after)
		}
	})

	t.Run("clean-poweroff", func(t *testing.T) {
		if err := v.shutdown(); err != nil {
			t.Fatalf("%v\n%s", err, v.tail())
		}
		if !v.consoleHas("initd: powering off", 5*time.Second) {
			t.Fatalf("no clean power-off on the console:\n%s", v.tail())
		}
	})
}
