//! kiln for browsers and Node: wasm-bindgen bindings over kiln's generation API on the CPU path
//! (one thread; SIMD128 kernels when built with `+simd128`, scalar ones otherwise) or, where the
//! browser has WebGPU, on the GPU.
//!
//! From JavaScript (see `web/js/kiln.js`, which picks the SIMD128 or the scalar build):
//! - [`ModelLoader`] takes a GGUF file as a sequence of chunks (a `fetch()` body, a Node file
//!   stream) and builds a [`Model`] from them: `ModelLoader.open({backend})` picks the backend
//!   first (the GPU when asked for or available), so the GPU path streams the weights into GPU
//!   buffers as they arrive (wasm memory never holds the file) and the CPU path copies them
//!   once into the buffer its model keeps (`new ModelLoader()` is the CPU path);
//! - [`Model`] tokenizes, applies the chat template and generates with a callback per token;
//!   `logits` gives the logits at chosen positions of a token sequence (CPU path); `tune`
//!   measures the GPU path's variants on this device within a time budget and runs with the
//!   fastest (its profile, as JSON, goes back into `ModelLoader.open({profiles})` later).
//!
//! CPU generation (`generate`) runs synchronously on the calling thread: in a browser, run it in
//! a Worker. GPU generation (`generateAsync`, which also runs the CPU path) returns a Promise:
//! each step awaits its readback.

mod loader;
mod options;

use std::cell::{Ref, RefCell, RefMut};
use std::ops::ControlFlow;
use std::rc::Rc;

use js_sys::{Array, Float32Array, Function, Object, Promise, Reflect, Uint32Array};
use kiln::generate::{Generation, StopReason, TokenStream};
use kiln::tokenizer::Message;
use kiln::tokenizer::Tokenizer;
use wasm_bindgen::prelude::*;

use kiln_autotune::{Budget, GemvCase, Settings, new_profile, tune_gemv};
pub use loader::ModelLoader;
use options::{LogitsOptions, Options, TuneOptions, set, uints};

/// Turns any error into a JS `Error` with its message.
pub(crate) fn js_err(e: impl std::fmt::Display) -> JsValue {
    JsError::new(&e.to_string()).into()
}

/// Sends Rust panics to `console.error` (instead of a bare "unreachable executed").
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| console_error(&info.to_string())));
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(s: &str);
}

/// The size of this module's linear memory in bytes (it only grows: after a load, the most the
/// load needed). wasm32 only.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen(js_name = wasmMemoryBytes)]
pub fn wasm_memory_bytes() -> f64 {
    (core::arch::wasm32::memory_size::<0>() * 65536) as f64
}

/// Whether this build's CPU kernels use WebAssembly SIMD128.
#[wasm_bindgen(js_name = simd128)]
pub fn simd128() -> bool {
    cfg!(target_feature = "simd128")
}

/// A loaded model (CPU or GPU) with its tokenizer and KV cache.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Model {
    /// Shared with a running `generateAsync`, which holds it across awaits.
    inner: Rc<RefCell<kiln::generate::Model>>,
    /// Its GPU, reachable while it generates (for `deviceLost` and `destroyDevice`).
    gpu: Option<kiln::Gpu>,
}

#[wasm_bindgen]
impl Model {
    /// `{arch, backend, isa, simd128, vocab, layers, context}`: `backend` is `"cpu"` or `"gpu"`,
    /// `isa` the CPU's instruction set or the GPU adapter's name.
    pub fn info(&self) -> Result<Object, JsValue> {
        let m = self.model()?;
        let cfg = m.config();
        let o = Object::new();
        set(&o, "arch", &format!("{:?}", cfg.arch).to_lowercase().into())?;
        set(&o, "backend", &m.backend_name().into())?;
        set(&o, "backendReason", &m.backend_reason().into())?;
        // wgpu's WebGPU backend leaves the adapter's name empty.
        let isa = match m.adapter() {
            name if name.is_empty() => "WebGPU".to_string(),
            name => name,
        };
        set(&o, "isa", &isa.into())?;
        set(&o, "simd128", &simd128().into())?;
        set(&o, "vocab", &cfg.vocab.into())?;
        set(&o, "layers", &cfg.n_layer.into())?;
        set(&o, "context", &m.capacity().into())?;
        Ok(o)
    }

    /// Why the GPU device was lost (undefined while it works, and on the CPU path). After a
    /// generation fails on the GPU, kiln.js asks this to tell a lost device (which it recovers
    /// from by loading the model again) from other errors.
    #[wasm_bindgen(js_name = deviceLost)]
    pub fn device_lost(&self) -> Option<String> {
        self.gpu.as_ref().and_then(kiln::Gpu::lost_reason)
    }

