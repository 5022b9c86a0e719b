// One wllama (llama.cpp compiled to WebAssembly, npm @wllama/wllama) benchmark run under Node 26,
// for bench/compare.py: loads a GGUF, generates once unmeasured and once measured, greedily from
// the given prompt token ids, ignoring end-of-generation tokens, and prints one JSON line with the
// same fields as `kiln bench --json`, compare.py's llama.cpp worker and web/node/bench.mjs.
//
//   node-26 bench/wllama/bench.mjs --model FILE --prompt-ids '[1,2,3]' --gen-tokens 64
//                                  [--context 512] [--threads 1]
//
// wllama is written for browsers: it starts its worker from a Blob URL (`new Worker(blobURL)`)
// and that worker speaks the browser worker API (self, postMessage, onmessage). The shim below
// writes each such worker's code to a temporary CommonJS file and runs it on worker_threads with
// those globals mapped onto parentPort. Emscripten's own pthread workers already know Node; they
// only need their script (handed over as a Blob) to be a file too. The multi-thread build needs
// Memory64 and JSPI (WebAssembly.Suspending), which Node 26 has and Node 20 lacks.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { Worker as NodeWorker } from "node:worker_threads";

const { values: a } = parseArgs({
  options: {
    model: { type: "string" },
    "prompt-ids": { type: "string" },
    "prompt-text": { type: "string" },
    "gen-tokens": { type: "string", default: "64" },
    context: { type: "string", default: "512" },
    threads: { type: "string", default: "1" },
  },
});
if (!a.model || !a["prompt-ids"] || a["prompt-text"] === undefined) {
  console.error(
    "usage: bench.mjs --model FILE --prompt-ids JSON --prompt-text TEXT [--gen-tokens N] " +
      "[--context N] [--threads N]",
  );
  process.exit(2);
}
if (!WebAssembly.Suspending) {
  console.error(`wllama needs JSPI (WebAssembly.Suspending); Node ${process.versions.node} lacks it`);
  process.exit(2);
}
const prompt = JSON.parse(a["prompt-ids"]);
const promptText = a["prompt-text"];
const genTokens = Number(a["gen-tokens"]);
const threads = Number(a.threads);

// --- the browser shim ----------------------------------------------------------------------------

const here = path.dirname(fileURLToPath(import.meta.url));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-wllama-"));
process.on("exit", () => fs.rmSync(tmp, { recursive: true, force: true }));
let nFiles = 0;

// Blob URLs created by wllama, with the source text of the Blob (wllama builds them from strings).
const blobText = new Map();
const BrowserBlob = globalThis.Blob;
globalThis.Blob = class extends BrowserBlob {
  constructor(parts = [], opts) {
    super(parts, opts);
    if (parts.every((p) => typeof p === "string")) this.sourceText = parts.join("");
  }
};
URL.createObjectURL = (blob) => {
  if (blob.sourceText === undefined) throw new Error("shim: createObjectURL of a non-text Blob");
  const url = `blob:kiln-wllama/${blobText.size}`;
  blobText.set(url, blob.sourceText);
  return url;
};

// Runs in the wllama worker before its own code: the browser worker globals over parentPort, and
// a Blob handed over in `module.init` (the script for emscripten's pthreads) turned into a file.
const WORKER_PRELUDE = `
const { parentPort: __port } = require("node:worker_threads");
globalThis.self = globalThis;
globalThis.postMessage = (data, transfer) => __port.postMessage(data, transfer);
let __queue = Promise.resolve();
__port.on("message", (data) => {
  __queue = __queue.then(async () => {
    if (data && data.verb === "module.init" && data.args[0] instanceof Blob) {
      const file = ${JSON.stringify(tmp)} + "/pthread.cjs";
      require("node:fs").writeFileSync(file, await data.args[0].text());
      data.args[0] = file;
    }
    // Not awaited: a read reply must reach the worker while a call into the wasm is suspended.
    globalThis.onmessage?.({ data });
  });
});
`;

