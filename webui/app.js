// tdforge web UI: model picker, streaming chat through the agent's Ollama
// proxy, conversations kept by the agent (list, reopen, delete), and an
// attestation panel. No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { history: [], busy: false, attestation: null, convId: null, historyOff: "" };

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

// Quote v4: 48-byte header, the 584-byte TD quote body, then a 4-byte
// signature-data length and the signature data. Offsets inside the body.
const BODY = 48;
const BODY_LEN = 584;
const FIELDS = [
  ["MRTD", 0x88], ["RTMR0", 0x148], ["RTMR1", 0x178], ["RTMR2", 0x1a8], ["RTMR3", 0x1d8],
];

// parseQuote reads what a page can read from a quote: its layout, registers
// and REPORTDATA. It verifies nothing: anyone can write these bytes.
function parseQuote(q) {
  if (q.length < BODY + BODY_LEN) throw new Error("quote too short (" + q.length + " bytes)");
  const dv = new DataView(q.buffer, q.byteOffset, q.byteLength);
  const body = q.subarray(BODY);
  const regs = {};
  for (const [name, off] of FIELDS) regs[name] = hex(body.subarray(off, off + 48));
  const attrs = body.subarray(0x78, 0x80);
  let sigLen = 0, sig = new Uint8Array(0);
  if (q.length >= BODY + BODY_LEN + 4) {
    sigLen = dv.getUint32(BODY + BODY_LEN, true);
    sig = q.subarray(BODY + BODY_LEN + 4, BODY + BODY_LEN + 4 + sigLen);
  }
  return {
    version: dv.getUint16(0, true), teeType: dv.getUint32(4, true),
    regs, reportData: body.subarray(0x208, 0x248), debug: (attrs[0] & 1) === 1, attributes: hex(attrs),
    // The ECDSA signature is the first 64 bytes of the signature data.
    signed: sigLen >= 64 && sig.length === sigLen && sig.subarray(0, 64).some((b) => b !== 0),
  };
}

// The page can only find faults; it can never prove the TD genuine. The
// quote, the TLS-key hash it is compared with, and the "simulated" flag all
// come from the server being judged, a page cannot check the quote's
// signature chain, and a browser does not show a page the TLS key of its
// connection. So no outcome here is a positive verdict.
const NOT_CHECKED = [
  "the quote's signature and its certificate chain up to Intel's root (a web page cannot check them)",
  "that the TLS key hash in REPORTDATA is the key of this connection (browsers do not show pages the server's key)",
  "the registers against the image's published reference values",
];
// HOW_TO_VERIFY alternates text and commands (shown as code).
const HOW_TO_VERIFY = [
  "To verify, run ", "verifier proxy --reference reference-values.json " + location.origin,
  " and use this UI through the proxy's local address: the proxy checks the signature, the reference values " +
  "and the TLS key of every connection. ", "verifier attest " + location.origin,
  " gives the same verdict once. An attestation service (verifier serve) may vouch for this TD as well; " +
  "its result is only as trustworthy as that service.",
];

async function attest() {
  $("verdict").className = "verdict pending";
  $("verdict").textContent = "checking…";
  $("service").className = "service hidden";
  const nonce = crypto.getRandomValues(new Uint8Array(32));
  try {
    const r = await fetch("/v1/attestation?nonce=" + hex(nonce), { cache: "no-store" });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
    const quote = b64bytes(body.quote);
    const parsed = parseQuote(quote);
    // REPORTDATA = SHA-512("tdforge/v1/attest" || nonce || SHA-256(SPKI)),
    // with the SPKI hash as the server states it.
    const rd = body.report_data || {};
    const spki = unhex(rd.spki_hash || "");
    const expect = new Uint8Array(await crypto.subtle.digest("SHA-512",
      concat(new TextEncoder().encode("tdforge/v1/attest"), nonce, spki)));
    const bound = spki.length === 32 && hex(expect) === hex(parsed.reportData) && rd.nonce === hex(nonce);
    state.attestation = { body, parsed, bound };
    render(body, parsed, bound);
    // The image's measured configuration may name an attestation service
    // (agent.attestation_service): ask it for a signed verdict.
    if (body.attestation_service) await serviceVerdict(body.attestation_service);
  } catch (e) {
    $("verdict").className = "verdict bad";
    $("verdict").textContent = "NOT VERIFIED: " + e.message;
    renderChecks([["fault", "the attestation could not be read: " + e.message]]);
    banner("Attestation failed: " + e.message + ". Do not send confidential data.", true);
  }
}

