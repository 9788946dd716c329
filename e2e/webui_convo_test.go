package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tdforge/tdforge/agent/server"
	"github.com/tdforge/tdforge/internal/guest/volstatus"
	"github.com/tdforge/tdforge/internal/tdx/event"
	"github.com/tdforge/tdforge/internal/tdx/policy"
	"github.com/tdforge/tdforge/internal/tdx/quote"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/internal/testutil/ollamatest"
)

// convoAgent runs the real agent handler (simulated quotes, the repository's
// web UI, a scripted Ollama) with its state volume in a directory whose
// status file says st.
func convoAgent(t *testing.T, st volstatus.Status) *httptest.Server {
	t.Helper()
	dir := t.TempDir()
	up, _ := ollamatest.Fake(t, nil)
	p := &policy.Policy{
		Version: policy.SchemaVersion, Image: policy.Image{Name: "webui-convo", Version: "1", Dev: true},
		TDX: policy.TDX{Simulate: true}, Network: policy.Network{Mode: "none"},
		Agent: policy.Agent{Listen: "127.0.0.1:0", TLS: true, Upstream: up.URL},
	}
	ce, err := p.ConfigEvent()
	if err != nil {
		t.Fatal(err)
	}
	l := event.NewLog()
	var rtmr3 [48]byte
	if err := l.Append(ce, func(m [48]byte) error { rtmr3 = event.Extend(rtmr3, m); return nil }); err != nil {
		t.Fatal(err)
	}
	raw, _ := l.MarshalBinary()
	logPath := filepath.Join(dir, "runtime-log.cel")
	os.WriteFile(logPath, raw, 0o644)
	simDir := filepath.Join(dir, "sim")
	os.Mkdir(simDir, 0o700)
	pki, err := sim.NewPKI()
	if err != nil {
		t.Fatal(err)
	}
	z := strings.Repeat("00", 48)
	if err := sim.SavePKI(simDir, pki); err != nil {
		t.Fatal(err)
	}
	if err := sim.SaveRegisters(simDir, &sim.Registers{Platform: sim.Platform{
		MRTD: strings.Repeat("aa", 48), RTMR: [3]string{z, z, z}, TDAttributes: "0000000000000000",
		XFAM: "e700060000000000", MRSEAM: z, TEETCBSVN: strings.Repeat("00", 16),
	}, RTMR3: hex.EncodeToString(rtmr3[:])}); err != nil {
		t.Fatal(err)
	}
	prov, err := quote.OpenSimulator(simDir)
	if err != nil {
		t.Fatal(err)
	}
	status := filepath.Join(dir, "volumes")
	volstatus.Write(status, "state", st)
	vol := filepath.Join(dir, "state")
	os.Mkdir(vol, 0o700)
	u, _ := url.Parse(up.URL)
	srv, err := server.New(server.Config{
		Policy: p, Provider: quote.DomainAttester{Provider: prov}, Evidence: server.Evidence{RuntimeLog: logPath},
		Upstream: u, WebUIDir: filepath.Join(repoRoot, "webui"), Log: log.New(io.Discard, "", 0),
		History: server.History{Volume: "state", Dir: vol, StatusDir: status},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return ts
}

// listAs lists the conversations at base with bearer ("" sends none).
func listAs(t *testing.T, base, bearer string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/v1/conversations", nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestWebUIConversations drives the web UI in headless Chromium against
// the real agent handler: a chat is saved and listed, a new chat clears
// the page, the saved one reopens with its messages and is deleted; a
// generation below the one the browser saw raises the rollback warning; a
// locked volume says why history is off while chat still works.
func TestWebUIConversations(t *testing.T) {
	ctx := browser(t, chromedp.WindowSize(1400, 900))
	ctx, cancel3 := context.WithTimeout(ctx, 90*time.Second)
	defer cancel3()
	ts := convoAgent(t, volstatus.Status{State: volstatus.Mounted})
	fail := func(step string, err error) {
		if shot, serr := chromedp.Run(ctx, chromedp.FullScreenshot(100)); serr == nil {
			os.WriteFile(filepath.Join(artDir, "webui-convo-failed.png"), shot, 0o644)
		}
		t.Fatalf("web UI conversations, %s: %v", step, err)
	}
	poll := func(step, js string) {
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
			fail(step, err)
		}
	}
	const marker = "convo-marker-4b1e"
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/"),
		chromedp.WaitReady(chromedp.CSS(`#model option[value="tiny:latest"]`))); err != nil {
		fail("loading", err)
	}
	poll("empty list", `document.getElementById("convs-status").textContent.includes("No saved conversations")`)
	if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS(`#prompt`), marker), chromedp.Click(chromedp.CSS(`#send`))); err != nil {
		fail("sending", err)
	}
	poll("saved chat listed", `document.querySelectorAll("#convs li").length === 1 && document.querySelector("#convs li .open").textContent === "`+marker+`" && !document.getElementById("send").disabled`)
	// The page made a history key (32 random bytes, base64url) and saved
	// the chat under it: a client without it (the host) gets 401, and
	// the key lists the conversation.
	key, err := chromedp.Run(ctx, chromedp.Evaluate[string](`localStorage.getItem("tdforge.historyKey@" + location.host) || ""`))
	if err != nil {
		fail("reading the history key", err)
	}
	if !regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`).MatchString(key) {
		t.Fatalf("history key %q is not 32 bytes in base64url", key)
	}
	if code, b := listAs(t, ts.URL, ""); code != http.StatusUnauthorized || bytes.Contains(b, []byte(marker)) {
		t.Fatalf("listing without the history key: %d %s", code, b)
	}
	if code, b := listAs(t, ts.URL, key); code != http.StatusOK || !bytes.Contains(b, []byte(marker)) {
		t.Fatalf("listing with the page's history key: %d %s", code, b)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#new-chat`))); err != nil {
		fail("new chat", err)
	}
	poll("new chat clears", `document.querySelectorAll("#messages .msg").length === 0`)
	// The list re-renders when it refreshes, so a node found by one
	// protocol call may be gone by the next: click from inside the page.
	click := func(step, sel string) {
		poll(step, `(() => { const b = document.querySelector("`+sel+`"); if (!b) return false; b.click(); return true; })()`)
	}
	click("reopening", "#convs li .open")
	poll("reopened", `(() => { const m = document.querySelectorAll("#messages .msg"); return m.length === 2 && m[0].textContent === "`+marker+`" && m[1].textContent === "t0t1t2"; })()`)
	// Rollback: the browser saw a higher generation than the store has.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`localStorage.setItem("tdforge.stateGeneration@" + location.host, "1000"), true`)); err != nil {
		fail("setting the generation seen", err)
	}
	if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
		fail("reloading", err)
	}
	poll("rollback warning", `document.getElementById("rollback").className === "banner bad" && document.getElementById("rollback").textContent.includes("ROLLBACK")`)
	click("deleting", "#convs li .delete")
	poll("deleted", `document.querySelectorAll("#convs li").length === 0`)
	if _, b := listAs(t, ts.URL, key); !bytes.Contains(b, []byte(`"conversations":[]`)) {
		t.Fatalf("after deleting in the page the agent lists %s", b)
	}
	if shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		os.WriteFile(filepath.Join(artDir, "webui-conversations.png"), shot, 0o644)
	}

	// A locked volume: the page says why history is off; chat works.
	locked := convoAgent(t, volstatus.Status{State: volstatus.Locked, Reason: "the key broker refused this TD"})
	if err := chromedp.Do(ctx, chromedp.Navigate(locked.URL+"/"),
		chromedp.WaitReady(chromedp.CSS(`#model option[value="tiny:latest"]`))); err != nil {
		fail("loading (locked)", err)
	}
	poll("history off", `document.getElementById("convs-status").textContent.includes("the key broker refused this TD")`)
	if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS(`#prompt`), "hello"), chromedp.Click(chromedp.CSS(`#send`))); err != nil {
		fail("sending (locked)", err)
	}
	poll("answer without history", `(() => { const m = document.querySelectorAll("#messages .msg.assistant"); return m.length === 1 && m[0].textContent === "t0t1t2"; })()`)
}
