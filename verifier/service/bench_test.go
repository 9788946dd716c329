package service

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
	"github.com/tdforge/tdforge/internal/tdx/ccel"
	"github.com/tdforge/tdforge/verifier/nonce"
	"github.com/tdforge/tdforge/verifier/verify"
)

// benchClients is the number of concurrent clients of the service bench.
const benchClients = 16

// benchClient is an HTTP client that keeps a connection per client.
func benchClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConns: benchClients, MaxIdleConnsPerHost: benchClients}, Timeout: time.Minute}
}

// benchPost sends one document to /v1/attest and checks the answer's
// status (reading, not decoding, the answer: the client shares the CPUs).
func benchPost(c *http.Client, url string, body []byte) error {
	resp, err := c.Post(url+PathAttest, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 || !bytes.Contains(out, []byte(`"status":"warning"`)) {
		return fmt.Errorf("POST %s: %d %.200s", PathAttest, resp.StatusCode, out)
	}
	return nil
}

// parallel runs n jobs on benchClients goroutines and returns the wall
// time and each job's latency.
func parallel(n int, job func(i int) error) (time.Duration, []time.Duration, error) {
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var first atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	for range benchClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				t := time.Now()
				if err := job(i); err != nil {
					first.CompareAndSwap(nil, &err)
					return
				}
				lat[i] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	if e := first.Load(); e != nil {
		return 0, nil, *e
	}
	return time.Since(start), lat, nil
}

func quantile(lat []time.Duration, q float64) time.Duration {
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// simulatorCCEL gives d the CCEL that tdforge's simulated firmware
// writes for the same events (ccel.Encode: a 64 KiB log area) instead of
// the 256 KiB log area of the recorded fixture; the registers are the same.
func simulatorCCEL(b *testing.B, d *td) {
	evs, _, err := ccel.Parse(d.ccel)
	if err != nil {
		b.Fatal(err)
	}
	if d.table, d.ccel, err = ccel.Encode(evs); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkServiceAppraisals (make bench; -benchtime 1x) measures the
// attestation service over loopback HTTP with 16 concurrent clients, each
// posting real simulated evidence that answers a fresh nonce from
// GET /v1/nonce, against in-process verify.Verify of the same evidence
// (the same reference and options, 16 goroutines) on the same machine:
//
//   - appraisals/s of each and x-vs-library (goal >= 0.85);
//   - p50 and p99 latency through the service, and p99/p50 (goal <= 3).
//
// ccelSim sends the CCEL of tdforge's simulated firmware; ccelGCE the
// recorded GCP log. Both are trimmed to their events, as initd publishes
// them (ccel.Used: the log area's padding is not sent). It reports; it
// asserts no timing.
func BenchmarkServiceAppraisals(b *testing.B) {
	b.Run("ccelSim", func(b *testing.B) { benchThroughput(b, true) })
	b.Run("ccelGCE", func(b *testing.B) { benchThroughput(b, false) })
}

func benchThroughput(b *testing.B, simCCEL bool) {
	const batch = 2000
	f := newFixture(b, nil)
	if simCCEL {
		simulatorCCEL(b, f.td)
	}
	f.td.ccel = f.td.ccel[:ccel.Used(f.td.ccel)]
	f.svc.cfg.Log.SetOutput(io.Discard)
	client := benchClient()
	makeDocs := func() ([]*attestation.Response, [][]byte) {
		docs := make([]*attestation.Response, batch)
		bodies := make([][]byte, batch)
		for i := range docs {
			docs[i] = f.td.attest(b, f.nonce(b))
			bodies[i] = mustJSON(b, docs[i])
		}
		return docs, bodies
	}
	docs, _ := makeDocs()
	ref := f.svc.refs.Load().docs[0]
	library := func(i int) error {
		d := docs[i]
		n, _ := hex.DecodeString(d.ReportData.Nonce)
		r := verify.Verify(context.Background(), verify.Evidence{Quote: d.Quote, CCEL: d.CCEL, CCELTable: d.CCELTable, RuntimeLog: d.RuntimeLog, Claimed: &d.ReportData},
			verify.Options{Reference: ref.doc, ReferenceCheck: &ref.check, AllowSimulated: true, SimRoots: f.svc.cfg.SimRoots, Nonce: n, SPKIHash: &f.td.spki})
		if !r.Trusted {
			return fmt.Errorf("library: %s", r.Verdict)
		}
		return nil
	}
	b.ResetTimer()
	// Warm up both paths; then alternate rounds of the library and the
	// service on the same fresh documents, so that load from elsewhere on
	// the machine falls on both alike.
	if _, _, err := parallel(200, library); err != nil {
		b.Fatal(err)
	}
	if _, _, err := parallel(200, func(int) error { return benchPost(client, f.srv.URL, mustJSON(b, f.td.attest(b, f.nonce(b)))) }); err != nil {
		b.Fatal(err)
	}
	docs, bodies := makeDocs()
	const rounds = 4
	var libWall, svcWall time.Duration
	var lat []time.Duration
	for r := range rounds {
		lo := r * batch / rounds
		w, _, err := parallel(batch/rounds, func(i int) error { return library(lo + i) })
		if err != nil {
			b.Fatal(err)
		}
		libWall += w
		w, l, err := parallel(batch/rounds, func(i int) error { return benchPost(client, f.srv.URL, bodies[lo+i]) })
		if err != nil {
			b.Fatal(err)
		}
		svcWall += w
		lat = append(lat, l...)
	}
	libRate := float64(batch) / libWall.Seconds()
	svcRate := float64(batch) / svcWall.Seconds()
	p50, p99 := quantile(lat, 0.50), quantile(lat, 0.99)
	b.ReportMetric(float64(len(bodies[0]))/1024, "request-KiB")
	b.ReportMetric(svcRate, "service-appraisals/s")
	b.ReportMetric(libRate, "library-appraisals/s")
	b.ReportMetric(svcRate/libRate, "x-vs-library")
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(p99)/float64(p50), "p99/p50")
}

// BenchmarkServiceMemory (make bench; -benchtime 1x) reports the heap in
// use after GC before and after 100,000 appraisals through the service
// (TDFORGE_BENCH_APPRAISALS; 16 clients, evidence with a fresh nonce made
// on the fly, the 64 KiB simulator CCEL). The nonce TTL is 3 s and a
// warm-up runs longer than that, so both ends hold one full replay
// window: the service keeps nothing else per appraisal. heap-ratio is
// end/start.
func BenchmarkServiceMemory(b *testing.B) {
	total := benchTotal()
	if total == 0 {
		b.Skip("TDFORGE_BENCH_APPRAISALS=0")
	}
	const ttl = 3 * time.Second
	m := newFixture(b, func(c *Config) {
		ni, err := nonce.New([]byte(secret), ttl)
		if err != nil {
			b.Fatal(err)
		}
		c.Nonces = ni
	})
	simulatorCCEL(b, m.td)
	m.svc.cfg.Log.SetOutput(io.Discard)
	client := benchClient()
	onTheFly := func(int) error {
		body, err := json.Marshal(m.td.attest(b, m.nonce(b)))
		if err != nil {
			return err
		}
		return benchPost(client, m.srv.URL, body)
	}
	b.ResetTimer()
	warm := time.Now()
	for time.Since(warm) < 2*ttl {
		if _, _, err := parallel(500, onTheFly); err != nil {
			b.Fatal(err)
		}
	}
	// Heap samples at the start and after each quarter: a leak grows
	// with every quarter, a bounded window does not.
	start := heapInUse()
	heap := []uint64{start}
	t0 := time.Now()
	for q := range 4 {
		n := total/4 + min(1, q/3)*(total%4)
		if _, _, err := parallel(n, onTheFly); err != nil {
			b.Fatal(err)
		}
		heap = append(heap, heapInUse())
	}
	wall := time.Since(t0)
	end := heap[4]
	b.ReportMetric(float64(total), "appraisals")
	b.ReportMetric(float64(total)/wall.Seconds(), "appraisals/s")
	b.ReportMetric(float64(start)/(1<<20), "heap-start-MiB")
	for q := 1; q <= 3; q++ {
		b.ReportMetric(float64(heap[q])/(1<<20), fmt.Sprintf("heap-%d%%-MiB", 25*q))
	}
	b.ReportMetric(float64(end)/(1<<20), "heap-end-MiB")
	b.ReportMetric(float64(end)/float64(start), "heap-ratio")
	b.ReportMetric(float64(end)/float64(heap[2]), "heap-ratio-2nd-half")
}

// benchTotal is the number of appraisals of the memory run
// (TDFORGE_BENCH_APPRAISALS, default 100000; 0 skips it).
func benchTotal() int {
	n := 100000
	if v := os.Getenv("TDFORGE_BENCH_APPRAISALS"); v != "" {
		fmt.Sscan(v, &n)
	}
	return n
}
