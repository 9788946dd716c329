#!/usr/bin/env bash
# make demo: build the dev image, boot it under the TDX simulator, verify it,
# chat with it through the attested proxy, and shut it down. Leaves nothing
# running.
set -euo pipefail
cd "$(dirname "$0")/.."

IMG=images/dev
RUN=images/run
AGENT_PORT=${AGENT_PORT:-18443}
PROXY_PORT=${PROXY_PORT:-11435}
mkdir -p "$RUN"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
T0=$(date +%s)

cleanup() {
  [[ -n "${PROXY_PID:-}" ]] && kill "$PROXY_PID" 2>/dev/null || true
  if [[ -f "$RUN/qemu.pid" ]] && kill -0 "$(cat "$RUN/qemu.pid")" 2>/dev/null; then
    bin/builder shutdown --qmp "$RUN/qmp.sock" --pidfile "$RUN/qemu.pid" --timeout 30s || true
  fi
}
trap cleanup EXIT

step "1/7 Build manifests/dev.hcl (Ollama from source, tiny model, web UI, simulated TDX)"
bin/builder build --secrets manifests/dev-secrets -o "$IMG" manifests/dev.hcl

step "2/7 Reference values (what the verifier will demand)"
bin/builder inspect "$IMG"

step "3/7 Boot it: builder launch --simulate (QEMU TCG, console in $RUN/console.log)"
rm -f "$RUN/console.log" "$RUN/qmp.sock"
bin/builder launch --simulate --run --detach --port "$AGENT_PORT" \
  --serial "$RUN/console.log" --pidfile "$RUN/qemu.pid" --qmp "$RUN/qmp.sock" \
  --wait-ready 180s "$IMG"
# Each launch makes a fresh simulator PKI; only its root certificate is
# published, next to the pidfile. It is what the verifier trusts.
SIM_ROOT="$RUN/sim-root.pem"
grep -a "initd:" "$RUN/console.log" | tail -n 20 || true

step "4/7 Verify: verifier attest --allow-simulated"
bin/verifier attest --reference "$IMG/reference-values.json" \
  --allow-simulated --sim-root "$SIM_ROOT" "https://127.0.0.1:$AGENT_PORT"

step "5/7 Start the attested proxy on 127.0.0.1:$PROXY_PORT"
bin/verifier proxy --listen "127.0.0.1:$PROXY_PORT" --reference "$IMG/reference-values.json" \
  --allow-simulated --sim-root "$SIM_ROOT" "https://127.0.0.1:$AGENT_PORT" >"$RUN/proxy.log" 2>&1 &
PROXY_PID=$!
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$PROXY_PORT/api/version" >/dev/null 2>&1 && break; sleep 0.2; done

step "6/7 Chat through the proxy (curl → verifier proxy → TLS pinned to the attested key → agent → Ollama)"
curl -fsS "http://127.0.0.1:$PROXY_PORT/api/chat" -H 'Content-Type: application/json' \
  -d '{"model":"tiny","messages":[{"role":"user","content":"Hello, who are you?"}],"stream":false,"options":{"temperature":0,"num_predict":24,"num_thread":1}}' \
  | python3 -c 'import json,sys; r=json.load(sys.stdin); print("answer:", repr(r["message"]["content"])); print("tokens:", r.get("eval_count"))'

step "7/7 Web UI"
cat <<MSG
The web UI is served by the agent. While the VM runs, open either:
  http://127.0.0.1:$PROXY_PORT/      (through 'verifier proxy', which verified the TD first), or
  https://127.0.0.1:$AGENT_PORT/     (directly: NOT verified; the page's panel can only spot faults).
To keep it running yourself:
  bin/builder launch --simulate --run --port $AGENT_PORT --pidfile $RUN/qemu.pid $IMG
  (it prints where the launch's sim-root.pem is: pass that to verifier --sim-root)
MSG

step "Shutting the VM down cleanly"
bin/builder shutdown --qmp "$RUN/qmp.sock" --pidfile "$RUN/qemu.pid" --timeout 30s
rm -f "$RUN/qemu.pid"
kill "$PROXY_PID" 2>/dev/null || true; wait "$PROXY_PID" 2>/dev/null || true; PROXY_PID=
echo "demo finished in $(( $(date +%s) - T0 ))s; trail: $IMG/reference-values.json, $RUN/console.log, $RUN/proxy.log"
