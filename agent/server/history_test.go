package server

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/testutil/syncbuf"

	"github.com/tdforge/tdforge/agent/convstore"
	"github.com/tdforge/tdforge/internal/guest/volstatus"
	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/testutil/ollamatest"
)

// historyFixture is a server whose agent volume is the directory vol,
// with initd's status file saying state.
func historyFixture(t testing.TB, upstream, vol string, state volstatus.Status, logs io.Writer) *fixture {
	t.Helper()
	status := filepath.Join(t.TempDir(), "volumes")
	if state.State != "" {
		if err := volstatus.Write(status, "state", state); err != nil {
			t.Fatal(err)
		}
	}
	return newFixture(t, upstream, func(c *Config) {
		c.History = History{Volume: "state", Dir: vol, StatusDir: status}
		if logs != nil {
			c.Log = log.New(logs, "agent: ", 0)
		}
	})
}

// testBearer is the conversation owner's secret the history tests send.
const testBearer = "test-bearer-0123456789_abcdefghijklmnopq"

// benchOwner is the owner the benchmarks store under.
var benchOwner = convstore.Owner(testBearer)

// doAs is do with "Authorization: Bearer bearer" ("" sends none).
func doAs(t testing.TB, h http.Handler, bearer, method, target string, body io.Reader) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, body)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// newChatRequest builds a /api/chat request into conversation id with
// the test bearer.
func newChatRequest(body, id string) *http.Request {
	req := httptest.NewRequest("POST", "/api/chat", strings.NewReader(body))
	req.Header.Set(ConversationHeader, id)
	req.Header.Set("Authorization", "Bearer "+testBearer)
	return req
}

// doJSON sends a request with the test bearer and decodes the answer.
func doJSON(t testing.TB, h http.Handler, method, target, body string, want int, out any) *httptest.ResponseRecorder {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	rec := doAs(t, h, testBearer, method, target, r)
	if rec.Code != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, target, rec.Code, want, rec.Body)
	}
	if out != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, target, err, rec.Body)
		}
	}
	return rec
}

