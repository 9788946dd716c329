package server

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/testutil/ollamatest"
)

// BenchmarkTokensPerSecond compares streamed generation throughput through
// the agent with talking to Ollama directly (baseline), same prompt,
// temperature 0, one thread. Goal: ratio >= 0.98.
func BenchmarkTokensPerSecond(b *testing.B) {
	ol := ollamatest.Start(b)
	f := newFixture(b, ol.URL, nil)
	agent := httptest.NewServer(f.srv)
	defer agent.Close()
	c := &http.Client{}
	body := fmt.Sprintf(`{"model":%q,"prompt":"once upon a time","stream":true,"options":{"temperature":0,"num_thread":1,"num_predict":128,"seed":1}}`, ollamatest.Model)
	run := func(base string) (int, time.Duration) {
		start := time.Now()
		resp, err := c.Post(base+"/api/generate", "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		_, chunks, ec := ndjson(b, raw, genResponse)
		if chunks != ec {
			b.Fatalf("chunks %d != eval_count %d", chunks, ec)
		}
		return ec, time.Since(start)
	}
	var dTok, aTok int
	var dDur, aDur time.Duration
	for b.Loop() {
		// Interleave so both paths see the same machine load.
		n, d := run(ol.URL)
		dTok, dDur = dTok+n, dDur+d
		n, d = run(agent.URL)
		aTok, aDur = aTok+n, aDur+d
	}
	direct := float64(dTok) / dDur.Seconds()
	via := float64(aTok) / aDur.Seconds()
	b.ReportMetric(direct, "direct-tok/s")
	b.ReportMetric(via, "agent-tok/s")
	b.ReportMetric(via/direct, "agent/direct")
}

func percentile(d []time.Duration, p float64) time.Duration {
	slices.Sort(d)
	return d[int(float64(len(d)-1)*p)]
}

// BenchmarkAddedLatency measures what the agent adds to a small
// non-streamed request against an in-process fast upstream: p50/p99 through
// the agent minus direct (baseline). Goal: p50 added <= 1 ms.
func BenchmarkAddedLatency(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"model":"m","message":{"role":"assistant","content":"ok"},"done":true}`)
	}))
	defer up.Close()
	f := newFixture(b, up.URL, nil)
	agent := httptest.NewServer(f.srv)
	defer agent.Close()
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	one := func(url string) time.Duration {
		start := time.Now()
		resp, err := c.Post(url+"/api/chat", "application/json", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":false}`))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return time.Since(start)
	}
	one(up.URL)
	one(agent.URL)
	var direct, via []time.Duration
	for b.Loop() {
		direct = append(direct, one(up.URL))
		via = append(via, one(agent.URL))
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	d50, d99 := percentile(direct, .5), percentile(direct, .99)
	v50, v99 := percentile(via, .5), percentile(via, .99)
	b.ReportMetric(ms(v50-d50), "added-p50-ms")
	b.ReportMetric(ms(v99-d99), "added-p99-ms")
	b.ReportMetric(float64(v50)/float64(d50), "p50-agent/direct")
}

// BenchmarkAttestation times serving one /v1/attestation with the
// simulator (quote + logs + JSON), reported against the bare simulator
// quote (baseline).
func BenchmarkAttestation(b *testing.B) {
	f := newFixture(b, "http://127.0.0.1:1", func(c *Config) { c.QuoteRate = -1 }) // time quoting, not the limiter
	target := "/v1/attestation?nonce=" + strings.Repeat("ab", 32)
	nonce := make([]byte, 32)
	t0 := time.Now()
	const quotes = 50
	for i := 0; i < quotes; i++ {
		if _, err := f.srv.cfg.Provider.Attest(nonce, testSPKIHash); err != nil {
			b.Fatal(err)
		}
	}
	bare := time.Since(t0) / quotes
	for b.Loop() {
		rec := httptest.NewRecorder()
		f.srv.ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
	per := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(per)/float64(time.Millisecond), "ms/attestation")
	b.ReportMetric(float64(per)/float64(bare), "attestation/bare-quote")
}
