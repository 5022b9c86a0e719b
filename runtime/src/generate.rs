//! The generation API: a model on a backend (GPU, or the CPU path where there is no adapter),
//! prompts or chat messages in, tokens streamed out (an iterator, or a callback), with stop
//! tokens, a token budget, cancellation, sampling settings and timing statistics.
//!
//! On wasm32 the CPU path's models come from bytes ([`GgufFile::from_bytes`]) through the
//! synchronous [`Model::from_gguf`]; the GPU model is opened asynchronously ([`open_gpu`]), its
//! file streamed into GPU buffers chunk by chunk ([`Model::gpu_stream`]), and it generates
//! through [`TokenStream::next_async`], which awaits each step's readback.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::time::Duration;

use kiln_cpu::sample::Sampler;

use crate::clock::Instant;
use crate::error::{Error, Result, mib};
use crate::gguf::{GgufFile, GgufHeader};
use crate::gpu::context::{GPU_ENV, bad_env, env, parse_bytes};
use crate::gpu::{Gpu, GpuOptions, Readback};
use crate::model::config::{Config, check_weights};
use crate::model::cpu::CpuModel;
use crate::model::gpu::{AttnOptions, Choice, GpuLoader, GpuModel, check_decode_batch};
use crate::model::{MemoryNeeds, Traced};
use crate::ops::attention::KvType;
use crate::ops::sample::{NON_FINITE_ID, SampleParams};
use crate::tokenizer::{Message, StreamDecoder, Tokenizer};

/// Why `prompt_logits`, `logits_at` and `prompt_trace` refuse a GPU model in a browser.
#[cfg(target_arch = "wasm32")]
const GPU_LOGITS_IN_BROWSER: &str =
    "logits from the GPU in a browser (its readbacks are asynchronous; use the CPU backend)";

/// Where the model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// The GPU when a hardware adapter exists, else the CPU path: a software adapter (wgpu's
    /// `DeviceType::Cpu`: lavapipe, SwiftShader, WARP) is slower than kiln's SIMD CPU path, so
    /// `Auto` takes it only when asked for by name (`Gpu`).
    #[default]
    Auto,
    Gpu,
    Cpu,
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Backend> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Backend::Auto),
            "gpu" => Ok(Backend::Gpu),
            "cpu" => Ok(Backend::Cpu),
            other => Err(Error::Unsupported(format!(
                "backend `{other}`: use gpu, cpu or auto"
            ))),
        }
    }
}

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Where the model runs (`KILN_DEVICE=gpu|cpu|auto`); auto by default.
    pub backend: Backend,
    /// KV cache positions (prompt + generated); capped at the model's training context.
    pub context: u32,
    /// CPU threads (0 = all cores).
    pub threads: usize,
    pub gpu: GpuOptions,
    /// How the GPU path's KV cache stores values (`KILN_KV_CACHE=f16|f32`; f16 by default).
    /// The CPU path's cache is always f16.
    pub kv_cache: KvType,
    /// GPU decode steps per submit (1 to 16; `KILN_DECODE_BATCH`); None: the tuned profile's
    /// winner, else 4. Tokens still stream one by one; a batch's ids are read back together.
    pub decode_batch: Option<u32>,
    /// The most bytes the model may take on the GPU (`KILN_GPU_MEMORY`, e.g. `1GiB`): weights,
    /// KV cache and scratch, computed before anything is created. Over it, `Backend::Gpu`
    /// refuses to load and `Backend::Auto` takes the CPU path. None: as much as the device
    /// gives.
    pub gpu_memory: Option<u64>,
    /// What to do when the GPU device is lost (`KILN_ON_DEVICE_LOST=reload|cpu|fail`; reload
    /// by default).
    pub on_device_lost: OnDeviceLost,
    /// Scan every weight for NaN and infinities while loading (one pass over the tensors; a
    /// bad one fails the load with [`Error::NonFiniteWeight`]). On by default;
    /// `KILN_CHECK_WEIGHTS=0` turns it off for files you trust.
    pub check_weights: bool,
}

impl Default for LoadOptions {
    /// The library's defaults: auto backend, 2048 positions, all cores, an f16 KV cache, the
    /// device's tuned or heuristic choices, reload on a lost device, weights scanned. Reads no
    /// environment variable (see [`LoadOptions::from_env`]).
    fn default() -> Self {
        LoadOptions {
            backend: Backend::Auto,
            context: 2048,
            threads: 0,
            gpu: GpuOptions::default(),
            kv_cache: KvType::default(),
            decode_batch: None,
            gpu_memory: None,
            on_device_lost: OnDeviceLost::Reload,
            check_weights: true,
        }
    }
}

/// The environment variables [`LoadOptions::from_env`] reads besides [`GPU_ENV`].
pub const LOAD_ENV: [&str; 6] = [
    "KILN_DEVICE",
    "KILN_KV_CACHE",
    "KILN_DECODE_BATCH",
    "KILN_GPU_MEMORY",
    "KILN_ON_DEVICE_LOST",
    "KILN_CHECK_WEIGHTS",
];

/// Every `KILN_*` variable [`LoadOptions::from_env`] reads that is set, with its value: what a
/// report lists as overrides of the defaults.
pub fn env_overrides() -> Vec<(String, String)> {
    let names: Vec<&str> = LOAD_ENV.iter().chain(GPU_ENV.iter()).copied().collect();
    crate::gpu::context::env_overrides(&names)
}

impl LoadOptions {
    /// The defaults, overridden by the variables in [`LOAD_ENV`] and [`GPU_ENV`]: the one
    /// place loading reads the environment (the CLI calls it; a library user may). A value a
    /// variable does not take is an [`Error::InvalidOption`] naming it.
    pub fn from_env() -> Result<Self> {
        let mut opts = LoadOptions {
            gpu: GpuOptions::from_env()?,
            ..LoadOptions::default()
        };
        if let Some(v) = env("KILN_DEVICE") {
            opts.backend = v
                .parse()
                .map_err(|_| bad_env("KILN_DEVICE", v, "gpu, cpu or auto"))?;
        }
        if let Some(v) = env("KILN_KV_CACHE") {
            opts.kv_cache = v
                .parse()
                .map_err(|_| bad_env("KILN_KV_CACHE", v, "f16 or f32"))?;
        }
        if let Some(v) = env("KILN_DECODE_BATCH") {
            let n = v
                .parse()
                .map_err(|_| bad_env("KILN_DECODE_BATCH", v, "1 to 16"))?;
            opts.decode_batch = Some(n);
        }
        if let Some(v) = env("KILN_GPU_MEMORY") {
            opts.gpu_memory =
                Some(parse_bytes(&v).ok_or_else(|| {
                    bad_env("KILN_GPU_MEMORY", v, "a size such as 1GiB or 512MiB")
                })?);
        }
        if let Some(v) = env("KILN_ON_DEVICE_LOST") {
            opts.on_device_lost = match v.as_str() {
                "reload" => OnDeviceLost::Reload,
                "cpu" => OnDeviceLost::Cpu,
                "fail" => OnDeviceLost::Fail,
                _ => return Err(bad_env("KILN_ON_DEVICE_LOST", v, "reload, cpu or fail")),
            };
        }
        if let Some(v) = env("KILN_CHECK_WEIGHTS") {
            opts.check_weights = match v.as_str() {
                "1" => true,
                "0" => false,
                _ => return Err(bad_env("KILN_CHECK_WEIGHTS", v, "0 or 1")),
            };
        }
        Ok(opts)
    }