// ---- Appraisal through an attestation service (verifier serve) ----
//
// The service checks what a page cannot (the quote's signature chain, the
// reference values) and signs its verdict as an EAR token (ES256 JWT). The
// page checks that signature with WebCrypto against the service's JWKS,
// the token's expiry and that its eat_nonce is the nonce the page got.
// What it still cannot check: that the TLS key the evidence binds is the
// key of this connection (browsers do not show it to pages), so a man in
// the middle relaying a real TD's evidence gets the same signed verdict.

function b64url(s) {
  s = s.replace(/-/g, "+").replace(/_/g, "/");
  while (s.length % 4) s += "=";
  return b64bytes(s);
}
function b64urlEncode(bytes) {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// SKEW_S is the clock difference tolerated with the service (seconds).
const SKEW_S = 60;

// verifyEAR checks a compact JWS: ES256, a kid found in jwks, a valid
// signature, iat/exp, and eat_nonce = nonce. It returns the claims or
// throws saying which check failed.
async function verifyEAR(token, jwks, nonce) {
  const parts = token.split(".");
  if (parts.length !== 3) throw new Error("the token is not a compact JWS");
  const header = JSON.parse(new TextDecoder().decode(b64url(parts[0])));
  if (header.alg !== "ES256") throw new Error("token algorithm " + header.alg + ", want ES256");
  const jwk = (jwks.keys || []).find((k) => k.kid === header.kid);
  if (!header.kid || !jwk) throw new Error("the token's key id " + header.kid + " is not in the service's JWKS");
  if (jwk.kty !== "EC" || jwk.crv !== "P-256") throw new Error("JWKS key " + header.kid + " is not an EC P-256 key");
  const key = await crypto.subtle.importKey("jwk", { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y, ext: true },
    { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
  const ok = await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, key, b64url(parts[2]),
    new TextEncoder().encode(parts[0] + "." + parts[1]));
  if (!ok) throw new Error("the token's signature does not verify with key " + header.kid);
  const claims = JSON.parse(new TextDecoder().decode(b64url(parts[1])));
  const now = Date.now() / 1000;
  if (typeof claims.exp !== "number" || now >= claims.exp + SKEW_S) throw new Error("the token expired");
  if (typeof claims.iat !== "number" || claims.iat > now + SKEW_S) throw new Error("the token is issued in the future");
  if (claims.eat_nonce !== b64urlEncode(nonce)) throw new Error("the token answers another nonce (a replayed result)");
  return { claims, kid: header.kid };
}

async function serviceJSON(url, init) {
  const r = await fetch(url, Object.assign({ cache: "no-store" }, init || {}));
  let body = null;
  try { body = await r.json(); } catch (_) {}
  if (!r.ok) throw new Error((body && body.error) || ("HTTP " + r.status + " from " + url));
  if (!body) throw new Error(url + " did not answer JSON");
  return body;
}

async function serviceVerdict(service) {
  const base = service.replace(/\/+$/, "");
  const box = $("service");
  box.className = "service";
  $("service-url").textContent = base;
  const v = $("verdict");
  v.className = "verdict pending";
  v.textContent = "asking the attestation service…";
  try {
    const n = await serviceJSON(base + "/v1/nonce");
    const nonce = unhex(n.nonce || "");
    if (nonce.length < 32 || nonce.length > 64) throw new Error("the service's nonce is not 32..64 bytes of hex");
    const r = await fetch("/v1/attestation?nonce=" + hex(nonce), { cache: "no-store" });
    const evidence = await r.text();
    if (!r.ok) throw new Error("the agent refused the service's nonce: " + evidence);
    const out = await serviceJSON(base + "/v1/attest", { method: "POST", headers: { "Content-Type": "application/json" }, body: evidence });
    const jwks = await serviceJSON(base + "/.well-known/jwks.json");
    const { claims, kid } = await verifyEAR(out.token || "", jwks, nonce);
    renderService(base, claims, kid, JSON.parse(evidence));
  } catch (e) {
    v.className = "verdict bad";
    v.textContent = "NOT VERIFIED: the attestation service gave no valid signed verdict: " + e.message;
    banner("The attestation service " + base + " gave no valid signed verdict (" + e.message + "). Do not send confidential data.", true);
    $("service-status").textContent = "error: " + e.message;
  }
}

function renderService(base, claims, kid, doc) {
  const tdx = (claims.submods || {}).tdx || {};
  const status = tdx["ear.status"];
  const ev = tdx["ear.veraison.annotated-evidence"] || {};
  const img = ev.image || {};
  const failed = (ev.checks || []).filter((c) => c.status === "FAIL");
  const reported = (doc.report_data || {}).spki_hash;
  const caveat = "A browser cannot see the TLS key it is talking to: the service checked the quote for TLS key " +
    (ev.tls_spki_sha256 || "?").slice(0, 16) + "…, and this page cannot tell whether that is the key of this connection " +
    "(a man in the middle relaying this TD's evidence gets the same verdict). verifier attest/proxy check it.";
  const items = [];
  for (const c of ev.checks || []) items.push([c.status === "FAIL" ? "fault" : "signed", c.name + ": " + c.reason]);
  items.push(["signed", "the verdict is signed by the service (ES256, key " + kid + "), answers this page's nonce and has not expired (checked here with WebCrypto)"]);
  if (reported && ev.tls_spki_sha256 !== reported) items.push(["fault", "the service appraised evidence for another TLS key than the one this server reports"]);
  items.push(["unchecked", caveat]);
  renderChecks(items);
  const v = $("verdict");
  const who = " (signed by the attestation service " + base + ")";
  if (status === "affirming" && failed.length === 0 && !(reported && ev.tls_spki_sha256 !== reported)) {
    v.className = "verdict ok";
    v.textContent = "AFFIRMING" + who + ": " + (img.name || "?") + " " + (img.version || "") + "; TLS key not checked by this browser";
    banner(caveat, false);
  } else if (status === "warning" && failed.length === 0) {
    v.className = "verdict sim";
    v.textContent = "WARNING" + who + ": " + (ev.simulated ? "a simulated TD the service accepts (dev), no hardware protection" : (ev.verdict || "accepted with exceptions")) +
      "; TLS key not checked by this browser";
    banner("The service accepts this TD with a warning" + (ev.simulated ? " (simulated TDX: nothing is protected by hardware)" : "") + ". " + caveat, false);
  } else {
    v.className = "verdict bad";
    v.textContent = "CONTRAINDICATED" + who + ": " + (failed.length ? failed[0].name + ": " + failed[0].reason : (ev.verdict || status));
    banner("The attestation service does not trust this TD (" + (failed.length ? failed[0].name : status) + "). Do not send confidential data.", true);
  }
  $("service-status").textContent = status + " (policy " + (tdx["ear.appraisal-policy-id"] || "none") + ", expires " +
    new Date(claims.exp * 1000).toISOString() + ")";
}

// renderChecks lists [status, text] pairs: "fault" (a problem found),
// "consistent" (checked, but only against what the server says) and
// "unchecked".
function renderChecks(items) {
  const ul = $("checks");
  ul.innerHTML = "";
  const label = { fault: "FAULT", consistent: "consistent", unchecked: "NOT CHECKED", signed: "service" };
  for (const [status, text] of items) {
    const li = document.createElement("li");
    li.className = "check " + status;
    const b = document.createElement("strong"); b.textContent = label[status] + ": ";
    li.append(b, document.createTextNode(text));
    ul.append(li);
  }
  const how = $("how");
  how.innerHTML = "";
  HOW_TO_VERIFY.forEach((part, i) => {
    if (i % 2 === 0) { how.append(document.createTextNode(part)); return; }
    const c = document.createElement("code"); c.textContent = part; how.append(c);
  });
}

function render(body, parsed, bound) {
  const img = body.image || {};
  $("identity").textContent = "image: " + (img.name || "?") + " " + (img.version || "") + (img.dev ? " (dev)" : "");
  const sim = !!(body.simulated || img.simulated);
  const faults = [];
  if (parsed.version !== 4 || parsed.teeType !== 0x81) faults.push("not a TDX quote (version " + parsed.version + ", TEE type 0x" + parsed.teeType.toString(16) + ")");
  if (!parsed.signed) faults.push("the quote carries no signature: it cannot come from a TD");
  if (!bound) faults.push("REPORTDATA does not match this page's nonce and the TLS key hash the server reports: the quote is not for this session");
  if (parsed.debug) faults.push("the TD runs in DEBUG mode: the host can read its memory");
  const checks = faults.map((f) => ["fault", f]);
  if (bound) checks.push(["consistent", "REPORTDATA matches this page's nonce and the TLS key hash the server reports (the server supplies both, so a forger passes this too)"]);
  if (parsed.signed) checks.push(["consistent", "the quote has a signature (present, not verified)"]);
  for (const n of NOT_CHECKED) checks.push(["unchecked", n]);
  renderChecks(checks);
  const v = $("verdict");
  if (faults.length) {
    v.className = "verdict bad";
    v.textContent = "NOT TRUSTED: " + faults[0];
    banner("The attestation has a fault (" + faults[0] + "). Do not send confidential data.", true);
  } else if (sim) {
    v.className = "verdict sim";
    v.textContent = "SIMULATED TDX (as the server reports), NOT VERIFIED by this page";
    banner("SIMULATED: the server says this image runs under the TDX simulator (dev); nothing here is protected by hardware. " +
      "This page cannot verify the server: use verifier proxy.", false);
  } else {
    v.className = "verdict unverified";
    v.textContent = "NOT VERIFIED by this page: no fault found, but the signature and the TLS key were not checked";
    banner("This page cannot verify the server it talks to. Before sending confidential data, verify it with verifier proxy.", false);
  }
  const sum = $("att-summary");
  sum.innerHTML = "";
  const add = (k, val) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = val;
    sum.append(dt, dd);
  };
  add("image", (img.name || "?") + " " + (img.version || "") + " (as reported)");
  add("provider", (body.quote_provider || "?") + " (as reported)");
  add("simulated", (sim ? "yes" : "no") + " (as reported)");
  add("debug", parsed.debug ? "yes" : "no");
  add("nonce", (body.report_data || {}).nonce || "");
  add("TLS key", ((body.report_data || {}).spki_hash || "") + " (as reported)");
  add("REPORTDATA", bound ? "matches nonce and reported key" : "DOES NOT MATCH");
  add("signature", parsed.signed ? "present, not verified" : "ABSENT");
  add("reference", body.reference_url || "(not published)");
  add("time", body.timestamp || "");
  if (body.state) add("state volume", body.state + (typeof body.state_generation === "number" ? ", generation " + body.state_generation : "") + " (as reported)");
  checkGeneration(body.state_generation);

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
    let headers = { "Content-Type": "application/json" };
    const id = await ensureConversation(model);
    if (id) headers = historyHeaders(Object.assign(headers, { "X-Tdforge-Conversation": id }));
    const r = await fetch("/api/chat", {
      method: "POST",
      headers,
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
    if (r.headers.get("X-Tdforge-History") === "unavailable") loadConversations();
  } catch (e) {
    out.className = "msg error";
    out.textContent = "Error: " + e.message;
    state.history.pop();
  } finally {
    state.busy = false; $("send").disabled = false;
    if (state.convId) loadConversations();
  }
}

// ---- Conversations (kept by the agent in the sealed state volume) ----
//
// Every answer of the conversation API carries the store's generation, a
// count of committed writes. The host can replay an older copy of the
// encrypted volume (TDX has no monotonic counter); the page remembers the
// highest generation it has seen and warns when the store goes back.

const GEN_KEY = "tdforge.stateGeneration@" + location.host;

function checkGeneration(g) {
  if (typeof g !== "number") return;
  const floor = Number(localStorage.getItem(GEN_KEY) || "0");
  if (g < floor) {
    const b = $("rollback");
    b.className = "banner bad";
    b.textContent = "ROLLBACK: the conversation store is at generation " + g + ", below generation " + floor +
      " that this browser saw before. The host may have replayed an older copy of the sealed volume; conversations may be missing or stale.";
    return;
  }
  localStorage.setItem(GEN_KEY, String(g));
}

// The history key: a secret only this browser holds (32 random bytes,
// base64url), sent as a bearer token. The agent keeps only its SHA-256 as
// the owner of the conversations saved with it, so nobody without the key
// (the host included) can list or read them. Clearing the browser's
// storage loses access (the conversations stay sealed on the volume); to
// use them in another browser, copy this localStorage value there.
const HISTORY_KEY = "tdforge.historyKey@" + location.host;

function historyKey() {
  let k = localStorage.getItem(HISTORY_KEY);
  if (!k || !/^[A-Za-z0-9_-]{32,128}$/.test(k)) {
    const b = new Uint8Array(32);
    crypto.getRandomValues(b);
    k = b64urlEncode(b);
    localStorage.setItem(HISTORY_KEY, k);
  }
  return k;
}

function historyHeaders(extra) {
  return Object.assign({ Authorization: "Bearer " + historyKey() }, extra || {});
}

async function historyJSON(url, init) {
  init = Object.assign({ cache: "no-store" }, init || {});
  init.headers = historyHeaders(init.headers);
  const r = await fetch(url, init);
  let body = {};
  try { body = await r.json(); } catch (_) {}
  if (!r.ok) {
    const e = new Error(body.error || ("HTTP " + r.status));
    e.status = r.status;
    throw e;
  }
  checkGeneration(body.generation);
  return body;
}

function historyUnavailable(msg) {
  state.historyOff = msg;
  $("convs-status").textContent = "History is off: " + msg + " Chats still work but are not saved.";
  $("convs").innerHTML = "";
}

async function loadConversations() {
  try {
    const body = await historyJSON("/v1/conversations");
    state.historyOff = "";
    const list = body.conversations || [];
    $("convs-status").textContent = list.length ? "" : "No saved conversations yet.";
    const ul = $("convs");
    ul.innerHTML = "";
    for (const c of list) {
      const li = document.createElement("li");
      li.dataset.id = c.id;
      if (c.id === state.convId) li.className = "current";
      const open = document.createElement("button");
      open.type = "button"; open.className = "open";
      open.textContent = c.title || "(untitled)";
      open.title = (c.title || "(untitled)") + " · " + c.messages + " messages · " + new Date(c.updated).toLocaleString();
      open.addEventListener("click", () => openConversation(c.id));
      const del = document.createElement("button");
      del.type = "button"; del.className = "delete";
      del.textContent = "×"; del.title = "Delete this conversation";
      del.setAttribute("aria-label", "Delete " + (c.title || "conversation"));
      del.addEventListener("click", () => deleteConversation(c.id));
      li.append(open, del);
      ul.append(li);
    }
  } catch (e) {
    historyUnavailable(e.message);
  }
}

// ensureConversation returns the current conversation's id, creating one
// for a new chat; null when history is off.
async function ensureConversation(model) {
  if (state.convId) return state.convId;
  try {
    const body = await historyJSON("/v1/conversations", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model }),
    });
    state.convId = body.id;
    return body.id;
  } catch (e) {
    historyUnavailable(e.message);
    return null;
  }
}