    /// Destroys the model's GPU device (`GPUDevice.destroy()`), as a driver reset or the
    /// browser would: for testing recovery. No-op on the CPU path.
    #[wasm_bindgen(js_name = destroyDevice)]
    pub fn destroy_device(&self) {
        if let Some(gpu) = &self.gpu {
            gpu.device().destroy();
        }
    }

    /// Token ids of a plain prompt: BOS where the model asks for it, special tokens such as
    /// `<|im_start|>` parsed.
    pub fn tokenize(&self, text: &str) -> Result<Uint32Array, JsValue> {
        Ok(Uint32Array::from(&self.model()?.encode_prompt(text)[..]))
    }

    /// The text of token ids (special tokens included).
    pub fn detokenize(&self, ids: &[u32]) -> Result<String, JsValue> {
        Ok(self.model()?.tokenizer().decode(ids))
    }

    /// Token ids of chat messages (`[{role, content}, ...]`) through the model's chat template,
    /// ready for the assistant's reply.
    #[wasm_bindgen(js_name = encodeChat)]
    pub fn encode_chat(&self, messages: &Array) -> Result<Uint32Array, JsValue> {
        let mut list = Vec::with_capacity(messages.length() as usize);
        for m in messages.iter() {
            let field = |name: &str| -> Result<String, JsValue> {
                Reflect::get(&m, &name.into())?
                    .as_string()
                    .ok_or_else(|| js_err(format!("a chat message needs a string `{name}`")))
            };
            list.push(Message::new(&field("role")?, &field("content")?));
        }
        let ids = self.model()?.encode_chat(&list).map_err(js_err)?;
        Ok(Uint32Array::from(&ids[..]))
    }

    /// The logits after the prefixes `ids[..=p]` for each `p` in `options.positions`, from a
    /// fresh context, for comparing with other runtimes. `ids`: a string (tokenized as a plain
    /// prompt), a `Uint32Array` or an array of token ids. `options`: `{positions, steps}`;
    /// `positions` (strictly increasing, each below the id count; default: the last id's) and
    /// `steps` (default false: each prefix runs as one prompt, through the prefill kernels; true:
    /// the ids are fed one decode step at a time, through generation's decode kernels, in one
    /// pass). Unknown keys are an error.
    ///
    /// Returns a `Float32Array` of `positions.length × vocab` floats, row-major: the logits at
    /// `positions[i]` are `[i * vocab, (i + 1) * vocab)` (`vocab` as in `info()`). Synchronous,
    /// so the CPU path only: a GPU model gives an error.
    pub fn logits(&self, ids: &JsValue, options: &JsValue) -> Result<Float32Array, JsValue> {
        let ids = self.prompt_ids(ids)?;
        let opts = LogitsOptions::parse(options)?;
        let positions = opts
            .positions
            .unwrap_or_else(|| vec![ids.len().saturating_sub(1)]);
        let rows = self
            .model_mut()?
            .logits_at(&ids, &positions, opts.steps)
            .map_err(js_err)?;
        Ok(Float32Array::from(&rows.concat()[..]))
    }

    /// Generates from `prompt` (a string, or token ids as a `Uint32Array` or an array) in a fresh
    /// context. `options`: `{maxTokens, temperature, topK, topP, repetitionPenalty, repeatLastN,
    /// seed, stop, ignoreEog, continueFrom}`; `stop` lists extra stop token ids (numbers) and stop
    /// strings (the returned text ends before the first one); `continueFrom` lists the token ids
    /// this generation already produced (before its GPU device was lost, say: kiln.js resumes
    /// that way), which are run again as they first ran and count against `maxTokens`.
    /// `onToken(piece, id)` is called for each new token; returning `false` from it cancels.
    ///
    /// Returns `{text, tokens, stop, stats: {promptTokens, generatedTokens, ttftMs,
    /// prefillTokS, decodeTokS}}`; `stop` is `eog`, `max_tokens`, `stop_string`, `cancelled` or
    /// `context_full`. Synchronous, so the CPU path only (a GPU model generates with
    /// `generateAsync`).
    pub fn generate(
        &mut self,
        prompt: &JsValue,
        options: &JsValue,
        on_token: Option<Function>,
    ) -> Result<Object, JsValue> {
        let ids = self.prompt_ids(prompt)?;
        let opts = Options::parse(options)?;
        let mut model = self.model_mut()?;
        let mut watch = Watch::new(&opts, on_token, model.tokenizer());
        let mut stream = model
            .stream_continuing(&ids, &opts.continue_from, &opts.generate)
            .map_err(js_err)?;
        let mut cancelled = false;
        for token in stream.by_ref() {
            let token = token.map_err(js_err)?;
            if watch.token(token.id, &token.text).is_break() {
                cancelled = true;
                break;
            }
        }
        watch.finish(&mut stream, cancelled)
    }

