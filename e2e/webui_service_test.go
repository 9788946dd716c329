package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/sim"
	"github.com/tdforge/tdforge/internal/testutil/simtd"
	"github.com/tdforge/tdforge/verifier/nonce"
	"github.com/tdforge/tdforge/verifier/record"
	"github.com/tdforge/tdforge/verifier/result"
	"github.com/tdforge/tdforge/verifier/service"
	"github.com/tdforge/tdforge/verifier/verify"
)

// TestWebUIAttestationService drives the repository's web UI in headless
// Chromium next to a simulated TD whose configuration names an attestation
// service (the real service package, CORS allowing the page's origin). The
// page must show the service's signed verdict only after checking the
// token with WebCrypto, always with the caveat that it cannot see the TLS
// key; a contraindicated TD and a token the JWKS does not verify are shown
// as such.
func TestWebUIAttestationService(t *testing.T) {
	td := simtd.New(t, nil, simtd.Registers(0x11, 0x22))
	pki := td.PKI
	q0, err := td.Quote([64]byte{})
	if err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256([]byte("the agent's TLS key"))

	cases := []struct {
		name            string
		otherReference  bool // the service's reference is another image
		forgedJWKS      bool // the page gets a JWKS that did not sign the token
		wantClass, want string
	}{
		{name: "simulated TD", wantClass: "sim", want: "WARNING (signed by the attestation service"},
		{name: "contraindicated", otherReference: true, wantClass: "bad", want: "CONTRAINDICATED"},
		{name: "forged JWKS", forgedJWKS: true, wantClass: "bad", want: "signature does not verify"},
	}
	bctx := browser(t)
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var svcURL string
			mux := http.NewServeMux()
			mux.HandleFunc("/v1/attestation", func(w http.ResponseWriter, r *http.Request) {
				n, _ := hex.DecodeString(r.URL.Query().Get("nonce"))
				rd, err := attestation.ReportData(n, spki)
				if err != nil {
					http.Error(w, `{"error":"bad nonce"}`, 400)
					return
				}
				q, err := td.Quote(rd)
				if err != nil {
					http.Error(w, err.Error(), 500)
					return
				}
				json.NewEncoder(w).Encode(attestation.Response{
					Version: 1, Quote: q, QuoteProvider: "simulator", Simulated: true,
					ReportData: attestation.ReportDataInfo{Scheme: attestation.Scheme, Nonce: hex.EncodeToString(n),
						SPKIHash: hex.EncodeToString(spki[:]), Value: hex.EncodeToString(rd[:])},
					Image:              attestation.Image{Name: "dev", Version: "1", Dev: true, Simulated: true},
					AttestationService: svcURL,
					Timestamp:          time.Now().UTC().Format(time.RFC3339),
				})
			})
			mux.HandleFunc("/api/tags", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"models":[]}`) })
			mux.Handle("/", http.FileServer(http.Dir(filepath.Join(repoRoot, "webui"))))
			agent := httptest.NewUnstartedServer(mux)
			origin := "http://" + agent.Listener.Addr().String()

			img := refvalues.Image{Name: "dev", Version: "1", Dev: true, Simulated: true}
			doc, err := record.Reference(verify.Evidence{Quote: q0}, img)
			if err != nil {
				t.Fatal(err)
			}
			if tc.otherReference {
				other := strings.Repeat("ee", 48)
				doc.Registers.MRTD = &other
			}
			refs := t.TempDir()
			b, _ := doc.Marshal()
			os.WriteFile(filepath.Join(refs, "dev.json"), b, 0o644)
			key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			ks, _ := result.NewKeySet([]*ecdsa.PrivateKey{key}, 5*time.Minute)
			ni, _ := nonce.New([]byte("web UI test nonce secret, 32+ bytes"), time.Minute)
			s, err := service.New(service.Config{ReferenceDir: refs, Dev: true, AllowSimulated: true, SimRoots: sim.RootPool(pki),
				Keys: ks, Nonces: ni, CORSOrigins: []string{origin}, Log: log.New(io.Discard, "", 0)})
			if err != nil {
				t.Fatal(err)
			}
			h := s.Handler()
			if tc.forgedJWKS {
				// A host between the page and the service swaps the key in
				// the key set, keeping the real key's kid: only the
				// signature check can catch it.
				other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				oks, _ := result.NewKeySet([]*ecdsa.PrivateKey{other}, 5*time.Minute)
				var realSet, fake struct {
					Keys []map[string]any `json:"keys"`
				}
				rj, _ := ks.JWKS()
				fj, _ := oks.JWKS()
				json.Unmarshal(rj, &realSet)
				json.Unmarshal(fj, &fake)
				fake.Keys[0]["kid"] = realSet.Keys[0]["kid"]
				jwks, _ := json.Marshal(fake)
				real := httptest.NewServer(h)
				defer real.Close()
				u, _ := url.Parse(real.URL)
				rp := httputil.NewSingleHostReverseProxy(u)
				h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == service.PathJWKS {
						w.Header().Set("Access-Control-Allow-Origin", origin)
						w.Write(jwks)
						return
					}
					rp.ServeHTTP(w, r)
				})
			}
			svc := httptest.NewServer(h)
			defer svc.Close()
			svcURL = svc.URL
			agent.Start()
			defer agent.Close()

			ctx, cancel := chromedp.NewContext(bctx)
			defer cancel()
			ctx, cancel2 := context.WithTimeout(ctx, 30*time.Second)
			defer cancel2()
			if err := chromedp.Do(ctx, chromedp.Navigate(agent.URL+"/"),
				chromedp.WaitVisible(chromedp.CSS(`#service:not(.hidden)`)),
				chromedp.WaitVisible(chromedp.CSS(`#verdict.sim, #verdict.unverified, #verdict.bad, #verdict.ok`))); err != nil {
				t.Fatalf("web UI: %v", err)
			}
			type panel struct{ Class, Verdict, Banner, Checks, Service string }
			p, err := chromedp.Run(ctx, chromedp.Evaluate[panel](`(() => { const t = (id) => (document.getElementById(id) || { innerText: "" }).innerText;
				return {Class: document.getElementById("verdict").className, Verdict: t("verdict"), Banner: t("banner"), Checks: t("checks"), Service: t("service")}; })()`))
			if err != nil {
				t.Fatalf("reading the panel: %v", err)
			}
			if shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
				os.WriteFile(filepath.Join(artDir, "webui-service-"+sanitize(tc.name)+".png"), shot, 0o644)
			}
			t.Logf("verdict %q (%s); service %q; banner %q", p.Verdict, p.Class, p.Service, p.Banner)
			if p.Class != "verdict "+tc.wantClass || !strings.Contains(p.Verdict, tc.want) {
				t.Errorf("verdict %q (%s), want class %q naming %q", p.Verdict, p.Class, tc.wantClass, tc.want)
			}
			if tc.wantClass != "bad" && !strings.Contains(p.Checks, "A browser cannot see the TLS key") {
				t.Errorf("checks %q lack the TLS key caveat", p.Checks)
			}
			if tc.otherReference && !strings.Contains(p.Verdict, "MRTD") {
				t.Errorf("contraindicated verdict %q does not name the failing check", p.Verdict)
			}
			if tc.wantClass == "sim" && !strings.Contains(p.Checks, "signed by the service (ES256") {
				t.Errorf("checks %q do not say the signature was checked", p.Checks)
			}
		})
	}
}
