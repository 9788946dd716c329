#!/usr/bin/env bash
# make demo: build the dev image, boot it under the TDX simulator beside the
# dev key broker (which releases the encrypted model's key to the attested
# TD), verify it, chat with it through the attested proxy (the chat is kept
# as a conversation on the sealed state volume), reboot it on the same disk
# and list the conversation again, then boot it with a changed kernel
# command line and show the broker refusing the keys. Leaves nothing
# running.
set -euo pipefail
cd "$(dirname "$0")/.."

IMG=images/dev
RUN=images/run
AGENT_PORT=${AGENT_PORT:-18443}
PROXY_PORT=${PROXY_PORT:-11435}
SERVICE_PORT=${SERVICE_PORT:-18444}
# The dev image's key broker is https://10.0.2.2:8444 (manifests/dev.hcl),
# which QEMU user networking maps to the host's loopback: fixed port.
BROKER_ADDR=127.0.0.1:8444
mkdir -p "$RUN"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
T0=$(date +%s)

cleanup() {
  [[ -n "${PROXY_PID:-}" ]] && kill "$PROXY_PID" 2>/dev/null || true
  [[ -n "${BROKER_PID:-}" ]] && kill "$BROKER_PID" 2>/dev/null || true
  [[ -n "${SERVE_PID:-}" ]] && kill "$SERVE_PID" 2>/dev/null || true
  if [[ -f "$RUN/qemu.pid" ]] && kill -0 "$(cat "$RUN/qemu.pid")" 2>/dev/null; then
    bin/builder shutdown --qmp "$RUN/qmp.sock" --pidfile "$RUN/qemu.pid" --timeout 30s || true
  fi
}
trap cleanup EXIT

# service_dir DIR makes a service directory for verifier serve: the dev
# image's reference values (unsigned: serve them with --dev), a throwaway
# result-signing key and nonce secret.
service_dir() {
  rm -rf "$1"; mkdir -p "$1/refs"
  cp "$IMG/reference-values.json" "$1/refs/dev.json"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1/result-key.pem" 2>/dev/null
  head -c 32 /dev/urandom >"$1/nonce-secret"
}

# stop_pid VAR kills the background process whose id is in VAR, waits for
# it and clears VAR.
stop_pid() {
  if [[ -n "${!1:-}" ]]; then kill "${!1}" 2>/dev/null || true; wait "${!1}" 2>/dev/null || true; fi
  printf -v "$1" '%s' ''
}

# wait_url URL waits up to 10 s for URL to answer.
wait_url() {
  for _ in $(seq 1 50); do curl -fsS "$1" >/dev/null 2>&1 && return; sleep 0.2; done
}

# start_broker runs the dev key broker (verifier serve --resources) for the
# next launch: the launch's simulator root only exists once launch starts,
# so the broker waits for it in the background while initd retries.
BRK="$RUN/broker"
start_broker() {
  stop_pid BROKER_PID
  # The port is fixed: a broker left by another run would answer this TD.
  if (exec 3<>"/dev/tcp/${BROKER_ADDR%:*}/${BROKER_ADDR#*:}") 2>/dev/null; then
    echo "demo: something already listens on $BROKER_ADDR (another make demo or e2e run?); stop it and run again" >&2
    exit 1
  fi
  rm -f "$RUN/sim-root.pem"
  service_dir "$BRK"
  (
    for _ in $(seq 1 600); do [[ -s "$RUN/sim-root.pem" ]] && break; sleep 0.1; done
    exec bin/verifier serve --listen "$BROKER_ADDR" \
      --tls-cert deploy/dev-broker/tls.crt --tls-key deploy/dev-broker/tls.key \
      --resources manifests/dev-secrets --reference-dir "$BRK/refs" --dev \
      --allow-simulated --sim-root "$RUN/sim-root.pem" \
      --signing-key "$BRK/result-key.pem" --nonce-secret "$BRK/nonce-secret"
  ) >"$RUN/broker.log" 2>&1 &
  BROKER_PID=$!
}

# launch [ARGS...] boots the image detached beside a fresh dev key broker,
# the console in $RUN/console.log; ARGS go to builder launch.
launch() {
  rm -f "$RUN/console.log" "$RUN/qmp.sock"
  start_broker
  bin/builder launch --simulate --run --detach --port "$AGENT_PORT" \
    --serial "$RUN/console.log" --pidfile "$RUN/qemu.pid" --qmp "$RUN/qmp.sock" "$@" "$IMG"
}