    /// [`Model::generate`] as a Promise of its result, on either backend: a GPU step awaits its
    /// readback (the browser's event loop runs meanwhile). The model is busy until it settles.
    #[wasm_bindgen(js_name = generateAsync)]
    #[allow(
        clippy::await_holding_refcell_ref,
        reason = "the model stays borrowed while it generates; other calls get a `busy` error"
    )]
    pub fn generate_async(
        &self,
        prompt: &JsValue,
        options: &JsValue,
        on_token: Option<Function>,
    ) -> Result<Promise, JsValue> {
        let ids = self.prompt_ids(prompt)?;
        let opts = Options::parse(options)?;
        let inner = self.inner.clone();
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let mut model = inner
                .try_borrow_mut()
                .map_err(|_| js_err("the model is busy generating"))?;
            let mut watch = Watch::new(&opts, on_token, model.tokenizer());
            let mut stream = model
                .stream_continuing(&ids, &opts.continue_from, &opts.generate)
                .map_err(js_err)?;
            let mut cancelled = false;
            while let Some(token) = stream.next_async().await {
                let token = token.map_err(js_err)?;
                if watch.token(token.id, &token.text).is_break() {
                    cancelled = true;
                    break;
                }
            }
            watch.finish(&mut stream, cancelled).map(JsValue::from)
        }))
    }

    /// Tunes the GPU path for this device and model within `options.budgetMs` (default 30000):
    /// each of the model's decode products (fused and unfused) runs with every variant the
    /// device has, checked against the CPU path and timed on the host clock, and the fastest
    /// that passes becomes the product's choice. The model runs with the result at once
    /// (`profileUsed()` is then `"tuned in this page"`). Starts from the profile in use, so a
    /// tune cut short by its budget continues where it stopped. Unknown option keys are an
    /// error. `onProgress(done, total, label)` is called before each product.
    ///
    /// Returns a Promise of the profile as JSON text, for `ModelLoader.open({profiles})` to
    /// load on this adapter later (kiln.js keeps it in IndexedDB). Rejects on the CPU path. The
    /// model is busy until it settles.
    #[allow(
        clippy::await_holding_refcell_ref,
        reason = "the model stays borrowed while it is tuned; other calls get a `busy` error"
    )]
    pub fn tune(
        &self,
        options: &JsValue,
        on_progress: Option<Function>,
    ) -> Result<Promise, JsValue> {
        let opts = TuneOptions::parse(options)?;
        let inner = self.inner.clone();
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let mut model = inner
                .try_borrow_mut()
                .map_err(|_| js_err("the model is busy generating"))?;
            let gpu_model = model.gpu_model_mut().ok_or_else(|| {
                js_err(
                    "tune is for the GPU path, and this model runs on the CPU path \
                     (load it with backend \"gpu\" or \"auto\" where WebGPU is available)",
                )
            })?;
            let gpu = gpu_model.gpu().clone();
            let cases = GemvCase::of_model(gpu_model);
            let mut profile = gpu_model
                .tuning()
                .profile()
                .cloned()
                .unwrap_or_else(|| new_profile(&gpu));
            let budget = Budget::new(opts.budget);
            let mut thrown = None;
            let mut progress = |done: usize, total: usize, label: &str| {
                if let Some(f) = &on_progress
                    && let Err(e) =
                        f.call3(&JsValue::NULL, &done.into(), &total.into(), &label.into())
                {
                    thrown.get_or_insert(e);
                }
            };
            tune_gemv(
                &gpu,
                &cases,
                &mut profile,
                &Settings::default(),
                &budget,
                &mut progress,
            )
            .await
            .map_err(js_err)?;
            if let Some(e) = thrown {
                return Err(e);
            }
            profile.seconds += budget.elapsed().as_secs_f64();
            let json = profile.to_json();
            gpu_model
                .set_tuning(gpu.tuning().with_profile(TUNED_HERE, profile))
                .map_err(js_err)?;
            Ok(json.into())
        }))
    }

    /// Where the tuned profile this model runs with came from: `"profiles[i]"` for the i-th of
    /// `ModelLoader.open`'s `profiles`, `"tuned in this page"` after `tune`; null when it runs
    /// on the built-in choices (and on the CPU path).
    #[wasm_bindgen(js_name = profileUsed)]
    pub fn profile_used(&self) -> Result<Option<String>, JsValue> {
        let report = self.model()?.tuning_report();
        Ok(report["profile"].as_str().map(str::to_string))
    }
}