func TestConversationAPI(t *testing.T) {
	vol := t.TempDir()
	f := historyFixture(t, "http://127.0.0.1:1", vol, volstatus.Status{State: volstatus.Mounted}, nil)
	var created summaryResponse
	rec := doJSON(t, f.srv, "POST", "/v1/conversations", `{"title":"first","model":"tiny:latest","messages":[{"role":"user","content":"hi"}]}`, 201, &created)
	if !convstore.ValidID(created.ID) || created.Title != "first" || created.Summary.Messages != 1 || created.Generation != 1 {
		t.Fatalf("created %+v", created)
	}
	if loc := rec.Header().Get("Location"); loc != "/v1/conversations/"+created.ID {
		t.Fatalf("Location %q", loc)
	}
	var empty summaryResponse
	doJSON(t, f.srv, "POST", "/v1/conversations", "", 201, &empty)
	var list listResponse
	doJSON(t, f.srv, "GET", "/v1/conversations", "", 200, &list)
	if len(list.Conversations) != 2 || list.Generation != 2 {
		t.Fatalf("list %+v", list)
	}
	var got conversationResponse
	doJSON(t, f.srv, "GET", "/v1/conversations/"+created.ID, "", 200, &got)
	if len(got.Messages) != 1 || got.Messages[0].Content != "hi" || got.Generation != 2 {
		t.Fatalf("get %+v", got)
	}
	doJSON(t, f.srv, "DELETE", "/v1/conversations/"+created.ID, "", 200, nil)
	doJSON(t, f.srv, "GET", "/v1/conversations/"+created.ID, "", 404, nil)
	doJSON(t, f.srv, "DELETE", "/v1/conversations/"+created.ID, "", 404, nil)

	for _, tc := range []struct {
		method, target, body string
		code                 int
		msg                  string
	}{
		{"GET", "/v1/conversations/xyz", "", 400, "is not valid"},
		{"GET", "/v1/conversations/" + strings.Repeat("A", 32), "", 400, "32 lowercase hex"},
		{"GET", "/v1/conversations/" + created.ID + "/x", "", 400, "is not valid"},
		{"POST", "/v1/conversations", "{", 400, "not valid JSON"},
		{"POST", "/v1/conversations", `{"titel":"x"}`, 400, "unknown field"},
		{"POST", "/v1/conversations", `{} {}`, 400, "trailing data"},
		{"POST", "/v1/conversations", `{"messages":[{"role":"user","content":"` + strings.Repeat("a", convstore.MaxContent+1) + `"}]}`, 400, "the limit is"},
		{"POST", "/v1/conversations", `{"title":"` + strings.Repeat("a", convstore.MaxTitle+1) + `"}`, 400, "limited to"},
		{"POST", "/v1/conversations", strings.Repeat(" ", maxCreateBody+1), 413, "the limit is 8388608"},
		{"DELETE", "/v1/conversations", "", 405, "use GET, HEAD, POST"},
		{"PUT", "/v1/conversations", "", 405, "use GET, HEAD, POST"},
		{"POST", "/v1/conversations/" + created.ID, "", 405, "use GET, HEAD, DELETE"},
		{"PATCH", "/v1/conversations/" + created.ID, "", 405, "use GET, HEAD, DELETE"},
	} {
		var body io.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		rec := doAs(t, f.srv, testBearer, tc.method, tc.target, body)
		if rec.Code != tc.code {
			t.Errorf("%s %.60s: status %d, want %d: %.200s", tc.method, tc.target, rec.Code, tc.code, rec.Body)
			continue
		}
		if msg := errBody(t, rec); !strings.Contains(msg, tc.msg) {
			t.Errorf("%s %.60s: error %q does not say %q", tc.method, tc.target, msg, tc.msg)
		}
		if tc.code == 405 && rec.Header().Get("Allow") == "" {
			t.Errorf("%s %s: 405 without Allow", tc.method, tc.target)
		}
	}
}

// A page on another origin cannot create, read or delete conversations
// (a form POST needs no preflight); the agent's own page can.
func TestConversationCrossOrigin(t *testing.T) {
	f := historyFixture(t, "http://127.0.0.1:1", t.TempDir(), volstatus.Status{State: volstatus.Mounted}, nil)
	id := convstore.NewID()
	for _, tc := range []struct{ method, target string }{
		{"POST", "/v1/conversations"}, {"GET", "/v1/conversations"}, {"DELETE", "/v1/conversations/" + id},
	} {
		req := httptest.NewRequest(tc.method, tc.target, strings.NewReader("{}"))
		req.Header.Set("Origin", "https://evil.example")
		rec := httptest.NewRecorder()
		f.srv.ServeHTTP(rec, req)
		if rec.Code != 403 || !strings.Contains(errBody(t, rec), "other origins") {
			t.Fatalf("%s %s from another origin: %d %s", tc.method, tc.target, rec.Code, rec.Body)
		}
	}
	req := httptest.NewRequest("POST", "http://agent.example/v1/conversations", strings.NewReader("{}"))
	req.Header.Set("Origin", "http://agent.example")
	req.Header.Set("Authorization", "Bearer "+testBearer)
	rec := httptest.NewRecorder()
	f.srv.ServeHTTP(rec, req)
	if rec.Code != 201 {
		t.Fatalf("same-origin POST: %d %s", rec.Code, rec.Body)
	}
	var list listResponse
	doJSON(t, f.srv, "GET", "/v1/conversations", "", 200, &list)
	if len(list.Conversations) != 1 {
		t.Fatalf("%d conversations, want only the same-origin one", len(list.Conversations))
	}
}