async function openConversation(id) {
  if (state.busy) return;
  try {
    const body = await historyJSON("/v1/conversations/" + id);
    state.convId = id;
    state.history = (body.messages || []).map((m) => ({ role: m.role, content: m.content }));
    $("messages").innerHTML = "";
    for (const m of state.history) addMessage(m.role === "user" ? "user" : "assistant", m.content);
    const sel = $("model");
    if (body.model && Array.from(sel.options).some((o) => o.value === body.model)) sel.value = body.model;
    loadConversations();
  } catch (e) {
    addMessage("error", "Cannot open the conversation: " + e.message);
  }
}

async function deleteConversation(id) {
  try {
    await historyJSON("/v1/conversations/" + id, { method: "DELETE" });
    if (state.convId === id) newChat();
  } catch (e) {
    addMessage("error", "Cannot delete the conversation: " + e.message);
  }
  loadConversations();
}

function newChat() {
  if (state.busy) return;
  state.convId = null;
  state.history = [];
  $("messages").innerHTML = "";
  loadConversations();
}

$("prompt-form").addEventListener("submit", send);
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("prompt-form").requestSubmit(); }
});
$("new-chat").addEventListener("click", newChat);
$("reattest").addEventListener("click", attest);
attest();
loadModels();
loadConversations();