    /// Checks every value's range (a load checks its options before it starts).
    pub fn validate(&self) -> Result<()> {
        if let Some(n) = self.decode_batch {
            check_decode_batch(n)?;
        }
        if self.gpu_memory == Some(0) {
            return Err(Error::InvalidOption {
                option: "gpu_memory (KILN_GPU_MEMORY)",
                value: "0 or unreadable".into(),
                expected: "a size such as 1GiB, 512MiB or 1073741824",
            });
        }
        Ok(())
    }

    /// The model of `file` on `gpu` as these options ask, once it is known to fit.
    #[cfg(not(target_arch = "wasm32"))]
    fn load_gpu(
        &self,
        gpu: &Gpu,
        file: &GgufFile,
        cfg: &Config,
        context: u32,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<GpuModel> {
        let attn = AttnOptions::for_gpu(gpu, cfg, self.kv_cache);
        self.check_fit(gpu, file.header(), cfg, context, attn)?;
        let mut model = GpuModel::load_with(gpu, file, cfg, context, attn, progress)?;
        if let Some(n) = self.decode_batch {
            model.set_decode_batch(n)?;
        }
        Ok(model)
    }

    /// Checks that a model fits the GPU before anything is created on it: every buffer below
    /// the device's limits, and all of them within [`LoadOptions::gpu_memory`].
    fn check_fit(
        &self,
        gpu: &Gpu,
        header: &GgufHeader,
        cfg: &Config,
        context: u32,
        attn: AttnOptions,
    ) -> Result<()> {
        let needs = GpuLoader::memory_needs(gpu, header, cfg, context, attn)?;
        match self.gpu_memory {
            Some(allowed) if needs.total() > allowed => Err(Error::GpuMemory {
                needs,
                why: format!(
                    "over the {} allowed (gpu_memory, KILN_GPU_MEMORY)",
                    mib(allowed)
                ),
            }),
            _ => Ok(()),
        }
    }
}

/// Sampling and stopping settings of one generation.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_tokens: u32,
    /// 0 is greedy.
    pub temperature: f32,
    /// 0 keeps all.
    pub top_k: usize,
    /// 1 keeps all.
    pub top_p: f32,
    /// 1 is off.
    pub repetition_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u32,
    /// Extra stop tokens besides the model's end-of-generation tokens.
    pub stop_tokens: Vec<u32>,
    /// Keep going through end-of-generation tokens (benchmarks).
    pub ignore_eog: bool,
}

impl GenerateOptions {
    /// Checks every value's range: an error names the option, the value and what it takes
    /// (a generation checks its options before it starts).
    pub fn validate(&self) -> Result<()> {
        let bad = |option: &'static str, value: String, expected: &'static str| {
            Err(Error::InvalidOption {
                option,
                value,
                expected,
            })
        };
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(
                "temperature",
                self.temperature.to_string(),
                "0 (greedy) or more",
            );
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return bad("top_p", self.top_p.to_string(), "0 to 1 (1 keeps all)");
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(
                "repetition_penalty",
                self.repetition_penalty.to_string(),
                "above 0 (1 is off)",
            );
        }
        Ok(())
    }
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 128,
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            repetition_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
            stop_tokens: Vec::new(),
            ignore_eog: false,
        }
    }
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    EndOfGeneration,
    MaxTokens,
    Cancelled,
    ContextFull,
}

/// Timing of one generation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// From the call to the first generated token.
    pub ttft: Duration,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
}

/// The result of [`Model::generate`].
#[derive(Clone, Debug)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub text: String,
    pub stop: StopReason,
    pub stats: Stats,
}

enum Engine {
    Gpu(Box<GpuModel>),
    Cpu(Box<CpuModel>),
}

/// The device a load runs on (`None`: the CPU path) and why it was chosen, in words.
#[derive(Debug)]
pub struct Opened {
    pub gpu: Option<Gpu>,
    pub reason: String,
}

/// Opens the GPU `backend` asks for: `Cpu` none, `Gpu` an adapter or an error, `Auto` a
/// hardware adapter where there is one, else none (the CPU path), saying why. Callers in a
/// JavaScript engine without `navigator.gpu` (Node) should ask for `Backend::Cpu`: wgpu aborts
/// there instead of failing.
pub async fn open_gpu(backend: Backend, opts: &GpuOptions) -> Result<Opened> {
    let opened = |gpu: Option<Gpu>, reason: String| Ok(Opened { gpu, reason });
    match backend {
        Backend::Cpu => opened(None, "the CPU path, as asked".into()),
        Backend::Gpu => {
            let gpu = Gpu::new(opts.clone()).await?;
            let reason = format!("the GPU `{}`, as asked", gpu.adapter_info().name);
            opened(Some(gpu), reason)
        }
        Backend::Auto => match Gpu::new(opts.clone()).await {
            Ok(gpu) if gpu.adapter_info().device_type == wgpu::DeviceType::Cpu => opened(
                None,
                format!(
                    "auto: the CPU path, because the only adapter, `{}`, is a software renderer                      that runs slower than kiln's SIMD CPU path (ask for the GPU backend to use                      it anyway)",
                    gpu.adapter_info().name
                ),
            ),
            Ok(gpu) => {
                let reason = format!(
                    "auto: the GPU `{}` ({:?})",
                    gpu.adapter_info().name,
                    gpu.adapter_info().device_type
                );
                opened(Some(gpu), reason)
            }
            Err(Error::NoAdapter { detail }) => opened(
                None,
                format!("auto: the CPU path, as there is no GPU ({detail})"),
            ),
            Err(e) => Err(e),
        },
    }
}