# shutdown_td shuts the VM down cleanly.
shutdown_td() {
  bin/builder shutdown --qmp "$RUN/qmp.sock" --pidfile "$RUN/qemu.pid" --timeout 30s
  rm -f "$RUN/qemu.pid"
}

# start_proxy runs the attested proxy on 127.0.0.1:$PROXY_PORT for the
# running TD and waits until it answers.
start_proxy() {
  bin/verifier proxy --listen "127.0.0.1:$PROXY_PORT" --reference "$IMG/reference-values.json" \
    --allow-simulated --sim-root "$SIM_ROOT" "https://127.0.0.1:$AGENT_PORT" >"$RUN/proxy.log" 2>&1 &
  PROXY_PID=$!
  wait_url "http://127.0.0.1:$PROXY_PORT/api/version"
}

step "1/9 Build manifests/dev.hcl (Ollama from source, tiny model, web UI, simulated TDX)"
bin/builder build --secrets manifests/dev-secrets -o "$IMG" manifests/dev.hcl

step "2/9 Reference values (what the verifier will demand)"
bin/builder inspect "$IMG"

step "3/9 Boot it beside the dev key broker on $BROKER_ADDR (QEMU TCG, console in $RUN/console.log)"
launch --wait-ready 180s
# Each launch makes a fresh simulator PKI; only its root certificate is
# published, next to the pidfile. It is what the verifier trusts.
SIM_ROOT="$RUN/sim-root.pem"
grep -a "initd:" "$RUN/console.log" | tail -n 20 || true
echo "The broker appraised the TD and released the model's key:"
grep -a "kbs " "$RUN/broker.log" || true
stop_pid BROKER_PID

step "4/9 Verify: verifier attest --allow-simulated"
bin/verifier attest --reference "$IMG/reference-values.json" \
  --allow-simulated --sim-root "$SIM_ROOT" "https://127.0.0.1:$AGENT_PORT"

step "5/9 The same TD appraised by the attestation service (verifier serve on 127.0.0.1:$SERVICE_PORT)"
# A throwaway result-signing key and nonce secret in the run dir; plain
# HTTP on loopback only (--insecure-http), unsigned dev references (--dev).
SVC="$RUN/service"
service_dir "$SVC"
bin/verifier serve --insecure-http --listen "127.0.0.1:$SERVICE_PORT" --reference-dir "$SVC/refs" --dev \
  --allow-simulated --sim-root "$SIM_ROOT" --signing-key "$SVC/result-key.pem" --nonce-secret "$SVC/nonce-secret" \
  >"$RUN/serve.log" 2>&1 &
SERVE_PID=$!
wait_url "http://127.0.0.1:$SERVICE_PORT/readyz"
# Nonce from the service, evidence over the pinned TLS connection, the
# service's signed EAR result checked against its JWKS, the TLS key
# binding checked here. A simulated TD is "warning", never "affirming".
bin/verifier attest --attestation-service "http://127.0.0.1:$SERVICE_PORT" "https://127.0.0.1:$AGENT_PORT"
bin/verifier attest --json --attestation-service "http://127.0.0.1:$SERVICE_PORT" "https://127.0.0.1:$AGENT_PORT" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["attestation_service"]["token"])' >"$SVC/token"
echo "The signed token ($SVC/token), as a relying party checks it:"
bin/verifier token verify --jwks "http://127.0.0.1:$SERVICE_PORT/.well-known/jwks.json" --allow-warning "@$SVC/token"
stop_pid SERVE_PID

step "6/9 Start the attested proxy on 127.0.0.1:$PROXY_PORT"
start_proxy