// A second server on the same directory (an agent restart) sees what the
// first stored.
func TestConversationsSurviveRestart(t *testing.T) {
	vol := t.TempDir()
	f := historyFixture(t, "http://127.0.0.1:1", vol, volstatus.Status{State: volstatus.Mounted}, nil)
	var c summaryResponse
	doJSON(t, f.srv, "POST", "/v1/conversations", `{"title":"keep me","messages":[{"role":"user","content":"marker-restart"}]}`, 201, &c)
	if err := f.srv.Close(); err != nil {
		t.Fatal(err)
	}
	g := historyFixture(t, "http://127.0.0.1:1", vol, volstatus.Status{State: volstatus.Mounted}, nil)
	var got conversationResponse
	doJSON(t, g.srv, "GET", "/v1/conversations/"+c.ID, "", 200, &got)
	if got.Title != "keep me" || len(got.Messages) != 1 || got.Messages[0].Content != "marker-restart" || got.Generation != 1 {
		t.Fatalf("after restart: %+v", got)
	}
}

// A locked or failed volume (or none reported by initd): the API answers
// 503 with the reason, /readyz and the evidence report the state, and
// chat still works, unsaved.
func TestLockedVolume(t *testing.T) {
	up, _ := ollamatest.Fake(t, nil)
	for _, st := range []volstatus.Status{
		{State: volstatus.Locked, Reason: "the key broker refused this TD: RTMR2 mismatch"},
		{State: volstatus.Failed, Reason: "dm-integrity: tag mismatch"},
		{},
	} {
		vol := t.TempDir()
		f := historyFixture(t, up.URL, vol, st, nil)
		want := st.String()
		if st.State == "" {
			want = "locked (initd has not opened volume"
		}
		for _, target := range []string{"/v1/conversations", "/v1/conversations/" + convstore.NewID()} {
			rec := doAs(t, f.srv, testBearer, "GET", target, nil)
			if rec.Code != 503 || !strings.Contains(errBody(t, rec), want) {
				t.Fatalf("%s with volume %v: %d %s", target, st, rec.Code, rec.Body)
			}
		}
		rec := doAs(t, f.srv, testBearer, "POST", "/v1/conversations", strings.NewReader("{}"))
		if rec.Code != 503 {
			t.Fatalf("POST with volume %v: %d", st, rec.Code)
		}
		var ready map[string]any
		rec = doAs(t, f.srv, testBearer, "GET", "/readyz", nil)
		json.Unmarshal(rec.Body.Bytes(), &ready)
		if s, _ := ready["state"].(string); !strings.HasPrefix(s, want) || ready["state_generation"] != nil {
			t.Fatalf("readyz with volume %v: %s", st, rec.Body)
		}
		var ev attestation.Response
		doJSON(t, f.srv, "GET", "/v1/attestation?nonce="+strings.Repeat("ab", 32), "", 200, &ev)
		if !strings.HasPrefix(ev.State, want) || ev.StateGeneration != nil {
			t.Fatalf("evidence state %q generation %v", ev.State, ev.StateGeneration)
		}
		req := newChatRequest(`{"model":"tiny:latest","messages":[{"role":"user","content":"hi"}]}`, convstore.NewID())
		chat := httptest.NewRecorder()
		f.srv.ServeHTTP(chat, req)
		if chat.Code != 200 || !strings.Contains(chat.Body.String(), `"done":true`) || chat.Header().Get(HistoryHeader) != "unavailable" {
			t.Fatalf("chat with volume %v: %d %s %v", st, chat.Code, chat.Body, chat.Header())
		}
		if ents, _ := os.ReadDir(vol); len(ents) != 0 {
			t.Fatalf("the agent wrote %d files into an unopened volume", len(ents))
		}
	}
	// No volume at all: 503 naming the manifest fix; no state reported.
	f := newFixture(t, up.URL, nil)
	rec := doAs(t, f.srv, testBearer, "GET", "/v1/conversations", nil)
	if rec.Code != 503 || !strings.Contains(errBody(t, rec), "volume block") {
		t.Fatalf("no volume: %d %s", rec.Code, rec.Body)
	}
	if rec := doAs(t, f.srv, testBearer, "GET", "/readyz", nil); strings.Contains(rec.Body.String(), "state") {
		t.Fatalf("readyz mentions a state without a volume: %s", rec.Body)
	}
}