impl Engine {
    /// The opened GPU if any, else the CPU path; with `Backend::Auto`, also the CPU path when
    /// the model does not fit the GPU.
    #[cfg(not(target_arch = "wasm32"))]
    fn load(
        file: GgufFile,
        cfg: &Config,
        context: u32,
        mut opened: Opened,
        opts: &LoadOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(Engine, String, Option<GgufFile>)> {
        if opts.check_weights {
            check_weights(&file, cfg)?;
        }
        if let Some(gpu) = opened.gpu.take() {
            match opts.load_gpu(&gpu, &file, cfg, context, progress) {
                Ok(model) => {
                    // Kept to reload from if the device is lost (mapped: no copy).
                    return Ok((Engine::Gpu(Box::new(model)), opened.reason, Some(file)));
                }
                Err(e) if opts.backend == Backend::Auto && e.does_not_fit() => {
                    opened.reason = format!(
                        "auto: the CPU path, because the model does not fit the GPU `{}`: {e}",
                        gpu.adapter_info().name
                    );
                }
                Err(e) => return Err(e),
            }
        }
        let model = CpuModel::load(file, cfg, context, opts.threads, progress)?;
        Ok((Engine::Cpu(Box::new(model)), opened.reason, None))
    }

    /// The CPU path: a browser opens its GPU asynchronously ([`open_gpu`]) and streams the
    /// file to it ([`Model::gpu_stream`]).
    #[cfg(target_arch = "wasm32")]
    fn load(
        file: GgufFile,
        cfg: &Config,
        context: u32,
        opts: &LoadOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(Engine, String)> {
        if opts.backend == Backend::Gpu {
            return Err(Error::Unsupported(
                "the GPU backend from a whole file on wasm32: a browser opens its GPU \
                 asynchronously and streams the file to it (open_gpu, Model::gpu_stream)"
                    .into(),
            ));
        }
        if opts.check_weights {
            check_weights(&file, cfg)?;
        }
        let model = CpuModel::load(file, cfg, context, opts.threads, progress)?;
        let reason = "the CPU path (a whole file on wasm32 loads there)".into();
        Ok((Engine::Cpu(Box::new(model)), reason))
    }
}

/// A GPU model whose file is arriving in chunks (see [`Model::gpu_stream`]).
#[derive(Debug)]
pub struct GpuStream {
    loader: GpuLoader,
    tokenizer: Tokenizer,
    cfg: Config,
    reason: String,
    decode_batch: Option<u32>,
}

impl GpuStream {
    /// Takes the next bytes of the file (from its first byte; chunks of any size).
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.loader.write(bytes)
    }

    /// The file's length as its header gives it.
    pub fn file_len(&self) -> u64 {
        self.loader.file_len()
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.loader.received()
    }

    /// (tensors complete, tensors the model uses).
    pub fn progress(&self) -> (usize, usize) {
        self.loader.progress()
    }

    /// The model, once the whole file has arrived (an error naming the first tensor that did
    /// not, otherwise).
    pub fn finish(self) -> Result<Model> {
        let mut model = self.loader.finish()?;
        if let Some(n) = self.decode_batch {
            model.set_decode_batch(n)?;
        }
        Ok(Model {
            engine: Engine::Gpu(Box::new(model)),
            tokenizer: self.tokenizer,
            cfg: self.cfg,
            reason: self.reason,
            #[cfg(not(target_arch = "wasm32"))]
            reload: None,
            warnings: Vec::new(),
        })
    }
}

/// A loaded model with its tokenizer, on one backend.
pub struct Model {
    engine: Engine,
    tokenizer: Tokenizer,
    cfg: Config,
    /// Why the model runs where it runs.
    reason: String,
    /// Where a GPU model loaded from a file comes back from when its device is lost.
    #[cfg(not(target_arch = "wasm32"))]
    reload: Option<Reload>,
    /// What went wrong on the side or was recovered from, until the caller takes it.
    warnings: Vec<String>,
}

/// What a GPU model was loaded from, kept to load it again when its device is lost (the file
/// stays mapped: address space, not a copy).
#[cfg(not(target_arch = "wasm32"))]
struct Reload {
    file: GgufFile,
    opts: LoadOptions,
    context: u32,
}

/// What a model does when its GPU device is lost mid-generation or between generations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnDeviceLost {
    /// Load the model again on a new device with the same options (a reset driver comes back),
    /// or on the CPU path when none comes back, and continue (the default).
    #[default]
    Reload,
    /// Continue on the CPU path at once.
    Cpu,
    /// End the generation with [`Error::DeviceLost`] ([`Model::recover`] still reloads).
    Fail,
}

/// How many times one generation recovers from a lost device before it gives up.
#[cfg(not(target_arch = "wasm32"))]
const MAX_RECOVERIES: u32 = 3;

/// The parts of a [`Model`] that bring it back after a lost device (a generation borrows them
/// apart from its engine).
#[cfg(not(target_arch = "wasm32"))]
struct Recovery<'m> {
    reload: &'m mut Option<Reload>,
    reason: &'m mut String,
    warnings: &'m mut Vec<String>,
    cfg: &'m Config,
}

#[cfg(not(target_arch = "wasm32"))]
impl Recovery<'_> {
    /// Replaces a GPU engine whose device was lost (`lost`: the driver's words) as
    /// [`LoadOptions::on_device_lost`] says; `automatic`: for a generation (which
    /// `OnDeviceLost::Fail` lets fail), not for the caller's [`Model::recover`] (which reloads).
    fn run(&mut self, engine: &mut Engine, lost: &str, automatic: bool) -> Result<()> {
        let Engine::Gpu(old) = &*engine else {
            return Ok(());
        };
        let Some(r) = self.reload.take() else {
            return Err(Error::DeviceLost {
                reason: format!(
                    "{lost}; this model was streamed to its GPU and has no file to reload \
                     from"
                ),
            });
        };
        let again = match r.opts.on_device_lost {
            OnDeviceLost::Fail if automatic => {
                *self.reload = Some(r);
                return Err(Error::DeviceLost {
                    reason: lost.into(),
                });
            }
            OnDeviceLost::Reload | OnDeviceLost::Fail => {
                Some(self.gpu_again(&r, old.decode_batch(), old.fused()))
            }
            OnDeviceLost::Cpu => None,
        };
        match again {
            Some(Ok(model)) => {
                let name = model.gpu().adapter_info().name.clone();
                self.warnings.push(format!(
                    "the GPU device was lost ({lost}); the model was loaded again on the GPU \
                     `{name}` and went on"
                ));
                *self.reason = format!("the GPU `{name}` (loaded again after a lost device)");
                *engine = Engine::Gpu(Box::new(model));
                *self.reload = Some(r);
            }
            other => {
                let why = match other {
                    Some(Err(e)) => format!("no GPU came back ({e})"),
                    _ => "as on_device_lost asks".into(),
                };
                let model =
                    CpuModel::load(r.file, self.cfg, r.context, r.opts.threads, &mut |_, _| {})?;
                self.warnings.push(format!(
                    "the GPU device was lost ({lost}); the model went on on the CPU path, {why}"
                ));
                *self.reason = format!("the CPU path, after the GPU device was lost ({why})");
                *engine = Engine::Cpu(Box::new(model));
            }
        }
        Ok(())
    }

    /// The model on a new device with the options it was loaded with.
    fn gpu_again(&self, r: &Reload, batch: u32, fused: bool) -> Result<GpuModel> {
        let gpu = pollster::block_on(Gpu::new(r.opts.gpu.clone()))?;
        let mut model = r
            .opts
            .load_gpu(&gpu, &r.file, self.cfg, r.context, &mut |_, _| {})?;
        model.set_decode_batch(batch)?;
        model.set_fused(fused)?;
        Ok(model)
    }
}

