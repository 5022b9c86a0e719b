// The page: sends the model URL and prompts to the worker (kiln runs there, so the page stays
// responsive while it generates) and streams the pieces it sends back into the output box.
// `?autorun=1&prompt=...&maxTokens=N&backend=cpu|gpu|auto` loads and generates on its own (the
// headless test uses it; `&loseAfter=N` destroys the GPU device after N tokens; `&tuneMs=N`
// tunes for N ms instead of generating); the result (and the wasm memory size after the load,
// the tuned profile in use, a tune's profile) is kept in `window.kilnDemo`.

const $ = (id) => document.getElementById(id);
const worker = new Worker(new URL("worker.js", import.meta.url), { type: "module" });
const demo = (window.kilnDemo = { done: false, error: null, tokens: [], text: "", recovered: [] });
// Cancelling: the worker polls this shared flag between tokens where the page is cross-origin
// isolated; elsewhere Stop takes effect at the end of the generation.
const cancel = self.crossOriginIsolated ? new Int32Array(new SharedArrayBuffer(4)) : null;

worker.onmessage = ({ data: m }) => {
  if (m.type === "progress") {
    $("progress").value = m.total ? m.received / m.total : 0;
    $("status").textContent = `${(m.received / 1e6).toFixed(1)} MB`;
  } else if (m.type === "loaded") {
    $("progress").value = 1;
    $("status").textContent =
      `${m.info.arch}, ${m.info.layers} layers, ${m.info.backend}: ${m.info.isa} ` +
      `(${m.info.simd128 ? "SIMD128" : "scalar"} build), ` +
      `loaded in ${m.ms.toFixed(0)} ms, wasm memory ${(m.memory / 1e6).toFixed(1)} MB`;
    demo.info = m.info;
    demo.memory = m.memory;
    demo.profileUsed = m.profileUsed;
    $("go").disabled = false;
    // Tuning is for the GPU path.
    $("tuneRow").hidden = m.info.backend !== "gpu";
    if (m.profileUsed) $("tuneStatus").textContent = `a tuned profile is in use (${m.profileUsed})`;
    if (params.get("autorun")) params.get("tuneMs") ? tune() : generate();
  } else if (m.type === "tuneProgress") {
    $("tuneProgress").value = m.total ? m.done / m.total : 0;
    $("tuneStatus").textContent = `tuning: ${m.done}/${m.total} ${m.label}`;
  } else if (m.type === "tuned") {
    const entries = JSON.parse(m.profile).entries;
    const winners = entries.filter((e) => e.winner !== null).length;
    $("tuneProgress").value = 1;
    $("tuneStatus").textContent =
      `tuned: ${entries.length} entries, ${winners} with a winner; in use now, and saved for this ` +
      "device (IndexedDB): later loads on it use the profile";
    Object.assign(demo, { done: true, profile: m.profile, profileUsed: m.profileUsed });
    $("go").disabled = $("tune").disabled = false;
  } else if (m.type === "recovered") {
    $("status").textContent = `the GPU device was lost (${m.reason}); reloaded on ${m.info.backend}`;
    demo.recovered.push(m.reason);
    demo.info = m.info;
    $("tuneRow").hidden = m.info.backend !== "gpu";
  } else if (m.type === "token") {
    $("out").textContent += m.piece;
    demo.tokens.push(m.id);
  } else if (m.type === "done") {
    const s = m.result.stats;
    $("stats").textContent =
      `${s.generatedTokens} tokens (${m.result.stop}); time to first token ${s.ttftMs.toFixed(0)} ms, ` +
      `prefill ${s.prefillTokS.toFixed(1)} tok/s, decode ${s.decodeTokS.toFixed(1)} tok/s`;
    Object.assign(demo, { done: true, text: m.result.text, result: m.result });
    $("go").disabled = $("tune").disabled = false;
    $("stop").disabled = true;
  } else if (m.type === "error") {
    $("status").textContent = `error: ${m.message}`;
    Object.assign(demo, { done: true, error: m.message });
    $("go").disabled = $("tune").disabled = false;
    $("stop").disabled = true;
  }
};

function load() {
  $("go").disabled = true;
  $("status").textContent = "loading...";
  const url = new URL($("model").value, location.href).href;
  worker.postMessage({ type: "load", url, backend: $("backend").value, cancel });
}

function generate() {
  Object.assign(demo, { done: false, error: null, tokens: [], text: "" });
  $("out").textContent = "";
  $("stats").textContent = "";
  $("go").disabled = $("tune").disabled = true;
  $("stop").disabled = false;
  if (cancel) Atomics.store(cancel, 0, 0);
  worker.postMessage({
    type: "generate",
    prompt: $("prompt").value,
    chat: $("chat").checked,
    options: { maxTokens: Number($("maxTokens").value), temperature: Number($("temperature").value) },
    loseAfter: Number(params.get("loseAfter") ?? 0),
  });
}

function tune() {
  Object.assign(demo, { done: false, error: null });
  $("go").disabled = $("tune").disabled = true;
  $("tuneProgress").value = 0;
  $("tuneStatus").textContent = "tuning...";
  worker.postMessage({ type: "tune", budgetMs: Number(params.get("tuneMs") ?? 15000) });
}

$("load").onclick = load;
$("tune").onclick = tune;
$("go").onclick = generate;
$("stop").onclick = () => cancel && Atomics.store(cancel, 0, 1);

const params = new URLSearchParams(location.search);
for (const key of ["prompt", "maxTokens", "model", "backend"]) {
  if (params.has(key)) $(key).value = params.get(key);
}
if (params.get("autorun")) load();
