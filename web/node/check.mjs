// Checks kiln-web under Node against llama.cpp: SmolLM2-135M is streamed from its file into the
// package, a reference prompt is tokenized and decoded greedily, and the tokens must equal
// llama.cpp's (runtime/tests/fixtures/reference/smollm2.json) up to the first near-tie. Also
// checks the streamed pieces, stop strings and cancellation, `logits` (the last prompt position's
// against llama.cpp's), the `auto`/`gpu` backends (Node has no WebGPU: the CPU path, and a
// refusal; `tune`, for the GPU path, refused), and prints decode tok/s.
//
//   node web/node/check.mjs [--flavor simd|scalar|both] [--tokens N] [--case NAME]
//
// Needs scripts/build-web.sh (web/pkg/) and scripts/install-models.sh smollm2 (models/).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import { initKiln, loadModel, simd128Supported } from "../js/kiln.js";

const repo = fileURLToPath(new URL("../../", import.meta.url));
const { values: args } = parseArgs({
  options: {
    flavor: { type: "string", default: "both" },
    tokens: { type: "string", default: "14" },
    case: { type: "string", default: "capital" },
  },
});

// As in runtime/tests/model_reference.rs: greedy comparisons stop at the first step where
// llama.cpp's top-1/top-2 logit gap is below this (two correct runtimes may differ there).
const NEAR_TIE = 0.25;
// As in runtime/tests/model_reference.rs for SmolLM2: the first-position logits may differ from
// llama.cpp's by this much over its top 64 and over its 256 sampled ids (llama.cpp's own
// distance from float64 arithmetic on these weights is up to 0.96 and 1.40). Measured for
// kiln-web at the `capital` prompt: 0.64 and 0.67 (SIMD128), 0.45 and 0.63 (scalar).
const TOL_TOP = 1.0;
const TOL_SAMPLE = 1.5;

const fixture = JSON.parse(
  readFileSync(`${repo}runtime/tests/fixtures/reference/smollm2.json`, "utf8"),
);
const ref = fixture.cases.find((c) => c.name === args.case);
assert.ok(ref, `no case ${args.case} in smollm2.json`);
const tie = ref.gaps.findIndex((g) => g < NEAR_TIE);
const n = Math.min(Number(args.tokens), tie < 0 ? ref.gaps.length : tie);
assert.ok(n >= 2, `--tokens ${args.tokens}: need at least 2 tokens before the near-tie`);

