// tdforge web UI: model picker, streaming chat through the agent's Ollama
// proxy, and an attestation panel. No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { history: [], busy: false, attestation: null };

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
function unhex(s) {
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(i * 2, 2), 16);
  return out;
}
function b64bytes(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
function concat(...parts) {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

function banner(text, bad) {
  const b = $("banner");
  if (!text) { b.className = "banner hidden"; b.textContent = ""; return; }
  b.className = "banner" + (bad ? " bad" : "");
  b.textContent = text;
}

// Quote v4: 48-byte header, then the TD quote body. Offsets inside the body.
const BODY = 48;
const FIELDS = [
  ["MRTD", 0x88], ["RTMR0", 0x148], ["RTMR1", 0x178], ["RTMR2", 0x1a8], ["RTMR3", 0x1d8],
];

function parseQuote(q) {
  if (q.length < BODY + 0x248) throw new Error("quote too short (" + q.length + " bytes)");
  const body = q.subarray(BODY);
  const regs = {};
  for (const [name, off] of FIELDS) regs[name] = hex(body.subarray(off, off + 48));
  const attrs = body.subarray(0x78, 0x80);
  return { regs, reportData: body.subarray(0x208, 0x248), debug: (attrs[0] & 1) === 1, attributes: hex(attrs) };
}

async function attest() {
  $("verdict").className = "verdict pending";
  $("verdict").textContent = "checking…";
  const nonce = crypto.getRandomValues(new Uint8Array(32));
  try {
    const r = await fetch("/v1/attestation?nonce=" + hex(nonce), { cache: "no-store" });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
    const quote = b64bytes(body.quote);
    const parsed = parseQuote(quote);
    // REPORTDATA = SHA-512("tdforge/v1/attest" || nonce || SHA-256(SPKI)).
    const rd = body.report_data || {};
    const spki = unhex(rd.spki_hash || "");
    const expect = new Uint8Array(await crypto.subtle.digest("SHA-512",
      concat(new TextEncoder().encode("tdforge/v1/attest"), nonce, spki)));
    const bound = hex(expect) === hex(parsed.reportData) && rd.nonce === hex(nonce);
    state.attestation = { body, parsed, bound };
    render(body, parsed, bound);
  } catch (e) {
    $("verdict").className = "verdict bad";
    $("verdict").textContent = "NOT VERIFIED: " + e.message;
    banner("Attestation failed: " + e.message + ". Do not send confidential data.", true);
  }
}

function render(body, parsed, bound) {
  const img = body.image || {};
  $("identity").textContent = "image: " + (img.name || "?") + " " + (img.version || "") + (img.dev ? " (dev)" : "");
  const sim = !!(body.simulated || img.simulated);
  const v = $("verdict");
  if (!bound) {
    v.className = "verdict bad";
    v.textContent = "NOT BOUND: REPORTDATA does not match this nonce and TLS key";
    banner("The quote is not bound to this session. Do not send confidential data.", true);
  } else if (parsed.debug) {
    v.className = "verdict bad";
    v.textContent = "DEBUG TD: memory is readable by the host";
    banner("This TD runs in DEBUG mode: nothing in it is confidential.", true);
  } else if (sim) {
    v.className = "verdict sim";
    v.textContent = "SIMULATED TDX: fresh and bound, but no hardware protection";
    banner("SIMULATED: this image runs under the TDX simulator (dev). Nothing here is protected by hardware.", false);
  } else {
    v.className = "verdict ok";
    v.textContent = "Fresh quote bound to this TLS key";
    banner("", false);
  }
  const sum = $("att-summary");
  sum.innerHTML = "";
  const add = (k, val) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = val;
    sum.append(dt, dd);
  };
  add("image", (img.name || "?") + " " + (img.version || ""));
  add("provider", body.quote_provider || "?");
  add("simulated", sim ? "yes" : "no");
  add("debug", parsed.debug ? "yes" : "no");
  add("nonce", (body.report_data || {}).nonce || "");
  add("TLS key", (body.report_data || {}).spki_hash || "");
  add("binds key", bound ? "yes" : "NO");
  add("reference", body.reference_url || "(not published)");
  add("time", body.timestamp || "");

  const tb = $("registers").querySelector("tbody");
  tb.innerHTML = "";
  for (const [name] of FIELDS) {
    const tr = document.createElement("tr");
    const a = document.createElement("td"); a.textContent = name;
    const b = document.createElement("td"); b.textContent = parsed.regs[name];
    tr.append(a, b); tb.append(tr);
  }
  const ev = $("events");
  ev.innerHTML = "";
  for (const e of body.runtime_log_json || []) {
    const li = document.createElement("li");
    li.className = "event";
    const strong = document.createElement("strong"); strong.textContent = e.description;
    const code = document.createElement("code"); code.textContent = " " + e.content;
    li.append(strong, code);
    ev.append(li);
  }
}

async function loadModels() {
  const sel = $("model");
  try {
    const r = await fetch("/api/tags", { cache: "no-store" });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
    sel.innerHTML = "";
    for (const m of body.models || []) {
      const o = document.createElement("option");
      o.value = m.name; o.textContent = m.name;
      sel.append(o);
    }
    if (!sel.options.length) sel.innerHTML = '<option value="">no models</option>';
  } catch (e) {
    sel.innerHTML = '<option value="">unavailable</option>';
    addMessage("error", "Cannot list models: " + e.message);
  }
}

function addMessage(role, text) {
  const d = document.createElement("div");
  d.className = "msg " + role;
  d.textContent = text;
  $("messages").append(d);
  $("messages").scrollTop = $("messages").scrollHeight;
  return d;
}

async function send(ev) {
  ev.preventDefault();
  if (state.busy) return;
  const text = $("prompt").value.trim();
  const model = $("model").value;
  if (!text || !model) return;
  state.busy = true; $("send").disabled = true;
  $("prompt").value = "";
  addMessage("user", text);
  state.history.push({ role: "user", content: text });
  const out = addMessage("assistant", "");
  let answer = "";
  try {
    const r = await fetch("/api/chat", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model, messages: state.history, stream: true }),
    });
    if (!r.ok) {
      let msg = "HTTP " + r.status;
      try { msg = (await r.json()).error || msg; } catch (_) {}
      throw new Error(msg);
    }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const chunk = JSON.parse(line);
        if (chunk.error) throw new Error(chunk.error);
        if (chunk.message && chunk.message.content) {
          answer += chunk.message.content;
          out.textContent = answer;
          $("messages").scrollTop = $("messages").scrollHeight;
        }
      }
    }
    state.history.push({ role: "assistant", content: answer });
  } catch (e) {
    out.className = "msg error";
    out.textContent = "Error: " + e.message;
    state.history.pop();
  } finally {
    state.busy = false; $("send").disabled = false;
  }
}

$("prompt-form").addEventListener("submit", send);
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("prompt-form").requestSubmit(); }
});
$("clear").addEventListener("click", () => { state.history = []; $("messages").innerHTML = ""; });
$("reattest").addEventListener("click", attest);
attest();
loadModels();
