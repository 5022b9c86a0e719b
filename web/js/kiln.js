// kiln in browsers and Node: loads the SIMD128 build of kiln-web where the engine validates
// SIMD128 code, the scalar build elsewhere, and streams GGUF files into it chunk by chunk.
//
//   import { loadModel } from "./kiln.js";
//   const model = await loadModel("SmolLM2-135M-Instruct.Q4_1.gguf");
//   model.generate("The capital of France is", { maxTokens: 16 }, (piece) => show(piece));
//
// On the GPU (WebGPU), generation returns a Promise:
//   const model = await loadModel(url, { backend: "auto" }); // or "gpu"
//   await model.generateAsync("The capital of France is", { maxTokens: 16 }, show);
//
// The packages come from scripts/build-web.sh (web/pkg/simd, web/pkg/scalar).

// The smallest module that uses SIMD128: one function `() -> v128` doing `i8x16.splat(0)`.
// Engines without SIMD128 fail to validate it.
const SIMD128_PROBE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
  0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b, // type section: (func (result v128))
  0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
  0x0a, 0x08, 0x01, 0x06, 0x00, 0x41, 0x00, 0xfd, 0x0f, 0x0b, // code: i32.const 0, i8x16.splat, end
]);

/** Whether this engine runs WebAssembly SIMD128. */
export function simd128Supported() {
  return WebAssembly.validate(SIMD128_PROBE);
}

const isNode = typeof process !== "undefined" && process.versions?.node !== undefined;
const loaded = new Map();

/**
 * Initialises kiln-web once per flavour and returns its module (`ModelLoader`, `Model`,
 * `simd128()`). `simd`: true or false forces a build; the default detects.
 */
export async function initKiln({ simd } = {}) {
  const flavor = (simd ?? simd128Supported()) ? "simd" : "scalar";
  if (!loaded.has(flavor)) {
    loaded.set(flavor, (async () => {
      const url = new URL(`../pkg/${flavor}/kiln_web.js`, import.meta.url);
      const mod = await import(url.href);
      const wasm = new URL(`../pkg/${flavor}/kiln_web_bg.wasm`, import.meta.url);
      if (isNode) {
        // Node's fetch does not read file: URLs; hand the bytes over instead.
        const { readFile } = await import("node:fs/promises");
        await mod.default({ module_or_path: await readFile(wasm) });
      } else {
        await mod.default({ module_or_path: wasm });
      }
      return mod;
    })());
  }
  return loaded.get(flavor);
}

/** The chunks of `source` with, where known, its length. */
async function open(source) {
  if (typeof source === "string" || source instanceof URL) {
    const href = source instanceof URL ? source.href : source;
    if (isNode && !/^https?:/.test(href)) {
      const fs = await import("node:fs");
      const path = href.startsWith("file:") ? new URL(href) : href;
      return { size: fs.statSync(path).size, chunks: fs.createReadStream(path) };
    }
    source = await fetch(href);
  }
  if (typeof Response !== "undefined" && source instanceof Response) {
    if (!source.ok) throw new Error(`fetching the model failed: HTTP ${source.status}`);
    const length = Number(source.headers.get("content-length"));
    // A compressed body's length is not the file's.
    const encoded = source.headers.get("content-encoding");
    return { size: length > 0 && !encoded ? length : undefined, chunks: source.body };
  }
  if (source instanceof ArrayBuffer) source = new Uint8Array(source);
  if (source instanceof Uint8Array) return { size: source.length, chunks: [source] };
  return { size: undefined, chunks: source }; // a ReadableStream or any (async) iterable
}

async function* iterate(chunks) {
  if (chunks[Symbol.asyncIterator] || chunks[Symbol.iterator]) {
    yield* chunks;
    return;
  }
  const reader = chunks.getReader(); // ReadableStream without async iteration (Safari)
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    yield value;
  }
}