async function check(simd) {
  const kiln = await initKiln({ simd });
  assert.equal(kiln.simd128(), simd, "the loader picked the wrong build");
  const flavor = simd ? "simd128" : "scalar";
  let progress = 0;
  const t0 = performance.now();
  const model = await loadModel(`${repo}models/${fixture.model}`, {
    simd,
    context: 256,
    onProgress: () => progress++,
  });
  const loadMs = performance.now() - t0;
  assert.ok(progress > 1, "the file should arrive in several chunks");
  const info = model.info();
  assert.equal(info.arch, "llama");
  assert.equal(info.simd128, simd);
  assert.equal(info.context, 256);

  // The tokenizer and the chat template agree with llama.cpp's.
  assert.deepEqual([...model.tokenize(ref.text)], ref.prompt_ids, "prompt tokens");
  const chat = fixture.cases.find((c) => c.name === "chat_capital");
  const messages = [{ role: "user", content: "What is the capital of France?" }];
  assert.deepEqual([...model.encodeChat(messages)], chat.prompt_ids, "chat template tokens");
  assert.throws(() => model.encodeChat([{ role: "user" }]), /string `content`/);

  // Greedy decoding agrees with llama.cpp's up to the near-tie; the callback sees every token.
  const pieces = [];
  const ids = [];
  const g = model.generate(ref.prompt_ids, { maxTokens: n, ignoreEog: true }, (piece, id) => {
    pieces.push(piece);
    ids.push(id);
  });
  assert.deepEqual([...g.tokens], ref.greedy_ids.slice(0, n), `${flavor}: greedy tokens`);
  assert.deepEqual(ids, [...g.tokens], "callback ids");
  assert.equal(pieces.join(""), g.text, "streamed pieces make the text");
  assert.equal(g.text, model.detokenize(g.tokens), "text of the tokens");
  assert.equal(g.stop, "max_tokens");
  assert.equal(g.stats.promptTokens, ref.prompt_ids.length);
  assert.equal(g.stats.generatedTokens, n);
  assert.ok(g.stats.ttftMs > 0 && g.stats.decodeTokS > 0, "stats are measured");

  // A stop string ends the text before it; returning false from the callback cancels.
  const greedyText = g.text;
  const stopAt = greedyText.indexOf(".", 1);
  if (stopAt > 0) {
    const s = model.generate(ref.text, { maxTokens: n, stop: ["."] });
    assert.equal(s.stop, "stop_string");
    assert.equal(s.text, greedyText.slice(0, stopAt));
  }
  let calls = 0;
  const c = model.generate(ref.text, { maxTokens: n }, () => ++calls < 2);
  assert.equal(c.stop, "cancelled");
  assert.equal(calls, 2);
  assert.equal(c.tokens.length, 2);
  assert.throws(() => model.generate("x", { maxTokkens: 3 }), /unknown generate option/);

  // Logits at two prompt positions, by prompt and by decode steps: rows in the order asked,
  // positions × vocab; the last position's are llama.cpp's within the tolerances above, and their
  // argmax is the first greedy token.
  const last = ref.prompt_ids.length - 1;
  const positions = [1, last];
  const vocab = info.vocab;
  assert.equal(vocab, fixture.n_vocab);
  const byPrompt = model.logits(ref.prompt_ids, { positions });
  const bySteps = model.logits(ref.prompt_ids, { positions, steps: true });
  assert.ok(byPrompt instanceof Float32Array && byPrompt.length === 2 * vocab, "logits layout");
  assert.equal(bySteps.length, 2 * vocab);
  assert.ok(byPrompt.every(Number.isFinite) && bySteps.every(Number.isFinite), "finite logits");
  // The default position is the last id's: row 0 is the prefix ids[..=1] on its own.
  assert.deepEqual(model.logits(ref.prompt_ids.slice(0, 2)), byPrompt.subarray(0, vocab), "row 0");
  // Bit-identical both ways, as on the native CPU path (measured: 0 difference, both builds).
  assert.deepEqual(bySteps, byPrompt, `${flavor}: steps and prompt logits`);
  const at = byPrompt.subarray(vocab, 2 * vocab);
  let top = 0;
  let sample = 0;
  for (const [id, want] of ref.first_top) top = Math.max(top, Math.abs(at[id] - want));
  for (const [id, want] of ref.first_logits_sample) sample = Math.max(sample, Math.abs(at[id] - want));
  assert.ok(top <= TOL_TOP, `${flavor}: top-64 logits ${top} from llama.cpp's`);
  assert.ok(sample <= TOL_SAMPLE, `${flavor}: sampled logits ${sample} from llama.cpp's`);
  const argmax = at.reduce((best, v, i) => (v > at[best] ? i : best), 0);
  assert.equal(argmax, ref.greedy_ids[0], `${flavor}: argmax of the last position`);
  assert.throws(() => model.logits(ref.prompt_ids, { position: [1] }), /unknown logits option `position`/);
  assert.throws(() => model.logits(ref.prompt_ids, { positions: [3, 1] }), /strictly increasing/);
  assert.throws(() => model.logits(ref.prompt_ids, { positions: [last + 1] }), /below the id count/);
  assert.throws(() => model.logits(ref.prompt_ids, { steps: 1 }), /`steps` must be a boolean/);
  console.log(
    `kiln-web ${flavor}: logits at positions ${positions}, steps = prompt; the last's distance ` +
      `from llama.cpp's: top-64 ${top.toFixed(3)}, sampled ${sample.toFixed(3)}`,
  );

  // A generation continued after its first 5 tokens (as kiln.js goes on after a lost GPU
  // device) hands out only the rest, and returns the whole generation.
  const rest = [];
  const k = model.generate(ref.prompt_ids, { maxTokens: n, ignoreEog: true, continueFrom: g.tokens.slice(0, 5) },
    (_, id) => rest.push(id));
  assert.deepEqual(rest, [...g.tokens.slice(5)], `${flavor}: the continued tokens`);
  assert.deepEqual([...k.tokens], [...g.tokens]);
  assert.equal(k.text, g.text);
  assert.throws(() => model.generate("x", { continueFrom: [1, -2] }), /continueFrom/);
  assert.throws(() => model.generate("x", { continueFrom: [1e9] }), /outside the vocabulary/);

  console.log(
    `kiln-web ${flavor} (${info.isa}): ${n} greedy tokens equal llama.cpp's ` +
      `(case ${ref.name}); load ${loadMs.toFixed(0)} ms, ttft ${g.stats.ttftMs.toFixed(0)} ms, ` +
      `prefill ${g.stats.prefillTokS.toFixed(1)} tok/s, decode ${g.stats.decodeTokS.toFixed(1)} tok/s`,
  );
  model.free();

  // Node has no WebGPU: `auto` loads the CPU path, `gpu` is refused; generateAsync (the GPU's
  // form) runs the CPU path too, with the same tokens.
  const auto = await loadModel(`${repo}models/${fixture.model}`, { simd, context: 256, backend: "auto" });
  assert.equal(auto.info().backend, "cpu");
  const a = await auto.generateAsync(ref.prompt_ids, { maxTokens: n, ignoreEog: true });
  assert.deepEqual([...a.tokens], ref.greedy_ids.slice(0, n), `${flavor}: generateAsync tokens`);
  assert.equal(a.stop, "max_tokens");
  // Tuning is for the GPU path: on the CPU path `tune` rejects (after checking its options) and
  // no tuned profile is in use. Without IndexedDB (Node) kiln.js keeps no profile.
  assert.equal(auto.profileUsed(), null);
  await assert.rejects(auto.tune({ budgetMs: 1000 }), /tune is for the GPU path/);
  await assert.rejects(auto.tune({ budgetMS: 1000 }), /unknown tune option `budgetMS`/);
  await assert.rejects(auto.tune({ budgetMs: 0 }), /`budgetMs` must be a positive number/);
  auto.free();
  await assert.rejects(
    loadModel(`${repo}models/${fixture.model}`, { simd, backend: "gpu" }),
    /no WebGPU/,
  );

  // The loader's options are checked; `open` with `auto` gives the CPU path in Node.
  await assert.rejects(kiln.ModelLoader.open({ backnd: "gpu" }), /unknown ModelLoader.open option `backnd`/);
  await assert.rejects(kiln.ModelLoader.open({ backend: "tpu" }), /"auto", "gpu" or "cpu"/);
  await assert.rejects(kiln.ModelLoader.open({ backend: "gpu" }), /no WebGPU/);
  await assert.rejects(kiln.ModelLoader.open({ profiles: "{}" }), /`profiles` must be an array/);
  await assert.rejects(kiln.ModelLoader.open({ profiles: [{}] }), /entry 0 is not a string/);
  const file = readFileSync(`${repo}models/${fixture.model}`);
  const opened = await kiln.ModelLoader.open({ backend: "auto", context: 64, sizeHint: file.length });
  opened.push(file);
  assert.equal(opened.received(), file.length);
  assert.throws(() => opened.finish({ contxt: 3 }), /unknown finish option `contxt`/);

  // A sizeHint that is not a length is refused by `open`; one no memory can hold is only a
  // hint (it aborted the instance before). The header pushed in 1000-byte chunks still loads.
  await assert.rejects(kiln.ModelLoader.open({ backend: "cpu", sizeHint: "big" }), /sizeHint/);
  const hinted = new kiln.ModelLoader(1e18);
  const first = 1 << 20;
  for (let at = 0; at < first; at += 1000) hinted.push(file.subarray(at, Math.min(at + 1000, first)));
  hinted.push(file.subarray(first));
  assert.equal(hinted.expected(), file.length);
  hinted.finish({ context: 32 }).free();

  // Files that are not GGUF, cut short, or longer than their header says are refused with the
  // reason.
  const long = new kiln.ModelLoader();
  long.push(file);
  assert.throws(() => long.push(new Uint8Array(1)), /longer than its header says/);
  long.free();
  const bad = new kiln.ModelLoader();
  assert.throws(() => bad.push(new TextEncoder().encode("not a gguf file")), /not a GGUF file/);
  bad.free();
  const head = file.subarray(0, 8 << 20);
  const cut = new kiln.ModelLoader(head.length);
  cut.push(head);
  assert.ok(cut.expected() > head.length, "the header gives the whole file's length");
  assert.throws(() => cut.finish(), /cut short|truncated|re-download|reinstall/i);
}

assert.ok(simd128Supported(), "Node 20 runs SIMD128; the probe module should validate");
const flavors = { both: [true, false], simd: [true], scalar: [false] }[args.flavor];
assert.ok(flavors, `--flavor ${args.flavor}: use simd, scalar or both`);
for (const simd of flavors) await check(simd);
