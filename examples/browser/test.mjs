// The demo page in headless Chromium: serves the repository, opens
// examples/browser/?autorun=1 (the page loads SmolLM2 in its worker and generates greedily), and
// checks that the streamed tokens equal llama.cpp's (runtime/tests/fixtures/reference/smollm2.json,
// case `capital`, up to its first near-tie) and that the SIMD128 build was picked.
// Chromium is driven over --remote-debugging-pipe (the DevTools protocol on fds 3 and 4).
//
//   node examples/browser/test.mjs [cpu|gpu|auto|gpu-lost|gpu-tune]   (CHROMIUM=path overrides
//   /usr/lib/chromium/chromium)
//
// `gpu` runs the demo on WebGPU (Chromium's SwiftShader adapter with --enable-unsafe-webgpu) and
// checks that the GPU backend was used and that the file was streamed to the GPU: kiln's wasm
// memory after the load stays far below the file's size. `cpu` (the default) runs the CPU path,
// whose model keeps the file in wasm memory. `gpu-lost` destroys the GPU device mid-generation
// (`GPUDevice.destroy()`): kiln.js reloads the model and the tokens must still equal llama.cpp's.
// `gpu-tune` first has the page tune the GPU path for a bounded time (`&tuneMs=`) and checks the
// profile it returns, then opens the page again: the load must take that profile from IndexedDB
// (`profileUsed()`) and generate the same tokens as `gpu`.
//
// Needs scripts/build-web.sh, scripts/install-models.sh smollm2 and `apt-get install chromium`.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import { serve } from "./serve.mjs";

const repo = fileURLToPath(new URL("../../", import.meta.url));
const NEAR_TIE = 0.25; // as in runtime/tests/model_reference.rs
const TIMEOUT_MS = 240_000;
const mode = process.argv[2] ?? "cpu";
const MODES = ["cpu", "gpu", "auto", "gpu-lost", "gpu-tune"];
assert.ok(MODES.includes(mode), `mode ${mode}: one of ${MODES.join(", ")}`);
// `gpu-lost` runs on the GPU and destroys its device after the 3rd token (mid decode batch):
// kiln.js must load the model again and finish with the same tokens.
const backend = mode.startsWith("gpu-") ? "gpu" : mode;
const LOSE_AFTER = 3;
// `gpu-tune`'s budget: SwiftShader measures a few of SmolLM2's products in it.
const TUNE_MS = 20_000;

// `auto` must pass over headless Chromium's WebGPU, SwiftShader, a software renderer that is
// far slower than the CPU path, and say why.
const expected = backend === "auto" ? "cpu" : backend;

const fixture = JSON.parse(
  readFileSync(`${repo}runtime/tests/fixtures/reference/smollm2.json`, "utf8"),
);
const ref = fixture.cases.find((c) => c.name === "capital");
const n = Math.min(8, ref.gaps.findIndex((g) => g < NEAR_TIE));

/** A DevTools protocol connection over Chromium's pipe. */
function devtools(child) {
  const pending = new Map();
  let next = 1;
  let buf = "";
  child.stdio[4].on("data", (chunk) => {
    buf += chunk.toString("utf8");
    let end;
    while ((end = buf.indexOf("\0")) >= 0) {
      const msg = JSON.parse(buf.slice(0, end));
      buf = buf.slice(end + 1);
      const p = pending.get(msg.id);
      if (!p) continue;
      pending.delete(msg.id);
      if (msg.error) p.reject(new Error(`${p.method}: ${msg.error.message}`));
      else p.resolve(msg.result);
    }
  });
  return (method, params = {}, sessionId) =>
    new Promise((resolve, reject) => {
      const id = next++;
      pending.set(id, { resolve, reject, method });
      child.stdio[3].write(JSON.stringify({ id, method, params, sessionId }) + "\0");
    });
}

const server = await serve(0);
const page = `http://127.0.0.1:${server.address().port}/examples/browser/?autorun=1&backend=${backend}`;
const url =
  `${page}&maxTokens=${n}&prompt=${encodeURIComponent(ref.text)}` +
  (mode === "gpu-lost" ? `&loseAfter=${LOSE_AFTER}` : "");
