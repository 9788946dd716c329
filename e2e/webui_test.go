package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
)

// testWebUI drives the agent's web UI in Debian's headless Chromium: the
// attestation panel must show the simulated (not verified) verdict and the
// RTMR3 events,
// and a prompt must stream an answer. A screenshot is saved.
func testWebUI(t *testing.T, v *vm) {
	ctx := browser(t,
		chromedp.Flag("ignore-certificate-errors", true), // the agent's RA-TLS certificate is self-signed
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-sync", true))
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
		chromedp.WaitVisible(chromedp.CSS(`#verdict.sim, #verdict.unverified, #verdict.bad, #verdict.ok`))); err != nil {
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
	if !strings.Contains(verdict, "SIMULATED") || !strings.Contains(verdict, "NOT VERIFIED") {
		t.Errorf("attestation panel verdict %q does not say SIMULATED and NOT VERIFIED", verdict)
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

// forgedQuote is what a host can serve without a TD: a v4 TDX quote layout
// (or none: header zero) whose REPORTDATA is computed honestly for the
// page's nonce and a claimed key, with sig as the signature data.
func forgedQuote(rd [64]byte, header bool, sig []byte) []byte {
	const body, bodyLen = 48, 584
	q := make([]byte, body+bodyLen+4+len(sig))
	if header {
		binary.LittleEndian.PutUint16(q[0:], 4)
		binary.LittleEndian.PutUint16(q[2:], 2)
		binary.LittleEndian.PutUint32(q[4:], 0x81)
	}
	copy(q[body+0x208:], rd[:])
	binary.LittleEndian.PutUint32(q[body+bodyLen:], uint32(len(sig)))
	copy(q[body+bodyLen+4:], sig)
	return q
}

// TestWebUIForgedQuote serves the repository's web UI next to a forging
// agent (a host with no TD: it answers /v1/attestation with a quote it made
// up, bound to the page's nonce and a key hash it claims) and drives it in
// headless Chromium. The page must never show a positive verdict: it finds
// the faults it can see and, for a quote it cannot fault, says what it did
// not check and how to verify.
func TestWebUIForgedQuote(t *testing.T) {
	spki := attestation.SPKIHash([]byte("the key the forger claims"))
	cases := []struct {
		name                 string
		header, simulated    bool
		sig                  []byte
		wantClass, wantFault string
	}{
		{name: "all-zero unsigned quote", wantClass: "bad", wantFault: "no signature"},
		{name: "unsigned v4 quote", header: true, wantClass: "bad", wantFault: "no signature"},
		{name: "garbage signature", header: true, sig: bytes.Repeat([]byte{0x5a}, 128), wantClass: "unverified"},
		{name: "claims simulation", header: true, simulated: true, sig: bytes.Repeat([]byte{0x5a}, 128), wantClass: "sim"},
	}
	bctx := browser(t)
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.HandleFunc("/v1/attestation", func(w http.ResponseWriter, r *http.Request) {
				nonce, _ := hex.DecodeString(r.URL.Query().Get("nonce"))
				rd, err := attestation.ReportData(nonce, spki)
				if err != nil {
					http.Error(w, err.Error(), 400)
					return
				}
				json.NewEncoder(w).Encode(attestation.Response{
					Version: 1, Quote: forgedQuote(rd, tc.header, tc.sig), QuoteProvider: "configfs-tsm", Simulated: tc.simulated,
					ReportData: attestation.ReportDataInfo{Scheme: attestation.Scheme, Nonce: hex.EncodeToString(nonce),
						SPKIHash: hex.EncodeToString(spki[:]), Value: hex.EncodeToString(rd[:])},
					Image:     attestation.Image{Name: "confidential-ai", Version: "1.0.0", Simulated: tc.simulated},
					Timestamp: time.Now().UTC().Format(time.RFC3339),
				})
			})
			mux.HandleFunc("/api/tags", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"models":[]}`) })
			mux.Handle("/", http.FileServer(http.Dir(filepath.Join(repoRoot, "webui"))))
			fake := httptest.NewServer(mux)
			defer fake.Close()

			ctx, cancel := chromedp.NewContext(bctx)
			defer cancel()
			ctx, cancel2 := context.WithTimeout(ctx, 30*time.Second)
			defer cancel2()
			if err := chromedp.Do(ctx, chromedp.Navigate(fake.URL+"/"),
				chromedp.WaitVisible(chromedp.CSS(`#verdict.sim, #verdict.unverified, #verdict.bad, #verdict.ok`))); err != nil {
				t.Fatalf("web UI: %v", err)
			}
			type panel struct{ Class, Verdict, Banner, Checks, How string }
			p, err := chromedp.Run(ctx, chromedp.Evaluate[panel](`(() => { const t = (id) => (document.getElementById(id) || { innerText: "" }).innerText;
				return {Class: document.getElementById("verdict").className, Verdict: t("verdict"), Banner: t("banner"), Checks: t("checks"), How: t("how")}; })()`))
			if err != nil {
				t.Fatalf("reading the panel: %v", err)
			}
			class, verdict, banner, checks, how := p.Class, p.Verdict, p.Banner, p.Checks, p.How
			if shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
				os.WriteFile(filepath.Join(artDir, "webui-forged-"+sanitize(tc.name)+".png"), shot, 0o644)
			}
			t.Logf("verdict %q (%s); banner %q", verdict, class, banner)
			if class != "verdict "+tc.wantClass {
				t.Errorf("verdict class %q, want %q (text %q)", class, "verdict "+tc.wantClass, verdict)
			}
			// No positive claim anywhere in the verdict or the banner.
			claims := strings.ToLower(verdict + " " + banner)
			for _, neg := range []string{"not verified", "not trusted"} {
				claims = strings.ReplaceAll(claims, neg, "")
			}
			for _, pos := range []string{"verified", "trusted", "fresh", "bound", "genuine"} {
				if strings.Contains(claims, pos) {
					t.Errorf("verdict %q / banner %q claims %q for a forged quote", verdict, banner, pos)
				}
			}
			if tc.wantFault != "" && (!strings.Contains(checks, "FAULT: ") || !strings.Contains(checks, tc.wantFault)) {
				t.Errorf("checks %q do not report the fault %q", checks, tc.wantFault)
			}
			for _, want := range []string{"NOT CHECKED: the quote's signature", "NOT CHECKED: that the TLS key hash", "NOT CHECKED: the registers"} {
				if !strings.Contains(checks, want) {
					t.Errorf("checks %q lack %q", checks, want)
				}
			}
			if !strings.Contains(how, "verifier proxy") {
				t.Errorf("how-to-verify %q does not name verifier proxy", how)
			}
		})
	}
}