/// The driver's words, when `e` (from a step on `engine`) came from a lost device.
#[cfg(not(target_arch = "wasm32"))]
fn lost_device(engine: &Engine, e: &Error) -> Option<String> {
    match (engine, e) {
        (_, Error::DeviceLost { reason }) => Some(reason.clone()),
        (Engine::Gpu(m), _) => m.gpu().lost_reason(),
        (Engine::Cpu(_), _) => None,
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("arch", &self.cfg.arch)
            .field("backend", &self.backend_name())
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Loads a GGUF model. `progress(done, total)` reports the weights uploaded.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(
        path: impl AsRef<std::path::Path>,
        opts: &LoadOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        let file = GgufFile::open(path.as_ref())?;
        Model::from_gguf(file, opts, progress)
    }

    /// Starts loading a model onto `gpu` from its header alone: the weight buffers are created
    /// now, and the file's bytes are written into them as they are fed to the returned
    /// [`GpuStream`] (a browser streams a `fetch()` body this way, never holding the file).
    pub fn gpu_stream(gpu: &Gpu, header: &GgufHeader, opts: &LoadOptions) -> Result<GpuStream> {
        let reason = format!("the GPU `{}`", gpu.adapter_info().name);
        Self::gpu_stream_for(gpu, header, opts, reason)
    }

    /// [`Model::gpu_stream`] remembering why this GPU was chosen (see [`open_gpu`]).
    pub fn gpu_stream_for(
        gpu: &Gpu,
        header: &GgufHeader,
        opts: &LoadOptions,
        reason: String,
    ) -> Result<GpuStream> {
        opts.validate()?;
        let cfg = Config::from_header(header)?;
        let tokenizer = Tokenizer::from_header(header)?;
        let context = opts.context.clamp(16, cfg.n_ctx_train.max(16));
        let attn = AttnOptions::for_gpu(gpu, &cfg, opts.kv_cache);
        opts.check_fit(gpu, header, &cfg, context, attn)?;
        let mut loader = GpuLoader::new(gpu, header, &cfg, context, attn)?;
        loader.check_weights(opts.check_weights);
        Ok(GpuStream {
            loader,
            tokenizer,
            cfg,
            reason,
            decode_batch: opts.decode_batch,
        })
    }

    /// Loads a model from an opened GGUF file, on the backend `opts` ask for.
    pub fn from_gguf(
        file: GgufFile,
        opts: &LoadOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            opts.validate()?;
            let opened = pollster::block_on(open_gpu(opts.backend, &opts.gpu))?;
            Self::from_gguf_on(file, opened, opts, progress)
        }
        #[cfg(target_arch = "wasm32")]
        {
            opts.validate()?;
            let cfg = Config::from_gguf(&file)?;
            let tokenizer = Tokenizer::from_gguf(&file)?;
            let context = opts.context.clamp(16, cfg.n_ctx_train.max(16));
            let (engine, reason) = Engine::load(file, &cfg, context, opts, progress)?;
            Ok(Model {
                engine,
                tokenizer,
                cfg,
                reason,
                warnings: Vec::new(),
            })
        }
    }

    /// Loads a model onto a device already opened (see [`open_gpu`]; several models can share
    /// one [`Gpu`]), or the CPU path where `opened` has none. With `Backend::Auto` in `opts`, a
    /// model that does not fit the GPU (its limits, or [`LoadOptions::gpu_memory`]) goes to the
    /// CPU path, and [`Model::backend_reason`] says why.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_gguf_on(
        file: GgufFile,
        opened: Opened,
        opts: &LoadOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        opts.validate()?;
        let cfg = Config::from_gguf(&file)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let context = opts.context.clamp(16, cfg.n_ctx_train.max(16));
        let (engine, reason, file) = Engine::load(file, &cfg, context, opened, opts, progress)?;
        let reload = file.map(|file| Reload {
            file,
            opts: opts.clone(),
            context,
        });
        Ok(Model {
            engine,
            tokenizer,
            cfg,
            reason,
            reload,
            warnings: Vec::new(),
        })
    }

    /// After a lost GPU device (an [`Error::DeviceLost`] from [`Model::prompt_logits`], say):
    /// loads the model again as [`LoadOptions::on_device_lost`] says (on a new device with the
    /// same options, or on the CPU path), with an empty KV cache; [`Model::take_warnings`] then
    /// says what happened. Nothing to do (Ok) while the device works. A generation does this
    /// itself and goes on. A model streamed to its GPU ([`Model::gpu_stream`]) has no file to
    /// reload from: load it again the same way.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn recover(&mut self) -> Result<()> {
        let lost = match &self.engine {
            Engine::Gpu(m) => m.gpu().lost_reason(),
            Engine::Cpu(_) => None,
        };
        let Some(lost) = lost else {
            return Ok(());
        };
        let Model {
            engine,
            reload,
            reason,
            warnings,
            cfg,
            ..
        } = self;
        Recovery {
            reload,
            reason,
            warnings,
            cfg,
        }
        .run(engine, &lost, false)
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// `"gpu"` or `"cpu"`.
    pub fn backend_name(&self) -> &'static str {
        match self.engine {
            Engine::Gpu(_) => "gpu",
            Engine::Cpu(_) => "cpu",
        }
    }

    /// Why the model runs on its backend (e.g. that `auto` passed over a software adapter).
    pub fn backend_reason(&self) -> &str {
        &self.reason
    }

    /// The model with `reason` as the account of why it runs on its backend (for a loader that
    /// chose the backend itself, such as kiln-web's).
    pub fn with_backend_reason(mut self, reason: impl Into<String>) -> Model {
        self.reason = reason.into();
        self
    }

    /// GPU decode steps per submit (1 to 16): tokens still stream one by one, a batch's ids
    /// come back together. Ignored on the CPU path.
    pub fn set_decode_batch(&mut self, n: u32) -> Result<()> {
        match &mut self.engine {
            Engine::Gpu(m) => m.set_decode_batch(n),
            Engine::Cpu(_) => Ok(()),
        }
    }

    /// GPU decode steps per submit (0 on the CPU path).
    pub fn decode_batch(&self) -> u32 {
        match &self.engine {
            Engine::Gpu(m) => m.decode_batch(),
            Engine::Cpu(_) => 0,
        }
    }

    /// The GPU path's variant choices as this model runs them, and the tuned profile they came
    /// from (see [`crate::tune`]), as JSON for reports; null on the CPU path.
    pub fn tuning_report(&self) -> serde_json::Value {
        match &self.engine {
            Engine::Gpu(m) => m.tuning_report(),
            Engine::Cpu(_) => serde_json::Value::Null,
        }
    }

    /// Takes the warnings collected so far: side effects that failed without stopping
    /// generation, such as a pipeline cache that could not be written.
    pub fn take_warnings(&mut self) -> Vec<String> {
        let mut warnings = std::mem::take(&mut self.warnings);
        if let Engine::Gpu(m) = &mut self.engine {
            warnings.extend(m.take_warnings());
        }
        warnings
    }

    /// Whether GPU decode steps prepare each product's input inside its GEMV (see
    /// [`GpuModel::set_fused`]; the default depends on the adapter). Ignored on the CPU path.
    pub fn set_fused(&mut self, on: bool) -> Result<()> {
        match &mut self.engine {
            Engine::Gpu(m) => m.set_fused(on),
            Engine::Cpu(_) => Ok(()),
        }
    }

    /// Whether GPU decode steps run the fused GEMVs (false on the CPU path).
    pub fn fused(&self) -> bool {
        match &self.engine {
            Engine::Gpu(m) => m.fused(),
            Engine::Cpu(_) => false,
        }
    }

    /// The GPU adapter's name, or the CPU instruction set.
    pub fn adapter(&self) -> String {
        match &self.engine {
            Engine::Gpu(m) => m.gpu().adapter_info().name.clone(),
            Engine::Cpu(m) => m.describe(),
        }
    }

    /// The CPU path's thread count (the caller included); `None` on the GPU.
    pub fn cpu_threads(&self) -> Option<usize> {
        match &self.engine {
            Engine::Gpu(_) => None,
            Engine::Cpu(m) => Some(m.threads()),
        }
    }

    /// What the model was planned to need on the GPU (None on the CPU path).
    pub fn gpu_memory_needs(&self) -> Option<MemoryNeeds> {
        match &self.engine {
            Engine::Gpu(m) => Some(m.memory_needs()),
            Engine::Cpu(_) => None,
        }
    }

    /// The GPU the model runs on, if any (for counters).
    pub fn gpu(&self) -> Option<&Gpu> {
        match &self.engine {
            Engine::Gpu(m) => Some(m.gpu()),
            Engine::Cpu(_) => None,
        }
    }

    /// The GPU model itself (None on the CPU path), for what the generation API does not
    /// cover: a tuner reads its decode products ([`GpuModel::gemv_cases`]) and gives it the
    /// tuned choices ([`GpuModel::set_tuning`]).
    pub fn gpu_model_mut(&mut self) -> Option<&mut GpuModel> {
        match &mut self.engine {
            Engine::Gpu(m) => Some(m),
            Engine::Cpu(_) => None,
        }
    }

    /// KV cache positions.
    pub fn capacity(&self) -> u32 {
        match &self.engine {
            Engine::Gpu(m) => m.capacity(),
            Engine::Cpu(m) => m.capacity(),
        }
    }

    /// The KV cache's bytes for positions `0..positions` (GPU: as the cache stores them; CPU:
    /// f16), layer by layer, keys then values: the state a context leaves, for comparing runs.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn kv_prefix(&self, positions: u32) -> Result<Vec<u8>> {
        match &self.engine {
            Engine::Gpu(m) => m.kv_prefix(positions),
            Engine::Cpu(m) => Ok(m.kv_prefix(positions)),
        }
    }

    /// Tokens for a plain prompt: BOS where the model asks for it, special tokens parsed.
    pub fn encode_prompt(&self, text: &str) -> Vec<u32> {
        self.tokenizer.encode(text, true, true)
    }

    /// Tokens for chat messages through the model's chat template, ready for the reply.
    pub fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let text = self.tokenizer.chat_template()?.apply(messages, true);
        Ok(self.tokenizer.encode(&text, true, true))
    }

    /// The logits after `prompt` (a fresh context; for reference tests). In a browser only the
    /// CPU engine gives them.
    pub fn prompt_logits(&mut self, prompt: &[u32]) -> Result<Vec<f32>> {
        self.check_prompt(prompt)?;
        match &mut self.engine {
            #[cfg(not(target_arch = "wasm32"))]
            Engine::Gpu(m) => {
                use crate::model::gpu::StepOutput;
                match m.step(prompt, 0, prompt.len() as u32, &Choice::Logits)? {
                    StepOutput::Logits(l) => Ok(l),
                    StepOutput::Token(_) => unreachable!("logits were asked for"),
                }
            }
            #[cfg(target_arch = "wasm32")]
            Engine::Gpu(_) => Err(Error::Unsupported(GPU_LOGITS_IN_BROWSER.into())),
            Engine::Cpu(m) => Ok(m.step(prompt, 0)?.to_vec()),
        }
    }

    /// The intermediate activations of `prompt` run as one prompt from a fresh context, named
    /// as llama.cpp names them, for per-layer comparisons (`kiln logits --trace`): the CPU
    /// engine's every op ([`crate::model::cpu::CpuModel::take_trace`]), the GPU engine's
    /// residual stream, attention and FFN outputs
    /// ([`crate::model::gpu::GpuModel::trace_prompt`]). In a browser only the CPU engine
    /// gives them.
    pub fn prompt_trace(&mut self, prompt: &[u32]) -> Result<Vec<Traced>> {
        self.check_prompt(prompt)?;
        match &mut self.engine {
            #[cfg(not(target_arch = "wasm32"))]
            Engine::Gpu(m) => pollster::block_on(m.trace_prompt(prompt)),
            #[cfg(target_arch = "wasm32")]
            Engine::Gpu(_) => Err(Error::Unsupported(GPU_LOGITS_IN_BROWSER.into())),
            Engine::Cpu(m) => {
                m.set_trace(true);
                let ran = m.step(prompt, 0).map(|_| ());
                let trace = m.take_trace();
                m.set_trace(false);
                ran.map(|()| trace)
            }
        }
    }

    /// The logits after each prefix `ids[..=p]` for `p` in `positions`, from a fresh context:
    /// each prefix run as one prompt, or (`steps`) the ids fed one decode step at a time (the
    /// kernels of generation's decode steps). For comparing with a reference runtime without a
    /// tokenizer (`kiln logits`, kiln-web's `logits`). In a browser only the CPU engine gives
    /// them (the GPU's readbacks are asynchronous there).
    pub fn logits_at(
        &mut self,
        ids: &[u32],
        positions: &[usize],
        steps: bool,
    ) -> Result<Vec<Vec<f32>>> {
        let last = positions.iter().copied().max().unwrap_or(0);
        if positions.is_empty() || last >= ids.len() {
            return Err(Error::Shape {
                op: "logits",
                detail: format!(
                    "positions {positions:?} for {} ids: each must be below the id count",
                    ids.len()
                ),
            });
        }
        if !steps {
            return positions
                .iter()
                .map(|&p| self.prompt_logits(&ids[..=p]))
                .collect();
        }
        self.check_prompt(&ids[..=last])?;
        let mut out = Vec::with_capacity(positions.len());
        for (i, &id) in ids[..=last].iter().enumerate() {
            let logits = match &mut self.engine {
                #[cfg(not(target_arch = "wasm32"))]
                Engine::Gpu(m) => {
                    use crate::model::gpu::StepOutput;
                    match m.step(&[id], i as u32, 1, &Choice::Logits)? {
                        StepOutput::Logits(l) => l,
                        StepOutput::Token(_) => unreachable!("logits were asked for"),
                    }
                }
                #[cfg(target_arch = "wasm32")]
                Engine::Gpu(_) => return Err(Error::Unsupported(GPU_LOGITS_IN_BROWSER.into())),
                Engine::Cpu(m) => m.step(&[id], i as u32)?.to_vec(),
            };
            if positions.contains(&i) {
                out.push(logits);
            }
        }
        Ok(out)
    }

    fn check_prompt(&self, prompt: &[u32]) -> Result<u32> {
        if prompt.is_empty() {
            return Err(Error::Shape {
                op: "generate",
                detail: "the prompt has no tokens".into(),
            });
        }
        let n = u32::try_from(prompt.len()).unwrap_or(u32::MAX);
        if n >= self.capacity() {
            return Err(Error::ContextFull {
                capacity: self.capacity(),
            });
        }
        Ok(n)
    }

    /// Generates from `prompt` (a fresh context), calling `on_token(id, text piece)` as each
    /// token arrives; returning `ControlFlow::Break` from it cancels.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        mut on_token: impl FnMut(u32, &str) -> ControlFlow<()>,
    ) -> Result<Generation> {
        let mut stream = self.stream(prompt, opts)?;
        let mut tokens = Vec::new();
        let mut text = String::new();
        let mut cancelled = false;
        for token in stream.by_ref() {
            let token = token?;
            tokens.push(token.id);
            text.push_str(&token.text);
            if on_token(token.id, &token.text).is_break() {
                cancelled = true;
                break;
            }
        }
        text.push_str(&stream.remainder());
        let stop = if cancelled {
            StopReason::Cancelled
        } else {
            stream.stop_reason().unwrap_or(StopReason::MaxTokens)
        };
        Ok(Generation {
            tokens,
            text,
            stop,
            stats: stream.stats(),
        })
    }

    /// Generates from `prompt` (a fresh context) as an iterator of tokens; dropping it cancels.
    pub fn stream<'m>(
        &'m mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
    ) -> Result<TokenStream<'m>> {
        self.stream_continuing(prompt, &[], opts)
    }

    /// [`Model::stream`] of a generation that already produced `generated` (handed out before
    /// its model was lost, say: kiln-web reloads a model whose browser GPU device was lost and
    /// goes on this way). The prompt and `generated` are run as they first ran (the prompt in
    /// one go, each generated token one decode step), so the tokens that follow are those of an
    /// uninterrupted run; `generated` counts against `max_tokens`, and the stream hands out
    /// only what follows it.
    pub fn stream_continuing<'m>(
        &'m mut self,
        prompt: &[u32],
        generated: &[u32],
        opts: &GenerateOptions,
    ) -> Result<TokenStream<'m>> {
        opts.validate()?;
        let n_prompt = self.check_prompt(prompt)?;
        self.cfg.check_tokens("generate", generated)?;
        let capacity = self.capacity();
        let mut sampler = Sampler::new(
            opts.temperature,
            opts.top_k,
            opts.top_p,
            opts.repetition_penalty,
            opts.seed,
        );
        sampler.reserve(self.cfg.vocab as usize);
        let greedy = opts.temperature <= 0.0;
        let Model {
            engine,
            tokenizer,
            #[cfg(not(target_arch = "wasm32"))]
            reload,
            #[cfg(not(target_arch = "wasm32"))]
            reason,
            #[cfg(not(target_arch = "wasm32"))]
            warnings,
            #[cfg(not(target_arch = "wasm32"))]
            cfg,
            ..
        } = self;
        let eog = tokenizer
            .eog_ids()
            .iter()
            .copied()
            .chain(opts.stop_tokens.iter().copied())
            .collect();
        let mut history = Vec::with_capacity(capacity as usize);
        history.extend_from_slice(prompt);
        history.extend_from_slice(generated);
        // The decoder sees the generated tokens, so a character split across the two parts
        // comes out whole.
        let mut decoder = tokenizer.stream_decoder();
        for &id in generated {
            decoder.push(id);
        }
        Ok(TokenStream {
            engine,
            #[cfg(not(target_arch = "wasm32"))]
            recovery: Recovery {
                reload,
                reason,
                warnings,
                cfg,
            },
            #[cfg(not(target_arch = "wasm32"))]
            recoveries: 0,
            run: GpuRun::default(),
            decoder: Some(decoder),
            opts: opts.clone(),
            sampler,
            eog,
            history,
            n_prompt,
            capacity,
            greedy,
            pos: 0,
            generated: generated.len() as u32,
            start: Instant::now(),
            prefill_done: None,
            stop: None,
        })
    }
}

