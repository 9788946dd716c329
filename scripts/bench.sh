#!/usr/bin/env bash
# make bench: every benchmark, with ratios against named baselines, then one
# report (images/bench.json + a table). Heavy benchmarks run once (-benchtime 1x).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p images
raw=images/bench.txt
: > "$raw"
run() { echo "bench: go test $*" >&2; go test -run '^$' "$@" | tee -a "$raw"; }
run -bench . -benchtime 1x -timeout 30m ./internal/image/gptdisk
run -bench . -benchtime 1x -timeout 20m ./agent/...
run -bench . -timeout 10m ./verifier/verify ./internal/tdx/tdvf ./internal/tdx/sim ./internal/image/initramfs ./internal/image/hashtree
# The attestation service: throughput and latency vs in-process verify, and
# memory over TDFORGE_BENCH_APPRAISALS (default 100000) appraisals.
run -bench 'ServiceAppraisals|ServiceMemory' -benchtime 1x -timeout 30m ./verifier/service
run -bench . -benchtime 1x -timeout 30m ./e2e
echo "bench: make demo (whole flow)" >&2
start=$(date +%s%N)
make --no-print-directory demo >images/bench-demo.log 2>&1
end=$(date +%s%N)
ms=$(( (end - start) / 1000000 ))
printf 'pkg: demo\nBenchmarkMakeDemo 1 %d.%03d s_total\n' $((ms / 1000)) $((ms % 1000)) | tee -a "$raw"
go run ./scripts/benchreport -o images/bench.json < "$raw"
