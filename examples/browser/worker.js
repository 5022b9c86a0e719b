// kiln in a Web Worker: loads the model (streamed from its URL) on the backend the page asks for
// and generates, posting each token's text back to the page as it arrives (and a note when a
// lost GPU device was recovered from). After a load it also
// reports the size of kiln's wasm memory (on the GPU the weights never pass through it whole)
// and the tuned profile in use; on the GPU it tunes on request.

import { initKiln, loadModel } from "../../web/js/kiln.js";

let model = null;
let cancel = null;

self.onmessage = async ({ data: m }) => {
  try {
    if (m.type === "load") {
      cancel = m.cancel;
      model?.free();
      model = null;
      const t0 = performance.now();
      model = await loadModel(m.url, {
        backend: m.backend,
        onProgress: (received, total) => self.postMessage({ type: "progress", received, total }),
        // kiln.js loads the model again after a lost GPU device and goes on generating.
        onDeviceLost: (reason, info) => self.postMessage({ type: "recovered", reason, info }),
      });
      const ms = performance.now() - t0;
      const memory = (await initKiln()).wasmMemoryBytes();
      self.postMessage({ type: "loaded", info: model.info(), ms, memory, profileUsed: model.profileUsed() });
    } else if (m.type === "tune") {
      // A bounded tune of the GPU path; kiln.js keeps the profile in IndexedDB for later loads.
      const profile = await model.tune({ budgetMs: m.budgetMs }, (done, total, label) =>
        self.postMessage({ type: "tuneProgress", done, total, label }));
      self.postMessage({ type: "tuned", profile, profileUsed: model.profileUsed() });
    } else if (m.type === "generate") {
      const prompt = m.chat ? model.encodeChat([{ role: "user", content: m.prompt }]) : m.prompt;
      // generateAsync runs both backends (the GPU awaits each step's readback).
      let n = 0;
      const result = await model.generateAsync(prompt, m.options, (piece, id) => {
        self.postMessage({ type: "token", piece, id });
        // `loseAfter` (tests): destroy the GPU device after that many tokens.
        if (++n === m.loseAfter) model.destroyDevice();
        return !(cancel && Atomics.load(cancel, 0));
      });
      result.tokens = [...result.tokens];
      self.postMessage({ type: "done", result });
    }
  } catch (e) {
    self.postMessage({ type: "error", message: String(e?.message ?? e) });
  }
};