/// One generated token and the text it completes (empty while a multi-byte character is split
/// across tokens).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub id: u32,
    pub text: String,
}

/// The GPU side of a generation: decode steps run ahead in batches (see
/// [`GpuModel::submit_decode`]), at most two batches in flight so that the GPU works on the
/// next while the host hands out the last; ids arrive a batch at a time and are handed out one
/// by one. Ids past a stop are dropped unread, and the positions they took in the KV cache are
/// overwritten before anything reads them.
#[derive(Default)]
struct GpuRun {
    /// Whether the context (the prompt, and after a recovery the tokens handed out since) was
    /// submitted.
    started: bool,
    in_flight: VecDeque<Readback>,
    ready: VecDeque<u32>,
    /// Tokens whose computation was submitted (the prompt's choice included).
    submitted: u32,
    /// Position of the next decode step to submit.
    next_pos: u32,
}

/// A generation in progress, as an iterator of [`Token`]s (see [`Model::stream`]).
pub struct TokenStream<'m> {
    engine: &'m mut Engine,
    /// What brings the engine back when its device is lost, and how often it has.
    #[cfg(not(target_arch = "wasm32"))]
    recovery: Recovery<'m>,
    #[cfg(not(target_arch = "wasm32"))]
    recoveries: u32,
    run: GpuRun,
    decoder: Option<StreamDecoder<'m>>,
    opts: GenerateOptions,
    sampler: Sampler,
    eog: Vec<u32>,
    /// Prompt and generated ids (the repetition penalty's window reads its tail).
    history: Vec<u32>,
    n_prompt: u32,
    capacity: u32,
    greedy: bool,
    /// Positions already in the KV cache.
    pos: u32,
    generated: u32,
    start: Instant,
    prefill_done: Option<Instant>,
    stop: Option<StopReason>,
}

