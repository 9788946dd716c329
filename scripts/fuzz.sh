#!/usr/bin/env bash
# Runs every fuzz target in the repository for a short, bounded time each.
set -euo pipefail
t="${1:-10s}"
status=0
while IFS= read -r line; do
  file="${line%%:*}"
  name=$(sed -E 's/^func (Fuzz[A-Za-z0-9_]*).*/\1/' <<<"${line#*:}")
  pkg="./$(dirname "$file")"
  echo "fuzz: $pkg $name for $t"
  if ! go test -run "^$" -fuzz "^${name}\$" -fuzztime "$t" -fuzzminimizetime 2s "$pkg" >/tmp/fuzz-$$.log 2>&1; then
    cat /tmp/fuzz-$$.log; status=1
  else
    tail -1 /tmp/fuzz-$$.log
  fi
done < <(git ls-files '*_test.go' | xargs grep -H '^func Fuzz' || true)
rm -f /tmp/fuzz-$$.log
exit $status