step "7/9 Chat through the proxy (curl → verifier proxy → TLS pinned to the attested key → agent → Ollama), kept as a conversation"
# The chat is saved on the sealed volume: create a conversation, then send
# the chat with its id in X-Tdforge-Conversation. Conversations belong to
# the client's bearer secret (random, kept in the run dir): the host, which
# has not got it, cannot read them through the API.
head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$RUN/history-key"
chmod 600 "$RUN/history-key"
AUTH="Authorization: Bearer $(cat "$RUN/history-key")"
CONV=$(curl -fsS "http://127.0.0.1:$PROXY_PORT/v1/conversations" -H "$AUTH" -H 'Content-Type: application/json' \
  -d '{"title":"demo chat","model":"tiny"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "conversation $CONV (sealed volume 'state', /readyz: $(curl -ksS "https://127.0.0.1:$AGENT_PORT/readyz"))"
curl -fsS "http://127.0.0.1:$PROXY_PORT/api/chat" -H "$AUTH" -H 'Content-Type: application/json' -H "X-Tdforge-Conversation: $CONV" \
  -d '{"model":"tiny","messages":[{"role":"user","content":"Hello, who are you?"}],"stream":false,"options":{"temperature":0,"num_predict":24,"num_thread":1}}' \
  | python3 -c 'import json,sys; r=json.load(sys.stdin); print("answer:", repr(r["message"]["content"])); print("tokens:", r.get("eval_count"))'

step "8/9 Web UI"
cat <<MSG
The web UI is served by the agent. While the VM runs, open either:
  http://127.0.0.1:$PROXY_PORT/      (through 'verifier proxy', which verified the TD first), or
  https://127.0.0.1:$AGENT_PORT/     (directly: NOT verified; the page's panel can only spot faults).
To keep it running yourself:
  bin/builder launch --simulate --run --port $AGENT_PORT --pidfile $RUN/qemu.pid $IMG
  (it prints where the launch's sim-root.pem is: pass that to verifier --sim-root; the model
  stays locked unless the dev key broker runs beside it: see start_broker in scripts/demo.sh)
MSG

step "Reboot: shut the VM down cleanly and launch it again on the same disk (the volume persists in $IMG/disk.raw)"
shutdown_td
stop_pid PROXY_PID
cp "$RUN/console.log" "$RUN/console-first.log"
launch --wait-ready 180s
SIM_ROOT="$RUN/sim-root.pem"
grep -a "initd: volume" "$RUN/console.log" || true
stop_pid BROKER_PID
start_proxy
echo "The conversations after the reboot (through the attested proxy):"
LIST=$(curl -fsS "http://127.0.0.1:$PROXY_PORT/v1/conversations" -H "$AUTH")
echo "$LIST" | python3 -c 'import json,sys; r=json.load(sys.stdin); [print(" ", c["id"], repr(c.get("title")), c.get("messages", ""), "messages") for c in r["conversations"]]; print("  state generation", r["generation"])'
curl -fsS "http://127.0.0.1:$PROXY_PORT/v1/conversations/$CONV" -H "$AUTH" \
  | python3 -c 'import json,sys; r=json.load(sys.stdin); [print("  %s: %r" % (m["role"], m["content"][:80])) for m in r["messages"]]'
[[ "$LIST" == *"$CONV"* ]] || { echo "demo: conversation $CONV did not survive the reboot" >&2; exit 1; }
echo "The host, without the history key, asking the agent directly:"
HOSTCODE=$(curl -ksS -o /dev/null -w '%{http_code}' "https://127.0.0.1:$AGENT_PORT/v1/conversations")
echo "  GET /v1/conversations: HTTP $HOSTCODE"
[[ "$HOSTCODE" == 401 ]] || { echo "demo: the agent answered $HOSTCODE to a client without the history key, want 401" >&2; exit 1; }
shutdown_td
stop_pid PROXY_PID

step "9/9 A tampered boot (kernel command line + init_on_free=0): the broker refuses the key"
cp "$RUN/console.log" "$RUN/console-honest.log"; cp "$RUN/broker.log" "$RUN/broker-honest.log"
launch --cmdline "$(cat "$IMG/cmdline.txt") init_on_free=0"
READY=
for _ in $(seq 1 180); do
  READY=$(curl -ksS "https://127.0.0.1:$AGENT_PORT/readyz" 2>/dev/null || true)
  [[ "$READY" == *locked* ]] && break
  sleep 1
done
echo "The broker's refusal:"
grep -a "refused" "$RUN/broker.log" || true
echo "initd:"
grep -a -e "LOCKED" -e "NOT started" "$RUN/console.log" || true
echo "/readyz: $READY"
[[ "$READY" == *'"state":"locked (broker refused: RTMR2 mismatch)"'* ]] || { echo "demo: the tampered TD's volume is not locked as expected" >&2; exit 1; }
[[ "$READY" == *"model: locked (broker refused: RTMR2 mismatch)"* ]] || { echo "demo: the tampered TD's model is not locked as expected" >&2; exit 1; }
shutdown_td
stop_pid BROKER_PID
echo "demo finished in $(( $(date +%s) - T0 ))s; trail: $IMG/reference-values.json, $RUN/console-honest.log, $RUN/broker-honest.log, $RUN/console.log, $RUN/broker.log, $RUN/serve.log, $RUN/proxy.log"