/**
 * Loads a GGUF model from a URL or path, a `Response`, a `ReadableStream`, an (async) iterable of
 * `Uint8Array` chunks, or the whole file as an `ArrayBuffer`/`Uint8Array`.
 * Options: `context` (KV positions), `simd` (force a build), `onProgress(received, total?)`,
 * `gpuMemory` (the most GPU memory the model may take: bytes or `"1GiB"`), `maxBuffer` (ask the
 * GPU for buffers of at most this size), `onDeviceLost(reason, info)` (called after a recovery),
 * `backend`: `"cpu"` (default; `model.generate` runs synchronously), `"gpu"` (WebGPU) or
 * `"auto"` (WebGPU where `navigator.gpu` gives an adapter and the model fits it, else the CPU
 * path). A GPU model generates with `model.generateAsync` (a Promise); `model.info().backend`
 * says which it got. `profiles`: tuned profiles as JSON text, tried before those `model.tune`
 * kept in IndexedDB; the GPU path takes the first made for its adapter.
 * The backend is chosen before the first chunk arrives: on the GPU each chunk is written into
 * the GPU's weight buffers as it arrives (wasm memory never holds the file); on the CPU path it
 * is copied once into the buffer the model keeps (the file is never held twice).
 *
 * A lost GPU device (a driver reset, the browser reclaiming the GPU, `device.destroy()`) during
 * `generateAsync` is recovered from when the source can be read again (a URL, a path or the
 * file's bytes): the model is loaded again, on a new device or on the CPU path when none comes
 * back, and the generation goes on with the tokens it would have produced; `onDeviceLost` says
 * so. A stream or a `Response` cannot be read twice: the error is then thrown.
 */
export async function loadModel(source, options = {}) {
  const { onDeviceLost, ...rest } = options;
  const again = typeof source === "string" || source instanceof URL ||
    source instanceof ArrayBuffer || source instanceof Uint8Array;
  const inner = await load(source, rest);
  return new Model(inner, again ? (backend) => load(source, { ...rest, backend }) : null, onDeviceLost);
}

async function load(source, { context, simd, onProgress, gpuMemory, maxBuffer, profiles = [], backend = "cpu" } = {}) {
  const kiln = await initKiln({ simd });
  const { size, chunks } = await open(source);
  // The GPU path takes the first profile made for its adapter: the caller's, then this origin's.
  if (backend !== "cpu") profiles = [...profiles, ...await storedProfiles()];
  const loader = await kiln.ModelLoader.open({ backend, context, gpuMemory, maxBuffer, profiles, sizeHint: size });
  try {
    for await (const chunk of iterate(chunks)) {
      loader.push(chunk instanceof Uint8Array ? chunk : new Uint8Array(chunk));
      onProgress?.(loader.received(), loader.expected() ?? size);
    }
  } catch (e) {
    loader.free();
    throw e;
  }
  return loader.finish(); // consumes the loader
}

// Tuned profiles (from `model.tune`) are kept in IndexedDB, database "kiln", store "profiles",
// one per adapter: the key is the profile's `adapter` object as JSON. Where there is no
// IndexedDB (Node) or it refuses (a private window), nothing is kept and none is read.
const DB_NAME = "kiln";
const PROFILES = "profiles";

/** The profiles database, or null where there is none. */
function profilesDb() {
  if (typeof indexedDB === "undefined") return Promise.resolve(null);
  return new Promise((resolve) => {
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(PROFILES);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => resolve(null);
    req.onblocked = () => resolve(null);
  });
}

/**
 * Runs `f(store)` in a transaction on the profiles store; resolves with its request's result once
 * the transaction has committed.
 */
async function withProfiles(mode, f) {
  const db = await profilesDb();
  if (!db) return undefined;
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(PROFILES, mode);
      const req = f(tx.objectStore(PROFILES));
      tx.oncomplete = () => resolve(req.result);
      tx.onerror = tx.onabort = () => reject(tx.error ?? req.error);
    });
  } finally {
    db.close();
  }
}

