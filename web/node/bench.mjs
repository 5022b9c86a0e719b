// One kiln-web benchmark run under Node, for bench/compare.py: loads a GGUF (streamed from its
// file), generates once unmeasured and once measured, greedily from the given prompt token ids,
// ignoring end-of-generation tokens, and prints one JSON line with the same fields as
// `kiln bench --json` and compare.py's llama.cpp worker.
//
//   node web/node/bench.mjs --model FILE --prompt-ids '[1,2,3]' --gen-tokens 64
//                           [--context 512] [--flavor simd|scalar]

import { parseArgs } from "node:util";

import { initKiln, loadModel } from "../js/kiln.js";

const { values: a } = parseArgs({
  options: {
    model: { type: "string" },
    "prompt-ids": { type: "string" },
    "gen-tokens": { type: "string", default: "64" },
    context: { type: "string", default: "512" },
    flavor: { type: "string", default: "simd" },
  },
});
if (!a.model || !a["prompt-ids"]) {
  console.error("usage: bench.mjs --model FILE --prompt-ids JSON [--gen-tokens N] [--context N]");
  process.exit(2);
}
if (a.flavor !== "simd" && a.flavor !== "scalar") {
  console.error(`--flavor ${a.flavor}: use simd or scalar`);
  process.exit(2);
}
const simd = a.flavor === "simd";
const prompt = new Uint32Array(JSON.parse(a["prompt-ids"]));
const genTokens = Number(a["gen-tokens"]);

const rssBefore = process.resourceUsage().maxRSS / 1024;
const kiln = await initKiln({ simd });
const t0 = performance.now();
const model = await loadModel(a.model, { simd, context: Number(a.context) });
const loadMs = performance.now() - t0;

let g;
for (let rep = 0; rep < 2; rep++) {
  // warm-up, then the measured generation
  g = model.generate(prompt, { maxTokens: genTokens, ignoreEog: true });
}
const info = model.info();
console.log(
  JSON.stringify({
    runtime: `kiln-web ${simd ? "simd128" : "scalar"}`,
    simd128: kiln.simd128(),
    isa: info.isa,
    threads: 1,
    node: process.versions.node,
    prompt_tokens: g.stats.promptTokens,
    load_ms: loadMs,
    ttft_ms: g.stats.ttftMs,
    prefill_tok_s: g.stats.prefillTokS,
    decode_tok_s: g.stats.decodeTokS,
    tokens: [...g.tokens],
    peak_rss_mb: process.resourceUsage().maxRSS / 1024,
    rss_before_load_mb: rssBefore,
  }),
);