// RequireMount refuses a directory with nothing mounted on it.
func TestRequireMount(t *testing.T) {
	vol := t.TempDir()
	status := filepath.Join(t.TempDir(), "volumes")
	volstatus.Write(status, "state", volstatus.Status{State: volstatus.Mounted})
	f := newFixture(t, "http://127.0.0.1:1", func(c *Config) {
		c.History = History{Volume: "state", Dir: vol, StatusDir: status, RequireMount: true}
	})
	rec := doAs(t, f.srv, testBearer, "GET", "/v1/conversations", nil)
	if rec.Code != 503 || !strings.Contains(errBody(t, rec), "nothing is mounted at") {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}

// Chats sent with the conversation header are saved (question and the
// whole streamed answer); the generation rises with each write and the
// evidence and /readyz report it; no conversation text reaches the log.
func TestChatSavedAndGeneration(t *testing.T) {
	up, _ := ollamatest.Fake(t, nil)
	var logs syncbuf.Buffer
	f := historyFixture(t, up.URL, t.TempDir(), volstatus.Status{State: volstatus.Mounted}, &logs)
	var c summaryResponse
	doJSON(t, f.srv, "POST", "/v1/conversations", "", 201, &c)
	const marker = "MARKER-7f3a9c"
	for i, body := range []string{
		`{"model":"tiny:latest","messages":[{"role":"user","content":"` + marker + ` one"}]}`,
		`{"model":"tiny:latest","stream":true,"messages":[{"role":"user","content":"` + marker + ` one"},{"role":"assistant","content":"t0t1t2"},{"role":"user","content":"` + marker + ` two"}]}`,
	} {
		req := newChatRequest(body, c.ID)
		rec := httptest.NewRecorder()
		f.srv.ServeHTTP(rec, req)
		if rec.Code != 200 || rec.Header().Get(HistoryHeader) != "" {
			t.Fatalf("chat %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	var got conversationResponse
	doJSON(t, f.srv, "GET", "/v1/conversations/"+c.ID, "", 200, &got)
	want := []convstore.Message{{Role: "user", Content: marker + " one"}, {Role: "assistant", Content: "t0t1t2"},
		{Role: "user", Content: marker + " two"}, {Role: "assistant", Content: "t0t1t2"}}
	if len(got.Messages) != len(want) {
		t.Fatalf("messages %+v", got.Messages)
	}
	for i := range want {
		if got.Messages[i].Role != want[i].Role || got.Messages[i].Content != want[i].Content {
			t.Fatalf("message %d = %+v, want %+v", i, got.Messages[i], want[i])
		}
	}
	if got.Title != marker+" one" || got.Model != "tiny:latest" || got.Generation != 5 {
		t.Fatalf("conversation %+v generation %d, want 5 (create + 4 appends)", got.Summary, got.Generation)
	}
	var ev attestation.Response
	doJSON(t, f.srv, "GET", "/v1/attestation?nonce="+strings.Repeat("cd", 32), "", 200, &ev)
	if ev.State != "mounted" || ev.StateGeneration == nil || *ev.StateGeneration != 5 {
		t.Fatalf("evidence state %q generation %v", ev.State, ev.StateGeneration)
	}
	rec := doAs(t, f.srv, testBearer, "GET", "/readyz", nil)
	if !strings.Contains(rec.Body.String(), `"state":"mounted"`) || !strings.Contains(rec.Body.String(), `"state_generation":5`) {
		t.Fatalf("readyz %s", rec.Body)
	}
	// Errors: a bad id, an unknown conversation.
	for id, code := range map[string]int{"nope": 400, convstore.NewID(): 404} {
		req := newChatRequest(`{"model":"tiny:latest","messages":[{"role":"user","content":"`+marker+`"}]}`, id)
		rec := httptest.NewRecorder()
		f.srv.ServeHTTP(rec, req)
		if rec.Code != code {
			t.Fatalf("chat into %q: %d, want %d", id, rec.Code, code)
		}
	}
	if strings.Contains(logs.String(), marker) || strings.Contains(logs.String(), "t0t1t2") {
		t.Fatalf("conversation text in the agent's log:\n%s", logs.String())
	}
}

// What Ollama answers decides what is saved: a non-streamed answer (one
// JSON object, no trailing newline) is saved whole; an answer that fails
// or does not complete is not saved, the question is.
func TestChatAnswerSaved(t *testing.T) {
	for _, tc := range []struct {
		name, answer, stream string
		want                 []string // roles of the saved messages
	}{
		{"incomplete", `{"message":{"role":"assistant","content":"half"},"done":false}` + "\n" + `{"error":"runner crashed"}` + "\n", "", []string{"user"}},
		{"non-streamed", `{"model":"tiny:latest","message":{"role":"assistant","content":"whole answer"},"done":true}`, `"stream":false,`, []string{"user", "assistant:whole answer"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up, _ := ollamatest.Fake(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, tc.answer) })
			f := historyFixture(t, up.URL, t.TempDir(), volstatus.Status{State: volstatus.Mounted}, nil)
			var c summaryResponse
			doJSON(t, f.srv, "POST", "/v1/conversations", "", 201, &c)
			req := newChatRequest(`{"model":"tiny:latest",`+tc.stream+`"messages":[{"role":"user","content":"q"}]}`, c.ID)
			f.srv.ServeHTTP(httptest.NewRecorder(), req)
			var got conversationResponse
			doJSON(t, f.srv, "GET", "/v1/conversations/"+c.ID, "", 200, &got)
			var saved []string
			for _, m := range got.Messages {
				if m.Role == "assistant" {
					saved = append(saved, m.Role+":"+m.Content)
				} else {
					saved = append(saved, m.Role)
				}
			}
			if !slices.Equal(saved, tc.want) {
				t.Fatalf("saved %q, want %q", saved, tc.want)
			}
		})
	}
}

// The real Ollama: a chat is saved through a real HTTP connection, and
// neither the agent's log nor Ollama's output (which initd forwards to the
// console) contains the conversation.
func TestChatSavedRealOllamaNoLeak(t *testing.T) {
	if testing.Short() {
		t.Skip("builds or runs Ollama")
	}
	ol := ollamatest.Start(t)
	var logs syncbuf.Buffer
	f := historyFixture(t, ol.URL, t.TempDir(), volstatus.Status{State: volstatus.Mounted}, &logs)
	ts := httptest.NewServer(f.srv)
	defer ts.Close()
	creq, _ := http.NewRequest("POST", ts.URL+"/v1/conversations", nil)
	creq.Header.Set("Authorization", "Bearer "+testBearer)
	resp, err := http.DefaultClient.Do(creq)
	if err != nil {
		t.Fatal(err)
	}
	var c summaryResponse
	json.NewDecoder(resp.Body).Decode(&c)
	resp.Body.Close()
	const marker = "LEAKCHECK-51d0e2"
	req, _ := http.NewRequest("POST", ts.URL+"/api/chat", strings.NewReader(fmt.Sprintf(
		`{"model":%q,"messages":[{"role":"user","content":"%s"}],%s}`, ollamatest.Model, marker, opts)))
	req.Header.Set(ConversationHeader, c.ID)
	req.Header.Set("Authorization", "Bearer "+testBearer)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("chat: %s %s", resp.Status, answer)
	}
	var got conversationResponse
	doJSON(t, f.srv, "GET", "/v1/conversations/"+c.ID, "", 200, &got)
	if len(got.Messages) != 2 || got.Messages[0].Content != marker || got.Messages[1].Role != "assistant" {
		t.Fatalf("saved %+v", got.Messages)
	}
	if text, _, _ := ndjson(t, answer, func(m map[string]any) string {
		msg, _ := m["message"].(map[string]any)
		s, _ := msg["content"].(string)
		return s
	}); text != got.Messages[1].Content {
		t.Fatalf("saved answer %q, streamed %q", got.Messages[1].Content, text)
	}
	if strings.Contains(logs.String(), marker) {
		t.Fatalf("marker in the agent's log:\n%s", logs.String())
	}
	if out := ol.Output(); strings.Contains(out, marker) {
		t.Fatalf("marker in Ollama's output:\n%s", out)
	}
}

// The host forwards the agent's port: a client without the owner's bearer
// secret (the host) gets 401 with a challenge saying what to send, and a
// client with another secret lists nothing and gets 404 for the first
// client's conversation, exactly as for one that does not exist. Before
// conversations had owners, any client listed and read them all.
func TestConversationOwner(t *testing.T) {
	var upAuth syncbuf.Buffer // Authorization headers Ollama received
	up, _ := ollamatest.Fake(t, func(w http.ResponseWriter, r *http.Request) {
		upAuth.Write([]byte(r.Header.Get("Authorization")))
		io.WriteString(w, `{"message":{"role":"assistant","content":"a"},"done":true}`+"\n")
	})
	f := historyFixture(t, up.URL, t.TempDir(), volstatus.Status{State: volstatus.Mounted}, nil)
	const marker = "OWNER-MARKER-19c4"
	var c summaryResponse
	doJSON(t, f.srv, "POST", "/v1/conversations", `{"title":"`+marker+`","messages":[{"role":"user","content":"`+marker+`"}]}`, 201, &c)

	// The host: no bearer, or a malformed one.
	for _, auth := range []string{"", "Basic dXNlcjpwYXNz", "Bearer short", "Bearer " + strings.Repeat("a", 129), "Bearer " + strings.Repeat("a", 31) + "!", "Bearer"} {
		for _, tc := range []struct{ method, target string }{
			{"GET", "/v1/conversations"}, {"POST", "/v1/conversations"},
			{"GET", "/v1/conversations/" + c.ID}, {"DELETE", "/v1/conversations/" + c.ID},
		} {
			req := httptest.NewRequest(tc.method, tc.target, nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			rec := httptest.NewRecorder()
			f.srv.ServeHTTP(rec, req)
			if rec.Code != 401 || rec.Header().Get("WWW-Authenticate") != `Bearer realm="tdforge conversations"` ||
				!strings.Contains(errBody(t, rec), "Authorization: Bearer <secret>") || strings.Contains(rec.Body.String(), marker) {
				t.Fatalf("%s %s with Authorization %q: %d %v %s", tc.method, tc.target, auth, rec.Code, rec.Header(), rec.Body)
			}
		}
		// A chat that asks to be saved without the owner's secret is
		// refused and saves nothing.
		req := httptest.NewRequest("POST", "/api/chat", strings.NewReader(`{"model":"tiny:latest","messages":[{"role":"user","content":"intruder"}]}`))
		req.Header.Set(ConversationHeader, c.ID)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		f.srv.ServeHTTP(rec, req)
		if rec.Code != 401 || rec.Header().Get("WWW-Authenticate") == "" {
			t.Fatalf("chat into %s with Authorization %q: %d %s", c.ID, auth, rec.Code, rec.Body)
		}
	}
	// A chat that names no conversation needs no secret.
	if rec := doAs(t, f.srv, "", "POST", "/api/chat", strings.NewReader(`{"model":"tiny:latest","messages":[{"role":"user","content":"hi"}]}`)); rec.Code != 200 {
		t.Fatalf("unsaved chat without a bearer: %d %s", rec.Code, rec.Body)
	}

	// Another client with its own secret.
	const other = "another-client-secret-ABCDEFGHIJKLMNOPQRSTUV"
	rec := doAs(t, f.srv, other, "GET", "/v1/conversations", nil)
	var list listResponse
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &list) != nil || len(list.Conversations) != 0 || strings.Contains(rec.Body.String(), marker) {
		t.Fatalf("another owner lists: %d %s", rec.Code, rec.Body)
	}
	missing := doAs(t, f.srv, other, "GET", "/v1/conversations/"+convstore.NewID(), nil)
	for _, method := range []string{"GET", "DELETE"} {
		rec := doAs(t, f.srv, other, method, "/v1/conversations/"+c.ID, nil)
		if rec.Code != 404 || rec.Body.String() != missing.Body.String() {
			t.Fatalf("another owner %s %s: %d %s (a missing id: %s)", method, c.ID, rec.Code, rec.Body, missing.Body)
		}
	}
	req := httptest.NewRequest("POST", "/api/chat", strings.NewReader(`{"model":"tiny:latest","messages":[{"role":"user","content":"intruder"}]}`))
	req.Header.Set(ConversationHeader, c.ID)
	req.Header.Set("Authorization", "Bearer "+other)
	rec = httptest.NewRecorder()
	f.srv.ServeHTTP(rec, req)
	if rec.Code != 404 {
		t.Fatalf("another owner chats into %s: %d %s", c.ID, rec.Code, rec.Body)
	}
	var own conversationResponse
	doJSON(t, f.srv, "POST", "/v1/conversations", "", 201, nil)
	doAs(t, f.srv, other, "POST", "/v1/conversations", nil)
	doJSON(t, f.srv, "GET", "/v1/conversations", "", 200, &list)
	if len(list.Conversations) != 2 {
		t.Fatalf("the owner lists %d conversations, want its 2", len(list.Conversations))
	}

	// The owner still has its conversation, untouched; a saved chat with
	// the bearer works, and Ollama never sees the secret.
	rec = httptest.NewRecorder()
	f.srv.ServeHTTP(rec, newChatRequest(`{"model":"tiny:latest","messages":[{"role":"user","content":"mine"}]}`, c.ID))
	if rec.Code != 200 {
		t.Fatalf("owner's chat: %d %s", rec.Code, rec.Body)
	}
	doJSON(t, f.srv, "GET", "/v1/conversations/"+c.ID, "", 200, &own)
	if len(own.Messages) != 3 || own.Messages[0].Content != marker || own.Messages[1].Content != "mine" {
		t.Fatalf("owner's conversation: %+v", own.Messages)
	}
	if upAuth.String() != "" {
		t.Fatalf("Ollama received the bearer: %q", upAuth.String())
	}
}

// A conversation store whose rows the host changed (pages rolled back):
// while open, the read that meets them answers 500 and serves nothing of
// them; at open, the API answers 503. Either way /readyz and the evidence
// report the store failed, the log says why without conversation text or
// ids, and the database is left as found.
func TestTamperedStore(t *testing.T) {
	vol := t.TempDir()
	var logs syncbuf.Buffer
	f := historyFixture(t, "http://127.0.0.1:1", vol, volstatus.Status{State: volstatus.Mounted}, &logs)
	var c summaryResponse
	doJSON(t, f.srv, "POST", "/v1/conversations", `{"messages":[{"role":"user","content":"genuine"}]}`, 201, &c)
	raw, err := sql.Open("sqlite", filepath.Join(vol, convstore.FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec("UPDATE messages SET content = 'FORGED-by-host'"); err != nil {
		t.Fatal(err)
	}
	checkFailed := func(f *fixture, target string, code int) {
		t.Helper()
		rec := doAs(t, f.srv, testBearer, "GET", target, nil)
		if rec.Code != code || !strings.Contains(errBody(t, rec), "conversation store tampered with") || strings.Contains(rec.Body.String(), "FORGED") {
			t.Fatalf("GET %s: %d %s", target, rec.Code, rec.Body)
		}
		var ready map[string]any
		rec = doAs(t, f.srv, testBearer, "GET", "/readyz", nil)
		json.Unmarshal(rec.Body.Bytes(), &ready)
		if s, _ := ready["state"].(string); !strings.HasPrefix(s, "failed (") || !strings.Contains(s, "tampered with") || ready["state_generation"] != nil {
			t.Fatalf("readyz: %s", rec.Body)
		}
		var ev attestation.Response
		doJSON(t, f.srv, "GET", "/v1/attestation?nonce="+strings.Repeat("ab", 32), "", 200, &ev)
		if !strings.HasPrefix(ev.State, "failed (") || ev.StateGeneration != nil {
			t.Fatalf("evidence state %q generation %v", ev.State, ev.StateGeneration)
		}
		if l := logs.String(); !strings.Contains(l, "tampered with") || strings.Contains(l, "FORGED") || strings.Contains(l, c.ID) {
			t.Fatalf("agent log:\n%s", l)
		}
	}
	checkFailed(f, "/v1/conversations/"+c.ID, 500)
	checkFailed(f, "/v1/conversations", 500)
	if err := f.srv.Close(); err != nil {
		t.Fatal(err)
	}

	g := historyFixture(t, "http://127.0.0.1:1", vol, volstatus.Status{State: volstatus.Mounted}, &logs)
	checkFailed(g, "/v1/conversations", 503)
	checkFailed(g, "/v1/conversations/"+c.ID, 503)
	var content string
	if err := raw.QueryRow("SELECT content FROM messages").Scan(&content); err != nil || content != "FORGED-by-host" {
		t.Fatalf("the store was changed after the tamper error: %q, %v", content, err)
	}
}

// An answer that does not fit (the question filled the conversation) is
// not saved, and the console log says so without the conversation's id
// (the host reads the console). Before, the log held ErrFull's text,
// which named the conversation.
func TestChatAnswerFullLogsNoID(t *testing.T) {
	up, _ := ollamatest.Fake(t, nil)
	var logs syncbuf.Buffer
	f := historyFixture(t, up.URL, t.TempDir(), volstatus.Status{State: volstatus.Mounted}, &logs)
	msgs := make([]convstore.Message, convstore.MaxMessages-1)
	for i := range msgs {
		msgs[i] = convstore.Message{Role: "user", Content: "q"}
	}
	body, err := json.Marshal(createRequest{Messages: msgs})
	if err != nil {
		t.Fatal(err)
	}
	var c summaryResponse
	doJSON(t, f.srv, "POST", "/v1/conversations", string(body), 201, &c)
	rec := httptest.NewRecorder()
	f.srv.ServeHTTP(rec, newChatRequest(`{"model":"tiny:latest","messages":[{"role":"user","content":"last"}]}`, c.ID))
	if rec.Code != 200 {
		t.Fatalf("chat: %d %s", rec.Code, rec.Body)
	}
	var got conversationResponse
	doJSON(t, f.srv, "GET", "/v1/conversations/"+c.ID, "", 200, &got)
	if len(got.Messages) != convstore.MaxMessages || got.Messages[len(got.Messages)-1].Content != "last" {
		t.Fatalf("%d messages, the last %+v", len(got.Messages), got.Messages[len(got.Messages)-1])
	}
	l := logs.String()
	if !strings.Contains(l, "saving an answer") || !strings.Contains(l, "limit reached") {
		t.Fatalf("the log does not say the answer was not saved:\n%s", l)
	}
	if strings.Contains(l, c.ID) {
		t.Fatalf("the conversation id is in the agent's log:\n%s", l)
	}
}