/// The origin [`Model::tune`] gives the profile it applies.
const TUNED_HERE: &str = "tuned in this page";

/// The per-token side of a generation: the JS callback, cancellation and stop strings.
struct Watch<'o> {
    opts: &'o Options,
    on_token: Option<Function>,
    /// The generation's tokens and text so far (from `continueFrom` on).
    tokens: Vec<u32>,
    text: String,
    stopped_at: Option<usize>,
    cancelled: bool,
    thrown: Option<JsValue>,
}

impl<'o> Watch<'o> {
    fn new(opts: &'o Options, on_token: Option<Function>, tokenizer: &Tokenizer) -> Self {
        Watch {
            opts,
            on_token,
            tokens: opts.continue_from.clone(),
            text: tokenizer.decode(&opts.continue_from),
            stopped_at: None,
            cancelled: false,
            thrown: None,
        }
    }

    /// Calls back with a token; `Break` when the caller cancelled or threw, or a stop string
    /// appeared.
    fn token(&mut self, id: u32, piece: &str) -> ControlFlow<()> {
        self.tokens.push(id);
        self.text.push_str(piece);
        if let Some(f) = &self.on_token {
            match f.call2(&JsValue::NULL, &piece.into(), &id.into()) {
                Ok(v) if v == JsValue::FALSE => self.cancelled = true,
                Ok(_) => {}
                Err(e) => self.thrown = Some(e),
            }
        }
        // A stop string may end in this piece: look from where it could have started.
        let from = self
            .text
            .len()
            .saturating_sub(piece.len() + self.opts.longest_stop);
        self.stopped_at = self.opts.find_stop(&self.text, from);
        if self.cancelled || self.thrown.is_some() || self.stopped_at.is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    /// The result of the generation `stream` ran (`cancelled`: it was broken off).
    fn finish(mut self, stream: &mut TokenStream<'_>, cancelled: bool) -> Result<Object, JsValue> {
        if let Some(e) = self.thrown {
            return Err(e);
        }
        self.text.push_str(&stream.remainder());
        let stop = if cancelled {
            StopReason::Cancelled
        } else {
            stream.stop_reason().unwrap_or(StopReason::MaxTokens)
        };
        let generation = Generation {
            tokens: self.tokens,
            text: self.text,
            stop,
            stats: stream.stats(),
        };
        result(generation, self.stopped_at, self.cancelled)
    }
}

impl Model {
    pub(crate) fn new(inner: kiln::generate::Model) -> Model {
        Model {
            gpu: inner.gpu().cloned(),
            inner: Rc::new(RefCell::new(inner)),
        }
    }

    fn model(&self) -> Result<Ref<'_, kiln::generate::Model>, JsValue> {
        self.inner
            .try_borrow()
            .map_err(|_| js_err("the model is busy generating"))
    }

    fn model_mut(&self) -> Result<RefMut<'_, kiln::generate::Model>, JsValue> {
        self.inner
            .try_borrow_mut()
            .map_err(|_| js_err("the model is busy generating"))
    }

    fn prompt_ids(&self, prompt: &JsValue) -> Result<Vec<u32>, JsValue> {
        if let Some(text) = prompt.as_string() {
            return Ok(self.model()?.encode_prompt(&text));
        }
        uints("the prompt (when not a string)", prompt)
    }
}

/// The JS object of a finished generation.
fn result(g: Generation, stopped_at: Option<usize>, cancelled: bool) -> Result<Object, JsValue> {
    let (text, stop) = match stopped_at {
        Some(at) => (&g.text[..at], "stop_string"),
        None if cancelled => (&g.text[..], "cancelled"),
        None => (
            &g.text[..],
            match g.stop {
                StopReason::EndOfGeneration => "eog",
                StopReason::MaxTokens => "max_tokens",
                StopReason::Cancelled => "cancelled",
                StopReason::ContextFull => "context_full",
            },
        ),
    };
    let o = Object::new();
    set(&o, "text", &text.into())?;
    set(&o, "tokens", &Uint32Array::from(&g.tokens[..]).into())?;
    set(&o, "stop", &stop.into())?;
    let s = Object::new();
    set(&s, "promptTokens", &(g.stats.prompt_tokens as f64).into())?;
    set(
        &s,
        "generatedTokens",
        &(g.stats.generated_tokens as f64).into(),
    )?;
    set(&s, "ttftMs", &(g.stats.ttft.as_secs_f64() * 1000.0).into())?;
    set(&s, "prefillTokS", &g.stats.prefill_tok_s.into())?;
    set(&s, "decodeTokS", &g.stats.decode_tok_s.into())?;
    set(&o, "stats", &s.into())?;
    Ok(o)
}
