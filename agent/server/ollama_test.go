package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/testutil/netutil"
	"github.com/tdforge/tdforge/internal/testutil/ollamatest"
)

const opts = `"options":{"temperature":0,"num_thread":1,"num_predict":24,"seed":1}`

func post(t testing.TB, c *http.Client, url, body string) []byte {
	t.Helper()
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s: %s: %s", url, resp.Status, b)
	}
	return b
}

func get(t testing.TB, url string) []byte {
	t.Helper()
	code, b := netutil.Get(t, url)
	if code != 200 {
		t.Fatalf("GET %s: %d: %s", url, code, b)
	}
	return b
}

// ndjson decodes an Ollama stream: the concatenated text, the number of
// non-final chunks carrying text, and the final chunk's eval_count.
func ndjson(t testing.TB, b []byte, field func(map[string]any) string) (text string, chunks, evalCount int) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("bad chunk %q: %v", sc.Text(), err)
		}
		if m["done"] == true {
			evalCount = int(m["eval_count"].(float64))
			continue
		}
		text += field(m)
		chunks++
	}
	return
}

func chatContent(m map[string]any) string {
	msg, _ := m["message"].(map[string]any)
	s, _ := msg["content"].(string)
	return s
}

func genResponse(m map[string]any) string { s, _ := m["response"].(string); return s }