globalThis.Worker = class extends NodeWorker {
  constructor(url, _opts) {
    const code = blobText.get(String(url));
    if (code === undefined) throw new Error(`shim: unknown worker URL ${url}`);
    const file = path.join(tmp, `worker-${nFiles++}.cjs`);
    fs.writeFileSync(file, WORKER_PRELUDE + code);
    super(file);
    this.on("message", (data) => this.onmessage?.({ data }));
    this.on("error", (err) => (this.onerror ? this.onerror(err) : console.error(err)));
  }
};
globalThis.self = globalThis;
globalThis.location = { href: pathToFileURL(here + "/").href };

// --- the run -------------------------------------------------------------------------------------

const { Wllama } = await import("@wllama/wllama/esm/index.js");

const peakRssMb = () => {
  const m = fs.readFileSync("/proc/self/status", "utf8").match(/^VmHWM:\s+(\d+)/m);
  return m ? Number(m[1]) / 1024 : 0;
};

const rssBefore = peakRssMb();
const wasm = path.join(here, "node_modules/@wllama/wllama/esm/wasm/wllama.wasm");
const wllama = new Wllama(
  { default: pathToFileURL(wasm).href },
  {
    suppressNativeLog: !process.env.WLLAMA_BENCH_DUMP,
    logger: process.env.WLLAMA_BENCH_DUMP ? console : { ...console, debug: () => {}, log: () => {} },
    // Downloads and their browser caches (OPFS) are not used: the GGUF comes as a file Blob.
    cacheManager: {},
    modelManager: {},
  },
);
const t0 = performance.now();
await wllama.loadModel([await fs.openAsBlob(a.model)], {
  n_ctx: Number(a.context),
  n_batch: Number(a.context),
  n_threads: threads,
  n_gpu_layers: 0,
  n_parallel: 1,
});
const loadMs = performance.now() - t0;
if (wllama.getNumThreads() !== threads || (threads > 1) !== wllama.isMultithread()) {
  console.error(
    `wllama runs ${wllama.getNumThreads()} threads (multithread ${wllama.isMultithread()}), asked for ${threads}`,
  );
  process.exit(1);
}

// The warm-up generation also asks for each token's id (`n_probs`, a softmax over the vocabulary
// per token); the measured one does not, and must produce the same text (greedy).
const run = (ids) =>
  wllama.createCompletion({
    prompt: promptText,
    max_tokens: genTokens,
    temperature: 0,
    top_k: 1,
    samplers_sequence: ["top_k"],
    ignore_eos: true,
    cache_prompt: false,
    n_probs: ids ? 1 : 0,
    stream: false,
  });
const warm = await run(true);
const tokens = warm.choices[0].logprobs.content.map((c) => c.id);
const result = await run(false);
if (process.env.WLLAMA_BENCH_DUMP) console.error(JSON.stringify(result));
const t = result.timings;
if (t.prompt_n !== prompt.length || t.predicted_n !== genTokens || tokens.length !== genTokens) {
  console.error(
    `wllama ran ${t.prompt_n} prompt tokens (want ${prompt.length}) and generated ` +
      `${t.predicted_n} (ids of ${tokens.length}), want ${genTokens}`,
  );
  process.exit(1);
}
if (result.choices[0].text !== warm.choices[0].text) {
  console.error("wllama's measured greedy generation differs from its warm-up");
  process.exit(1);
}
// Timings are llama.cpp's own counters inside the WebAssembly: the prompt's time (to the first
// token's logits) and the generation's, per token over the tokens after the first.
console.log(
  JSON.stringify({
    runtime: `wllama ${JSON.parse(fs.readFileSync(path.join(here, "node_modules/@wllama/wllama/package.json"))).version}`,
    threads: wllama.getNumThreads(),
    node: process.versions.node,
    prompt_tokens: t.prompt_n,
    load_ms: loadMs,
    ttft_ms: t.prompt_ms,
    prefill_tok_s: t.prompt_per_second,
    decode_tok_s: t.predicted_per_second,
    tokens,
    peak_rss_mb: peakRssMb(),
    rss_before_load_mb: rssBefore,
  }),
);
await wllama.exit();
process.exit(0);
