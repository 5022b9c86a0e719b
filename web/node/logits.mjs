// kiln-web's logits under Node, for scripts/distance_report.py: loads a GGUF (streamed from its
// file) on the CPU path and writes the logits at the given positions of the given token ids to
// --out as raw little-endian float32, positions × vocab row-major (row i: positions[i]); prints
// one JSON line {backend, simd128, vocab, positions} to stdout.
//
//   node web/node/logits.mjs --model FILE --ids 1,2,3 --positions 0,2 --out FILE
//                            [--steps] [--context 256] [--flavor simd|scalar]
//
// --steps feeds the ids one decode step at a time (generation's decode kernels); without it each
// prefix runs as one prompt. Needs scripts/build-web.sh (web/pkg/).

import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";

import { initKiln, loadModel } from "../js/kiln.js";

const { values: a } = parseArgs({
  options: {
    model: { type: "string" },
    ids: { type: "string" },
    positions: { type: "string" },
    out: { type: "string" },
    steps: { type: "boolean", default: false },
    context: { type: "string", default: "256" },
    flavor: { type: "string", default: "simd" },
  },
});
if (!a.model || !a.ids || !a.positions || !a.out) {
  console.error("usage: logits.mjs --model FILE --ids 1,2,3 --positions 0,2 --out FILE [--steps]");
  process.exit(2);
}
if (a.flavor !== "simd" && a.flavor !== "scalar") {
  console.error(`--flavor ${a.flavor}: use simd or scalar`);
  process.exit(2);
}
const simd = a.flavor === "simd";
const list = (s) => s.split(",").map(Number);
const ids = Uint32Array.from(list(a.ids));
const positions = list(a.positions);

const kiln = await initKiln({ simd });
const model = await loadModel(a.model, { simd, context: Number(a.context) });
const info = model.info();
const logits = model.logits(ids, { positions, steps: a.steps });
writeFileSync(a.out, new Uint8Array(logits.buffer, logits.byteOffset, logits.byteLength));
console.log(JSON.stringify({
  backend: info.backend,
  simd128: kiln.simd128(),
  vocab: info.vocab,
  positions: logits.length / info.vocab,
}));
model.free();