impl std::fmt::Debug for TokenStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStream")
            .field("pos", &self.pos)
            .field("generated", &self.generated)
            .field("stop", &self.stop)
            .finish_non_exhaustive()
    }
}

impl TokenStream<'_> {
    /// Why the stream ended (None while it runs).
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop
    }

    /// Text held back at the end (an incomplete character, as U+FFFD).
    pub fn remainder(&mut self) -> String {
        self.decoder
            .take()
            .map(StreamDecoder::finish)
            .unwrap_or_default()
    }

    /// Timing so far.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            prompt_tokens: self.n_prompt as usize,
            generated_tokens: self.generated as usize,
            ..Stats::default()
        };
        if let Some(t) = self.prefill_done {
            stats.ttft = t - self.start;
            stats.prefill_tok_s = f64::from(self.n_prompt) / stats.ttft.as_secs_f64().max(1e-9);
            let decode = t.elapsed().as_secs_f64();
            let n = self.generated.saturating_sub(1);
            if n > 0 && decode > 0.0 {
                stats.decode_tok_s = f64::from(n) / decode;
            }
        }
        stats
    }

    /// The next token, awaiting the GPU's readback instead of blocking on it (the way a browser
    /// generates on the GPU). [`Iterator::next`] runs this same step to completion.
    #[cfg_attr(
        target_arch = "wasm32",
        expect(
            clippy::never_loop,
            reason = "only a native recovery goes round again; a browser's kiln.js reloads"
        )
    )]
    pub async fn next_async(&mut self) -> Option<Result<Token>> {
        loop {
            if self.stop.is_some() {
                return None;
            }
            let n_new = self.begin_step()?;
            let next = match &mut *self.engine {
                Engine::Gpu(m) => {
                    Self::gpu_next(
                        m,
                        &mut self.run,
                        &self.history,
                        self.generated,
                        &self.opts,
                        self.greedy,
                        self.capacity,
                    )
                    .await
                }
                Engine::Cpu(m) => Self::cpu_step(
                    m,
                    &mut self.sampler,
                    &self.history,
                    &self.opts,
                    self.greedy,
                    self.pos,
                    n_new,
                    self.generated,
                ),
            };
            // The GPU writes NON_FINITE_ID where the logits held a NaN or +inf (the CPU path
            // checks them itself): the position is the one whose logits those were.
            let position = self.pos + n_new - 1;
            let next = next.and_then(|id| match id {
                NON_FINITE_ID => Err(Error::NonFinite { position }),
                id => Ok(id),
            });
            match next {
                Ok(next) => return self.finish_step(next, n_new).map(Ok),
                Err(e) => {
                    // A lost device: the model comes back (a new device, or the CPU path) and
                    // runs the prompt and the tokens handed out so far again, then goes on.
                    #[cfg(not(target_arch = "wasm32"))]
                    if let Some(lost) = lost_device(self.engine, &e)
                        && self.recoveries < MAX_RECOVERIES
                    {
                        self.recoveries += 1;
                        match self.recovery.run(self.engine, &lost, true) {
                            Ok(()) => {
                                self.run = GpuRun::default();
                                self.pos = 0;
                                continue;
                            }
                            Err(e) => {
                                self.stop = Some(StopReason::Cancelled);
                                return Some(Err(e));
                            }
                        }
                    }
                    self.stop = Some(StopReason::Cancelled);
                    return Some(Err(e));
                }
            }
        }
    }

    /// Positions the next step runs (the prompt first, then one token), or `None` with the stop
    /// reason set when the budget or the context is used up.
    fn begin_step(&mut self) -> Option<u32> {
        if self.generated >= self.opts.max_tokens {
            self.stop = Some(StopReason::MaxTokens);
            return None;
        }
        // The first step runs the prompt (and after a recovery, the tokens handed out since);
        // later steps one token each.
        let n_new = if self.pos == 0 {
            self.history.len() as u32
        } else {
            1
        };
        if self.pos + n_new >= self.capacity {
            self.stop = Some(StopReason::ContextFull);
            return None;
        }
        Some(n_new)
    }

    /// How the GPU chooses generated token number `step`.
    fn choice(opts: &GenerateOptions, greedy: bool, step: u32) -> Choice {
        if greedy {
            Choice::Greedy
        } else {
            Choice::Sample {
                params: SampleParams {
                    temperature: opts.temperature,
                    top_k: u32::try_from(opts.top_k).unwrap_or(u32::MAX),
                    top_p: opts.top_p,
                    repetition_penalty: opts.repetition_penalty,
                    seed: opts.seed,
                },
                step,
                last_n: u32::try_from(opts.repeat_last_n).unwrap_or(u32::MAX),
            }
        }
    }

    /// The next id on the GPU: from the batch already read, else from the oldest batch in
    /// flight (the context's first), submitting further batches first so that the GPU stays
    /// busy. `context`: the prompt and the `generated` ids handed out (none but after a
    /// recovery), run first.
    async fn gpu_next(
        m: &mut GpuModel,
        run: &mut GpuRun,
        context: &[u32],
        generated: u32,
        opts: &GenerateOptions,
        greedy: bool,
        capacity: u32,
    ) -> Result<u32> {
        if let Some(id) = run.ready.pop_front() {
            return Ok(id);
        }
        if !run.started {
            // The context alone: decode batches queued behind it would delay its first token
            // (measured on lavapipe: +40% time to first token); they start once it is back,
            // one before the token is handed over (a second can block the host in its submit
            // until the first is done: lavapipe runs one submit at a time).
            let n = context.len() as u32;
            let choice = Self::choice(opts, greedy, generated);
            // After a recovery, the tokens handed out are run as they first ran, one decode
            // step each (the same kernels, so the same KV cache and the same next token as a
            // run never interrupted); only the last step's choice is read.
            let n_prompt = n - generated;
            let mut back = m
                .submit_prompt(&context[..n_prompt as usize], 0, n_prompt, &choice)
                .await?;
            for pos in n_prompt..n {
                let id = &context[pos as usize..=pos as usize];
                back = m.submit_prompt(id, pos, 1, &choice).await?;
            }
            run.started = true;
            run.submitted = generated + 1;
            run.next_pos = n;
            let first = m.tokens_from(&back.bytes().await?)?;
            Self::fill(m, run, opts, greedy, capacity, 1)?;
            return first
                .first()
                .copied()
                .ok_or_else(|| Error::Readback("the prompt's choice came back empty".into()));
        }
        Self::fill(m, run, opts, greedy, capacity, 2)?;
        let back = run.in_flight.pop_front().ok_or_else(|| {
            Error::Unsupported("no decode step was left to run (a budget or the context)".into())
        })?;
        let ids = m.tokens_from(&back.bytes().await?)?;
        run.ready.extend(ids);
        Self::fill(m, run, opts, greedy, capacity, 2)?;
        run.ready
            .pop_front()
            .ok_or_else(|| Error::Readback("a decode batch came back empty".into()))
    }

    /// Submits decode batches until `depth` are in flight, the token budget is spent, or the
    /// context is full (a step at position p needs p + 1 < capacity, as [`Self::begin_step`]).
    fn fill(
        m: &mut GpuModel,
        run: &mut GpuRun,
        opts: &GenerateOptions,
        greedy: bool,
        capacity: u32,
        depth: usize,
    ) -> Result<()> {
        while run.in_flight.len() < depth {
            let left = opts.max_tokens.saturating_sub(run.submitted);
            let room = capacity.saturating_sub(run.next_pos + 1);
            let n = m.decode_batch().min(left).min(room);
            if n == 0 {
                break;
            }
            let choice = Self::choice(opts, greedy, run.submitted);
            run.in_flight
                .push_back(m.submit_decode(run.next_pos, n, &choice)?);
            run.submitted += n;
            run.next_pos += n;
        }
        Ok(())
    }

    /// A CPU step: runs the new positions and chooses the next id on the CPU.
    #[allow(
        clippy::too_many_arguments,
        reason = "the stream's fields, borrowed apart from its engine"
    )]
    fn cpu_step(
        m: &mut CpuModel,
        sampler: &mut Sampler,
        history: &[u32],
        opts: &GenerateOptions,
        greedy: bool,
        pos: u32,
        n_new: u32,
        step: u32,
    ) -> Result<u32> {
        if pos == 0 && step > 0 {
            // A continuation (or a recovery): the prompt in one go, then each generated token
            // one decode step, as they first ran.
            let n_prompt = history.len() - step as usize;
            m.step(&history[..n_prompt], 0)?;
            for p in n_prompt..history.len() {
                m.step(&history[p..=p], p as u32)?;
            }
        } else {
            m.step(&history[history.len() - n_new as usize..], pos)?;
        }
        // The GPU's choice kernels refuse the same logits (see `NON_FINITE_ID`).
        if m.logits().iter().any(|&l| l.is_nan() || l == f32::INFINITY) {
            return Err(Error::NonFinite {
                position: pos + n_new - 1,
            });
        }
        Ok(if greedy {
            kiln_cpu::sample::argmax(m.logits()).unwrap_or(0)
        } else {
            let recent_from = history.len().saturating_sub(opts.repeat_last_n);
            sampler.sample(m.logits_mut(), &history[recent_from..], step)?
        })
    }

    /// Records the chosen id: the end of generation, or the next token and its text.
    fn finish_step(&mut self, next: u32, n_new: u32) -> Option<Token> {
        self.pos += n_new;
        if self.prefill_done.is_none() {
            self.prefill_done = Some(Instant::now());
        }
        if !self.opts.ignore_eog && self.eog.contains(&next) {
            self.stop = Some(StopReason::EndOfGeneration);
            return None;
        }
        self.history.push(next);
        self.generated += 1;
        let text = match &mut self.decoder {
            Some(d) => d.push(next),
            None => String::new(),
        };
        Some(Token { id: next, text })
    }
}

impl Iterator for TokenStream<'_> {
    type Item = Result<Token>;

    /// Natively, blocks on [`TokenStream::next_async`].
    #[cfg(not(target_arch = "wasm32"))]
    fn next(&mut self) -> Option<Result<Token>> {
        pollster::block_on(self.next_async())
    }

    /// In a browser only the CPU path can be iterated synchronously: its step never awaits, so
    /// one poll of [`TokenStream::next_async`] finishes it. A GPU step must await its readback
    /// in the event loop (`next_async`).
    #[cfg(target_arch = "wasm32")]
    fn next(&mut self) -> Option<Result<Token>> {
        use std::task::{Context, Poll, Waker};
        if self.stop.is_some() {
            return None;
        }
        if matches!(*self.engine, Engine::Gpu(_)) {
            self.stop = Some(StopReason::Cancelled);
            return Some(Err(Error::Unsupported(
                "iterating a GPU generation synchronously in a browser (use next_async)".into(),
            )));
        }
        let step = std::pin::pin!(self.next_async());
        match step.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(next) => next,
            Poll::Pending => unreachable!("the CPU path's step does not await"),
        }
    }
}
