package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// testWebUI drives the agent's web UI in Debian's headless Chromium: the
// attestation panel must show the simulated verdict and the RTMR3 events,
// and a prompt must stream an answer. A screenshot is saved.
func testWebUI(t *testing.T, v *vm) {
	exe := "/usr/bin/chromium"
	if _, err := os.Stat(exe); err != nil {
		t.Fatalf("%s missing: run 'make deps' (Debian package chromium)", exe)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("ignore-certificate-errors", true), // the agent's RA-TLS certificate is self-signed
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel2 := chromedp.NewContext(actx)
	defer cancel2()
	ctx, cancel3 := context.WithTimeout(ctx, 150*time.Second)
	defer cancel3()

	var verdict, events, answer string
	fail := func(step string, err error) {
		if shot, serr := chromedp.Run(ctx, chromedp.FullScreenshot(100)); serr == nil {
			os.WriteFile(filepath.Join(artDir, "webui-failed.png"), shot, 0o644)
		}
		t.Fatalf("web UI, %s: %v (verdict %q, events %q)", step, err, verdict, events)
	}
	var err error
	if err = chromedp.Do(ctx, chromedp.Navigate(v.url("/")),
		chromedp.WaitVisible(chromedp.CSS(`#verdict.sim, #verdict.ok, #verdict.bad`))); err != nil {
		fail("attestation verdict", err)
	}
	if verdict, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#verdict`))); err != nil {
		fail("reading the verdict", err)
	}
	if err = chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`#events li`))); err != nil {
		fail("runtime events", err)
	}
	if events, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#events`))); err != nil {
		fail("reading the events", err)
	}
	if err = chromedp.Do(ctx,
		chromedp.WaitReady(chromedp.CSS(`#model option[value="tiny:latest"]`)),
		chromedp.SetValue(chromedp.CSS(`#prompt`), "Hello from the browser"),
		chromedp.Click(chromedp.CSS(`#send`))); err != nil {
		fail("sending a prompt", err)
	}
	if _, err = chromedp.Run(ctx, chromedp.Poll[bool](`(() => { const m = document.querySelectorAll('.msg.assistant'); return m.length > 0 && m[m.length-1].textContent.length > 0 && !document.getElementById('send').disabled; })()`,
		chromedp.WithPollingTimeout(90*time.Second))); err != nil {
		fail("waiting for the streamed answer", err)
	}
	if answer, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`.msg.assistant`))); err != nil {
		fail("reading the answer", err)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		fail("screenshot", err)
	}
	os.WriteFile(filepath.Join(artDir, "webui.png"), shot, 0o644)
	if !strings.Contains(verdict, "SIMULATED") {
		t.Errorf("attestation panel verdict %q does not say SIMULATED", verdict)
	}
	for _, want := range []string{"payload:ollama", "payload:model", "payload:webui", "config:runtime"} {
		if !strings.Contains(events, want) {
			t.Errorf("attestation panel events %q lack %s", events, want)
		}
	}
	if strings.TrimSpace(answer) == "" {
		t.Errorf("no streamed answer")
	}
	t.Logf("verdict %q; answer %q; screenshot %s", verdict, answer, filepath.Join(artDir, "webui.png"))
}