const profile = mkdtempSync(join(tmpdir(), "kiln-chromium-"));
const chromium = spawn(
  process.env.CHROMIUM ?? "/usr/lib/chromium/chromium",
  [
    "--headless", "--no-sandbox", "--remote-debugging-pipe", `--user-data-dir=${profile}`,
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--disable-quic", "--enable-unsafe-webgpu", "about:blank",
  ],
  // Its own process group, so that the renderer, GPU and crashpad processes go down with it.
  { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"], detached: true },
);
let stderr = "";
chromium.stdio[2].on("data", (d) => (stderr = (stderr + d).slice(-4000)));

const send = devtools(chromium);

/** Opens `url` in a new tab, waits for the page's `kilnDemo` to be done, closes the tab. */
async function run(url) {
  const { targetId } = await send("Target.createTarget", { url });
  const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
  const started = Date.now();
  let demo = null;
  while (!demo?.done) {
    assert.ok(Date.now() - started < TIMEOUT_MS, `no result within ${TIMEOUT_MS} ms: ${JSON.stringify(demo)}`);
    await new Promise((r) => setTimeout(r, 500));
    const expression = "JSON.stringify(window.kilnDemo ?? null)";
    const reply = await send("Runtime.evaluate", { expression, returnByValue: true }, sessionId)
      // Until the page has loaded there is no context to evaluate in.
      .catch((e) => (/execution context/.test(e.message) ? null : Promise.reject(e)));
    if (reply) demo = JSON.parse(reply.result.value ?? "null");
  }
  await send("Target.closeTarget", { targetId });
  assert.equal(demo.error, null, `the page reported an error: ${demo.error}`);
  return demo;
}

/** Checks the profile a tune returned; `{entries, winners, ms}` for the log. */
function checkTuned(demo, ms) {
  const profile = JSON.parse(demo.profile);
  assert.equal(profile.format, "kiln-profile");
  assert.equal(demo.profileUsed, "tuned in this page", "the tuned profile applies at once");
  const won = profile.entries.filter((e) => e.winner !== null);
  assert.ok(won.length > 0, `no entry has a winner: ${demo.profile}`);
  for (const e of won) {
    const winner = e.candidates.find((c) => c.name === e.winner);
    assert.equal(winner?.status, "ok", `${e.op} ${e.bucket}: the winner ${e.winner} did not pass`);
  }
  return { entries: profile.entries.length, winners: won.length, ms };
}

try {
  let tuned = null;
  if (mode === "gpu-tune") {
    const t0 = Date.now();
    tuned = checkTuned(await run(`${page}&tuneMs=${TUNE_MS}`), Date.now() - t0);
  }
  const demo = await run(url);
  if (tuned) assert.equal(demo.profileUsed, "profiles[0]", "the next load takes the profile from IndexedDB");
  else assert.equal(demo.profileUsed ?? null, null, "no tuned profile without a tune");
  assert.equal(demo.info.simd128, true, "Chromium runs SIMD128: the SIMD build should be picked");
  assert.equal(demo.info.backend, expected, `the backend for ${backend}: ${demo.info.backendReason}`);
  if (backend === "auto") assert.match(demo.info.backendReason, /software/);
  assert.deepEqual(demo.tokens, ref.greedy_ids.slice(0, n), "greedy tokens streamed to the page");
  assert.equal(demo.recovered.length, mode === "gpu-lost" ? 1 : 0, `recoveries: ${demo.recovered}`);
  const fileBytes = statSync(`${repo}models/${fixture.model}`).size;
  const mb = (x) => `${(x / 1e6).toFixed(1)} MB`;
  if (mode === "gpu-lost") {
    // The memory after the first load was measured; the reload is not.
  } else if (expected === "gpu") {
    assert.ok(
      demo.memory < fileBytes / 4,
      `wasm memory after a GPU load is ${mb(demo.memory)}, the file ${mb(fileBytes)}: ` +
        "the weights should stream to the GPU without a copy of the file in wasm memory",
    );
  } else {
    assert.ok(demo.memory >= fileBytes, "the CPU path keeps the file in wasm memory");
  }
  assert.deepEqual(demo.result.tokens, demo.tokens);
  assert.equal(demo.result.text, ref.greedy_text.slice(0, demo.result.text.length));
  const s = demo.result.stats;
  console.log(
    `browser demo (Chromium, ${mode} -> ${demo.info.backend}: ${demo.info.isa}): ${n} greedy ` +
      "tokens equal llama.cpp's; " +
      (mode === "gpu-lost" ? `device lost after token ${LOSE_AFTER} (${demo.recovered[0]}), reloaded; ` : "") +
      (tuned
        ? `tuned for ${TUNE_MS} ms (page ${(tuned.ms / 1000).toFixed(1)} s): ${tuned.entries} entries, ` +
          `${tuned.winners} with a winner, loaded again from IndexedDB; `
        : "") +
      `ttft ${s.ttftMs.toFixed(0)} ms, decode ${s.decodeTokS.toFixed(1)} tok/s; wasm memory after the load ` +
      `${mb(demo.memory)} (file ${mb(fileBytes)}): ${JSON.stringify(demo.result.text)}`,
  );
} catch (e) {
  console.error(`chromium stderr (tail):\n${stderr}`);
  throw e;
} finally {
  // Browser.close shuts Chromium down in order (its helpers stop writing to the profile); the
  // group kill is for a browser that does not answer.
  const gone = chromium.exitCode !== null || chromium.signalCode !== null;
  const exited = gone ? Promise.resolve() : new Promise((r) => chromium.once("exit", r));
  chromium.stdio[3].on("error", () => {}); // a browser that already exited closed the pipe
  const closed = send("Browser.close").catch(() => null);
  const grace = new Promise((r) => setTimeout(r, 5000));
  await Promise.race([Promise.all([closed, exited]), grace]);
  try {
    process.kill(-chromium.pid, "SIGKILL");
  } catch {
    // The group is already gone.
  }
  await exited;
  server.close();
  try {
    rmSync(profile, { recursive: true, force: true, maxRetries: 20, retryDelay: 250 });
  } catch (e) {
    // A left-over temporary profile is not a test failure; say where it is.
    console.warn(`could not remove the Chromium profile ${profile}: ${e.message}`);
  }
}