// sse decodes an OpenAI-compatible stream into its text.
func sse(t testing.TB, b []byte, chat bool) (string, bool) {
	var text string
	done := false
	for _, line := range strings.Split(string(b), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var m struct {
			Choices []struct {
				Delta struct{ Content string } `json:"delta"`
				Text  string                   `json:"text"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(data), &m); err != nil {
			t.Fatalf("bad SSE data %q", data)
		}
		for _, c := range m.Choices {
			if chat {
				text += c.Delta.Content
			} else {
				text += c.Text
			}
		}
	}
	return text, done
}

// TestOllamaThroughAgent drives a real Ollama v0.5.7 with the tiny model
// through the agent: both APIs, streamed and not, compared with talking to
// Ollama directly; then 64 concurrent streaming chats.
func TestOllamaThroughAgent(t *testing.T) {
	ol := ollamatest.Start(t)
	f := newFixture(t, ol.URL, nil)
	agent := httptest.NewServer(f.srv)
	defer agent.Close()
	c := &http.Client{Timeout: 2 * time.Minute}
	model := ollamatest.Model

	genBody := func(stream bool) string {
		return fmt.Sprintf(`{"model":%q,"prompt":"hello world","stream":%v,%s}`, model, stream, opts)
	}
	chatBody := func(stream bool) string {
		return fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"tell me a story"}],"stream":%v,%s}`, model, stream, opts)
	}

	// Native API, non-streamed: identical to direct.
	var direct, via struct {
		Response  string `json:"response"`
		EvalCount int    `json:"eval_count"`
	}
	json.Unmarshal(post(t, c, ol.URL+"/api/generate", genBody(false)), &direct)
	json.Unmarshal(post(t, c, agent.URL+"/api/generate", genBody(false)), &via)
	if direct.Response == "" || via.Response != direct.Response || via.EvalCount != direct.EvalCount {
		t.Fatalf("generate via agent %q (%d), direct %q (%d)", via.Response, via.EvalCount, direct.Response, direct.EvalCount)
	}
	// Native API, streamed: same text, one chunk per evaluated token.
	text, chunks, ec := ndjson(t, post(t, c, agent.URL+"/api/generate", genBody(true)), genResponse)
	if text != direct.Response || chunks != ec || ec != direct.EvalCount {
		t.Fatalf("streamed generate %q chunks=%d eval_count=%d", text, chunks, ec)
	}
	var chatDirect struct {
		Message struct{ Content string } `json:"message"`
	}
	json.Unmarshal(post(t, c, ol.URL+"/api/chat", chatBody(false)), &chatDirect)
	var chatVia = chatDirect
	json.Unmarshal(post(t, c, agent.URL+"/api/chat", chatBody(false)), &chatVia)
	if chatDirect.Message.Content == "" || chatVia.Message.Content != chatDirect.Message.Content {
		t.Fatalf("chat via agent %q, direct %q", chatVia.Message.Content, chatDirect.Message.Content)
	}
	text, chunks, ec = ndjson(t, post(t, c, agent.URL+"/api/chat", chatBody(true)), chatContent)
	if text != chatDirect.Message.Content || chunks != ec {
		t.Fatalf("streamed chat %q chunks=%d eval_count=%d", text, chunks, ec)
	}

	// OpenAI-compatible API.
	oaChat := func(stream bool) string {
		return fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"tell me a story"}],"stream":%v,"temperature":0,"seed":1,"max_tokens":24}`, model, stream)
	}
	var oa struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	json.Unmarshal(post(t, c, agent.URL+"/v1/chat/completions", oaChat(false)), &oa)
	if len(oa.Choices) != 1 || oa.Choices[0].Message.Content == "" {
		t.Fatalf("openai chat: %+v", oa)
	}
	st, done := sse(t, post(t, c, agent.URL+"/v1/chat/completions", oaChat(true)), true)
	if st != oa.Choices[0].Message.Content || !done {
		t.Fatalf("openai streamed chat %q (done=%v) vs %q", st, done, oa.Choices[0].Message.Content)
	}
	comp := fmt.Sprintf(`{"model":%q,"prompt":"hello world","stream":true,"temperature":0,"seed":1,"max_tokens":24}`, model)
	if st, done := sse(t, post(t, c, agent.URL+"/v1/completions", comp), false); st == "" || !done {
		t.Fatalf("openai streamed completion %q", st)
	}

	// Listing and metadata endpoints.
	if b := get(t, agent.URL+"/api/tags"); !strings.Contains(string(b), model) {
		t.Fatalf("tags %s", b)
	}
	if b := get(t, agent.URL+"/v1/models"); !strings.Contains(string(b), model) {
		t.Fatalf("v1 models %s", b)
	}
	if b := get(t, agent.URL+"/api/version"); !strings.Contains(string(b), "0.5.7") {
		t.Fatalf("version %s", b)
	}
	if b := post(t, c, agent.URL+"/api/show", fmt.Sprintf(`{"model":%q}`, model)); !strings.Contains(string(b), "llama") {
		t.Fatalf("show %s", b)
	}
	// Readiness includes a one-token probe of every model (real weights).
	var ready []byte
	for i := 0; i < 200; i++ {
		resp, err := http.Get(agent.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		ready, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(string(ready), `"ready"`) || !strings.Contains(string(ready), model) {
		t.Fatalf("readyz %s", ready)
	}
	// Model management is refused even with a real Ollama behind.
	resp, _ := c.Post(agent.URL+"/api/delete", "application/json", strings.NewReader(fmt.Sprintf(`{"model":%q}`, model)))
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("delete: %s", resp.Status)
	}
	if b := get(t, ol.URL+"/api/tags"); !strings.Contains(string(b), model) {
		t.Fatal("model vanished")
	}

	t.Run("load64", func(t *testing.T) { loadTest(t, f.srv, agent, model) })
}

// loadTest runs 64 concurrent streaming chats through the agent; each must
// complete with as many chunks as its eval_count, and the agent's
// goroutines must settle afterwards.
func loadTest(t *testing.T, srv *Server, agent *httptest.Server, model string) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	runtime.GC()
	base := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"story number %d"}],"stream":true,%s}`, model, i, opts)
			req, _ := http.NewRequestWithContext(ctx, "POST", agent.URL+"/api/chat", strings.NewReader(body))
			resp, err := client.Do(req)
			if err != nil {
				errs <- err
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				errs <- fmt.Errorf("stream %d: %v %s", i, err, resp.Status)
				return
			}
			_, chunks, ec := ndjson(t, b, chatContent)
			if ec == 0 || chunks != ec {
				errs <- fmt.Errorf("stream %d: %d chunks, eval_count %d", i, chunks, ec)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("64 concurrent streams in %v", time.Since(start))
	client.CloseIdleConnections()
	srv.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g := runtime.NumGoroutine()
		if g <= base+2 {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines %d after load, %d before:\n%s", g, base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}
