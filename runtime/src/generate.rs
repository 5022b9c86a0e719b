//! The generation API: a model on a backend (GPU, or the CPU path where there is no adapter),
//! prompts or chat messages in, tokens streamed out (an iterator, or a callback), with stop
//! tokens, a token budget, cancellation, sampling settings and timing statistics.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use kiln_cpu::sample::Sampler;

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::gpu::{Gpu, GpuOptions};
use crate::model::config::Config;
use crate::model::cpu::CpuModel;
use crate::model::gpu::{GpuModel, StepOutput};
use crate::tokenizer::{Message, Tokenizer};

/// Where the model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// The GPU when an adapter exists, else the CPU path.
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
    /// `KILN_BACKEND_KIND=gpu|cpu|auto` overrides the default (auto).
    pub backend: Backend,
    /// KV cache positions (prompt + generated); capped at the model's training context.
    pub context: u32,
    /// CPU threads (0 = all cores).
    pub threads: usize,
    pub gpu: GpuOptions,
}

impl Default for LoadOptions {
    fn default() -> Self {
        let backend = std::env::var("KILN_DEVICE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        LoadOptions {
            backend,
            context: 2048,
            threads: 0,
            gpu: GpuOptions::from_env(),
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

/// A loaded model with its tokenizer, on one backend.
pub struct Model {
    engine: Engine,
    tokenizer: Tokenizer,
    cfg: Config,
    adapter: Option<String>,
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
    pub fn load(
        path: impl AsRef<std::path::Path>,
        opts: &LoadOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        let file = GgufFile::open(path.as_ref())?;
        Model::from_gguf(file, opts, progress)
    }

    /// Loads a model from an opened GGUF file.
    pub fn from_gguf(
        file: GgufFile,
        opts: &LoadOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        let cfg = Config::from_gguf(&file)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let context = opts.context.clamp(16, cfg.n_ctx_train.max(16));
        let gpu = match opts.backend {
            Backend::Cpu => None,
            Backend::Gpu => Some(Gpu::new_blocking(opts.gpu.clone())?),
            Backend::Auto => match Gpu::new_blocking(opts.gpu.clone()) {
                Ok(gpu) => Some(gpu),
                Err(Error::NoAdapter { .. }) => None,
                Err(e) => return Err(e),
            },
        };
        let (engine, adapter) = match gpu {
            Some(gpu) => {
                let name = gpu.adapter_info().name.clone();
                let model = GpuModel::load(&gpu, &file, &cfg, context, progress)?;
                (Engine::Gpu(Box::new(model)), Some(name))
            }
            None => {
                let model = CpuModel::load(file, &cfg, context, opts.threads, progress)?;
                (Engine::Cpu(Box::new(model)), None)
            }
        };
        Ok(Model {
            engine,
            tokenizer,
            cfg,
            adapter,
        })
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

    /// The GPU adapter's name, or the CPU instruction set.
    pub fn adapter(&self) -> String {
        match &self.engine {
            Engine::Gpu(_) => self.adapter.clone().unwrap_or_default(),
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

    /// The GPU the model runs on, if any (for counters).
    pub fn gpu(&self) -> Option<&Gpu> {
        match &self.engine {
            Engine::Gpu(m) => Some(m.gpu()),
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

    /// Tokens for a plain prompt: BOS where the model asks for it, special tokens parsed.
    pub fn encode_prompt(&self, text: &str) -> Vec<u32> {
        self.tokenizer.encode(text, true, true)
    }

    /// Tokens for chat messages through the model's chat template, ready for the reply.
    pub fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let text = self.tokenizer.chat_template()?.apply(messages, true);
        Ok(self.tokenizer.encode(&text, true, true))
    }

    /// The logits after `prompt` (a fresh context; for reference tests).
    pub fn prompt_logits(&mut self, prompt: &[u32]) -> Result<Vec<f32>> {
        let n = self.check_prompt(prompt)?;
        match &mut self.engine {
            Engine::Gpu(m) => match m.step(prompt, 0, n, true)? {
                StepOutput::Logits(l) => Ok(l),
                StepOutput::Token(_) => unreachable!("logits were asked for"),
            },
            Engine::Cpu(m) => Ok(m.step(prompt, 0)?.to_vec()),
        }
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
        let start = Instant::now();
        let n_prompt = self.check_prompt(prompt)?;
        let greedy = opts.temperature <= 0.0;
        let mut sampler = Sampler::new(
            opts.temperature,
            opts.top_k,
            opts.top_p,
            opts.repetition_penalty,
            opts.seed,
        );
        sampler.reserve(self.cfg.vocab as usize);
        // Greedy on the GPU chooses there (4 bytes back); otherwise logits come back and the
        // CPU sampler chooses, with the same RNG as kiln-cpu's.
        let choose_on_gpu = greedy && matches!(self.engine, Engine::Gpu(_));
        let eog: Vec<u32> = self
            .tokenizer
            .eog_ids()
            .iter()
            .copied()
            .chain(opts.stop_tokens.iter().copied())
            .collect();
        let mut history: Vec<u32> = prompt.to_vec();
        let mut tokens = Vec::new();
        let mut text = String::new();
        let capacity = self.capacity();
        let mut decoder = self.tokenizer.stream_decoder();
        let mut stats = Stats {
            prompt_tokens: prompt.len(),
            ..Stats::default()
        };
        let mut pos = 0u32;
        let mut prefill_done = None;
        let mut stop = StopReason::MaxTokens;
        let mut step_tokens: Vec<u32> = prompt.to_vec();
        let mut n_new = n_prompt;
        while (tokens.len() as u32) < opts.max_tokens {
            if pos + n_new >= capacity {
                stop = StopReason::ContextFull;
                break;
            }
            let next = match &mut self.engine {
                Engine::Gpu(m) => match m.step(&step_tokens, pos, n_new, !choose_on_gpu)? {
                    StepOutput::Token(t) => t,
                    StepOutput::Logits(mut l) => {
                        let recent = &history[history.len().saturating_sub(opts.repeat_last_n)..];
                        sampler.sample(&mut l, recent, tokens.len() as u32)?
                    }
                },
                Engine::Cpu(m) => {
                    let l = m.step(&step_tokens, pos)?;
                    let recent = &history[history.len().saturating_sub(opts.repeat_last_n)..];
                    if greedy {
                        kiln_cpu::sample::argmax(l).unwrap_or(0)
                    } else {
                        let mut l = l.to_vec();
                        sampler.sample(&mut l, recent, tokens.len() as u32)?
                    }
                }
            };
            pos += n_new;
            if prefill_done.is_none() {
                let now = Instant::now();
                stats.ttft = now - start;
                prefill_done = Some(now);
            }
            if !opts.ignore_eog && eog.contains(&next) {
                stop = StopReason::EndOfGeneration;
                break;
            }
            tokens.push(next);
            history.push(next);
            let piece = decoder.push(next);
            text.push_str(&piece);
            if on_token(next, &piece).is_break() {
                stop = StopReason::Cancelled;
                break;
            }
            // The next step feeds the chosen token: already on the GPU when chosen there.
            if choose_on_gpu {
                step_tokens.clear();
            } else {
                step_tokens = vec![next];
                if let Engine::Gpu(m) = &self.engine {
                    m.set_token(pos, next)?;
                    step_tokens.clear();
                }
            }
            n_new = 1;
        }
        let tail = decoder.finish();
        if !tail.is_empty() {
            text.push_str(&tail);
            let _ = on_token(u32::MAX, &tail);
        }
        stats.generated_tokens = tokens.len();
        stats.prefill_tok_s = prompt.len() as f64 / stats.ttft.as_secs_f64().max(1e-9);
        if let Some(t) = prefill_done {
            let decode = t.elapsed().as_secs_f64();
            let n = tokens.len().saturating_sub(1);
            if n > 0 && decode > 0.0 {
                stats.decode_tok_s = n as f64 / decode;
            }
        }
        Ok(Generation {
            tokens,
            text,
            stop,
            stats,
        })
    }
}