/** The profiles kept in this origin's IndexedDB, as JSON text (none where it is missing). */
async function storedProfiles() {
  return (await withProfiles("readonly", (store) => store.getAll()).catch(() => [])) ?? [];
}

/** Keeps `json` (a profile) as its adapter's profile, replacing the one before. */
function storeProfile(json) {
  const key = JSON.stringify(JSON.parse(json).adapter);
  return withProfiles("readwrite", (store) => store.put(json, key));
}

/** How many times one generation recovers from a lost device before it gives up. */
const MAX_RECOVERIES = 3;

/**
 * A loaded model: kiln-web's `Model` (info, tokenize, detokenize, encodeChat, generate,
 * generateAsync, logits, tune, profileUsed, free), loaded again when its GPU device is lost.
 */
export class Model {
  #inner;
  #reload;
  #onDeviceLost;

  constructor(inner, reload, onDeviceLost) {
    this.#inner = inner;
    this.#reload = reload;
    this.#onDeviceLost = onDeviceLost;
  }

  info() { return this.#inner.info(); }
  tokenize(text) { return this.#inner.tokenize(text); }
  detokenize(ids) { return this.#inner.detokenize(ids); }
  encodeChat(messages) { return this.#inner.encodeChat(messages); }
  generate(prompt, options, onToken) { return this.#inner.generate(prompt, options, onToken); }
  /**
   * The logits at `options.positions` (default: the last) of `ids`, `{positions, steps}`: a
   * Float32Array of positions × vocab, row i holding position i's (CPU path; synchronous).
   */
  logits(ids, options) { return this.#inner.logits(ids, options); }
  /**
   * Tunes the GPU path for this device within `options.budgetMs` (default 30000) and runs with the
   * result at once; the profile (JSON text, which it resolves to) is kept in IndexedDB, and
   * later GPU loads on this adapter in this origin use it. `onProgress(done, total, label)` is
   * called before each measured product. Rejects on the CPU path.
   */
  async tune(options, onProgress) {
    const json = await this.#inner.tune(options, onProgress);
    // The model runs with it either way; only later loads miss it.
    await storeProfile(json).catch((e) => console.warn(`kiln: the tuned profile was not kept: ${e}`));
    return json;
  }
  /** Where the tuned profile in use came from (`"profiles[i]"`, `"tuned in this page"`), or null. */
  profileUsed() { return this.#inner.profileUsed() ?? null; }
  /** Destroys the GPU device, as a driver reset would (for testing recovery). */
  destroyDevice() { this.#inner.destroyDevice(); }
  free() { this.#inner.free(); }

  /** `generate` as a Promise, on either backend; goes on after a lost GPU device (see loadModel). */
  async generateAsync(prompt, options = {}, onToken) {
    const ids = typeof prompt === "string" ? this.#inner.tokenize(prompt) : prompt;
    const produced = [...(options?.continueFrom ?? [])];
    for (let recoveries = 0; ; recoveries++) {
      try {
        return await this.#inner.generateAsync(ids, { ...options, continueFrom: produced }, (piece, id) => {
          produced.push(id);
          return onToken?.(piece, id);
        });
      } catch (e) {
        const lost = this.#reload && recoveries < MAX_RECOVERIES ? await lostReason(this.#inner) : null;
        if (!lost) throw e;
        const backend = this.#inner.info().backend;
        this.#inner.free();
        // The same backend on a new device; the CPU path when no GPU comes back.
        this.#inner = await this.#reload(backend).catch((err) =>
          backend === "cpu" ? Promise.reject(err) : this.#reload("cpu"));
        this.#onDeviceLost?.(lost, this.#inner.info());
      }
    }
  }
}

/** Why `model`'s GPU device was lost, waiting a little for the browser to say (null if not). */
async function lostReason(model) {
  for (let i = 0; i < 20; i++) {
    const reason = model.deviceLost();
    if (reason !== undefined) return reason || "lost";
    await new Promise((r) => setTimeout(r, 50));
  }
  return null;
}
