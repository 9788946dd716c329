package server

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/policy"
)

var testLimits = policy.Limits{NumCtx: 4096, NumPredict: 256, KeepAliveSeconds: 600}

// TestOptionLimits runs bodies through the agent to a recording Ollama:
// over-limit and unbounded values are refused with 400 naming the limit and
// never reach Ollama; absent num_predict / max_tokens / keep_alive arrive
// set to the limit; values within the limits arrive unchanged.
func TestOptionLimits(t *testing.T) {
	bodies := make(chan string, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies <- string(b)
		io.WriteString(w, "{}")
	}))
	defer up.Close()
	f := newFixture(t, up.URL, func(c *Config) { c.Policy.Agent.Limits = testLimits })
	refused := []struct{ path, body, want string }{
		{"/api/chat", `{"model":"m","options":{"num_ctx":8192}}`, "options.num_ctx 8192 exceeds this image's limit 4096 (manifest agent.max_num_ctx"},
		{"/api/generate", `{"model":"m","options":{"num_predict":257}}`, "limit 256 (manifest agent.max_num_predict"},
		{"/api/generate", `{"model":"m","options":{"num_predict":-1}}`, "limits it to 0..256"},
		{"/api/generate", `{"model":"m","options":{"num_predict":-2}}`, "limits it to 0..256"},
		{"/api/chat", `{"model":"m","options":{"num_ctx":0}}`, "limits it to 1..4096"},
		{"/api/chat", `{"model":"m","options":{"num_ctx":"big"}}`, "must be a number"},
		{"/api/chat", `{"model":"m","keep_alive":-1}`, `limit "10m0s" (manifest agent.max_keep_alive`},
		{"/api/chat", `{"model":"m","keep_alive":"-1m"}`, "max_keep_alive"},
		{"/api/chat", `{"model":"m","keep_alive":"11m"}`, "max_keep_alive"},
		{"/api/chat", `{"model":"m","keep_alive":601}`, "max_keep_alive"},
		{"/api/chat", `{"model":"m","keep_alive":"forever"}`, "not a duration"},
		{"/api/embed", `{"model":"m","options":{"num_ctx":100000}}`, "max_num_ctx"},
		{"/v1/chat/completions", `{"model":"m","max_tokens":1000}`, "max_tokens 1000 exceeds this image's limit 256"},
		{"/v1/completions", `{"model":"m","max_tokens":-1}`, "limits it to 0..256"},
		{"/v1/chat/completions", `{"model":"m","max_completion_tokens":999}`, "max_completion_tokens"},
		// Ollama decodes keys case-insensitively and merges repeated
		// objects: repeats are refused, other cases are checked.
		{"/api/chat", `{"model":"m","options":{"num_ctx":100000},"options":{"temperature":1}}`, `key "options" more than once`},
		{"/api/chat", `{"model":"m","options":{},"Options":{"num_ctx":100000}}`, `more than once`},
		{"/api/chat", `{"model":"m","Options":{"num_ctx":100000}}`, "max_num_ctx"},
		{"/api/chat", `{"model":"m","KEEP_ALIVE":"1h"}`, "max_keep_alive"},
		{"/api/chat", `{"model":"m","options":{"num_ctx":1,"num_ctx":100000}}`, `key "num_ctx" more than once`},
		{"/api/chat", `not json`, "not a JSON object"},
		{"/api/chat", `{"model":"m"} {"options":{"num_ctx":100000}}`, "trailing data"},
		{"/api/chat", `{"model":"m","options":[1]}`, "options is not a JSON object"},
	}
	for _, tc := range refused {
		rec := do(t, f.srv, "POST", tc.path, strings.NewReader(tc.body))
		if rec.Code != 400 || !strings.Contains(errBody(t, rec), tc.want) {
			t.Errorf("%s %s: %d %s, want 400 naming %q", tc.path, tc.body, rec.Code, rec.Body, tc.want)
		}
	}
	select {
	case b := <-bodies:
		t.Fatalf("a refused body reached Ollama: %s", b)
	default:
	}
	passed := []struct{ path, body, want string }{
		{"/api/chat", `{"model":"m","messages":[],"options":{"num_ctx":4096,"num_predict":256,"temperature":0},"keep_alive":"10m"}`,
			`{"model":"m","messages":[],"options":{"num_ctx":4096,"num_predict":256,"temperature":0},"keep_alive":"10m"}`},
		{"/api/generate", `{"model":"m","prompt":"hi"}`, `{"model":"m","prompt":"hi","keep_alive":600,"options":{"num_predict":256}}`},
		{"/api/generate", `{"model":"m","options":{"seed":1},"keep_alive":0}`, `{"model":"m","options":{"seed":1,"num_predict":256},"keep_alive":0}`},
		{"/api/chat", `{"model":"m","options":null,"keep_alive":null}`, `{"model":"m","options":{"num_predict":256},"keep_alive":600}`},
		{"/api/embed", `{"model":"m","input":"x"}`, `{"model":"m","input":"x","keep_alive":600}`},
		{"/v1/chat/completions", `{"model":"m","messages":[]}`, `{"model":"m","messages":[],"max_tokens":256}`},
		{"/v1/completions", `{"model":"m","prompt":"x","max_tokens":8}`, `{"model":"m","prompt":"x","max_tokens":8}`},
	}
	for _, tc := range passed {
		rec := do(t, f.srv, "POST", tc.path, strings.NewReader(tc.body))
		if rec.Code != 200 {
			t.Fatalf("%s %s: %d %s", tc.path, tc.body, rec.Code, rec.Body)
		}
		got := <-bodies
		var a, b any
		if json.Unmarshal([]byte(got), &a) != nil || json.Unmarshal([]byte(tc.want), &b) != nil || !jsonEqual(a, b) {
			t.Errorf("%s %s: Ollama got %s, want %s", tc.path, tc.body, got, tc.want)
		}
	}
	// Without limits the body passes byte for byte.
	g := newFixture(t, up.URL, nil)
	raw := `{"model":"m", "options":{"num_ctx":1000000}}`
	if rec := do(t, g.srv, "POST", "/api/chat", strings.NewReader(raw)); rec.Code != 200 {
		t.Fatalf("no limits: %d", rec.Code)
	}
	if got := <-bodies; got != raw {
		t.Fatalf("no limits: Ollama got %s", got)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
