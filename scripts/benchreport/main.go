// Command benchreport turns `go test -bench` output into images/bench.json
// and a readable table, annotating each metric that has a goal.
//
//	go test -run '^$' -bench . ./... | go run ./scripts/benchreport -o images/bench.json
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tdforge/tdforge/internal/fsutil"
)

// goal is a target for one metric: value must be <= Max (or >= Min).
type goal struct {
	bench, metric string
	max, min      float64
	text          string
}

var goals = []goal{
	{"BenchmarkBuild2GiB", "x_vs_mkfs.erofs+veritysetup", 1.0, 0, "<= 1.0x mkfs.erofs + veritysetup format"},
	{"BenchmarkPeakRSS2GiB", "peak_RSS_MiB", 256, 0, "<= 256 MiB"},
	{"BenchmarkEncryptedBuild2GiB", "x_throughput_vs_unencrypted", 0, 0.8, ">= 0.8x the unencrypted build's throughput"},
	{"BenchmarkTokensPerSecond", "agent/direct", 0, 0.98, ">= 0.98 of direct Ollama"},
	{"BenchmarkAddedLatency", "added-p50-ms", 1, 0, "p50 <= 1 ms"},
	{"BenchmarkAgentRSS64Streams", "VmHWM-MiB", 64, 0, "<= 64 MiB"},
	{"BenchmarkVerifyQuote", "x-vs-go-tdx-guest", 1.2, 0, "<= 1.2x go-tdx-guest verify+validate"},
	{"BenchmarkBootPayloadSize", "ratio_2GiB_vs_64MiB", 1.1, 0, "<= 1.1"},
	{"BenchmarkBootPhases", "phase_unlock_ms", 1000, 0, "key release (RCAR with a local broker + dm-crypt + mount) <= 1 s under TCG"},
	{"BenchmarkServiceAppraisals/ccelSim", "x-vs-library", 0, 0.85, ">= 0.85x in-process verify.Verify (16 clients)"},
	{"BenchmarkServiceAppraisals/ccelSim", "p99/p50", 3, 0, "p99 <= 3x p50"},
	{"BenchmarkServiceAppraisals/ccelGCE", "x-vs-library", 0, 0.85, ">= 0.85x in-process verify.Verify (16 clients)"},
	{"BenchmarkServiceAppraisals/ccelGCE", "p99/p50", 3, 0, "p99 <= 3x p50"},
	{"BenchmarkServiceMemory", "heap-ratio", 1.1, 0, "flat: end <= 1.1x start heap in use"},
	{"BenchmarkServiceMemory", "heap-ratio-2nd-half", 1.05, 0, "no growth over the second half: <= 1.05x"},
	{"BenchmarkVolumeThroughput", "x-vs-plain", 0, 0.5, ">= 0.5x the raw disk's sequential writes (TCG)"},
}

type result struct {
	Package string             `json:"package"`
	Name    string             `json:"name"`
	Metrics map[string]float64 `json:"metrics"`
	Goals   map[string]string  `json:"goals,omitempty"` // metric -> "met: ..." / "MISSED: ..."
}

func main() {
	out := flag.String("o", "images/bench.json", "JSON report path")
	flag.Parse()
	var results []result
	pkg := ""
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "pkg: ") {
			pkg = strings.TrimPrefix(line, "pkg: ")
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			name = name[:i]
		}
		r := result{Package: pkg, Name: name, Metrics: map[string]float64{}}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			r.Metrics[f[i+1]] = v
		}
		for _, g := range goals {
			v, ok := r.Metrics[g.metric]
			if g.bench != name || !ok {
				continue
			}
			met := (g.max == 0 || v <= g.max) && (g.min == 0 || v >= g.min)
			if r.Goals == nil {
				r.Goals = map[string]string{}
			}
			if met {
				r.Goals[g.metric] = "met: " + g.text
			} else {
				r.Goals[g.metric] = "MISSED: " + g.text
			}
		}
		results = append(results, r)
	}
	report := map[string]any{"generated": time.Now().UTC().Format(time.RFC3339), "benchmarks": results}
	b, _ := json.MarshalIndent(report, "", "  ")
	if err := fsutil.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BENCHMARK\tMETRIC\tVALUE\tGOAL")
	for _, r := range results {
		keys := make([]string, 0, len(r.Metrics))
		for k := range r.Metrics {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%s\t%.4g\t%s\n", r.Name, k, r.Metrics[k], r.Goals[k])
		}
	}
	tw.Flush()
	fmt.Printf("\nreport: %s\n", *out)
}
