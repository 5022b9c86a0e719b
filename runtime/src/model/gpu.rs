//! The forward pass on the GPU: weights in their GGUF block formats, the KV cache and every
//! activation stay resident. A layer's decode step is six dispatches: the q/k/v GEMV with its
//! input prepared in its prologue (the previous block's residual add and post-norm, RMSNorm,
//! int8 quantization), `rope_kv` (biases, q/k norms, RoPE, KV append), attention, the
//! o-projection, the gated FFN GEMV (prologue: residual add, norm) and the down-projection.
//! Decode steps are replayed from prebuilt plans, several per submit, each choosing its token
//! on the GPU where the next step's embedding reads it, so a batch of steps reads back 4 bytes
//! per token and waits once.

use crate::clock::Instant;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::gpu::{BindingKind, Gpu, KernelSpec, Plan, Readback, StepArena, View};
use crate::model::config::{Arch, Config, LayerWeights};
use crate::model::{MemoryNeeds, Traced, append};
use crate::ops::activation::{Act, gated};
use crate::ops::attention::{
    Attention, KvType, SPLIT_MIN_LEN, SplitRule, Splits, attention, attention_split,
    attention_tiled, partials_bytes, scratch_bytes,
};
use crate::ops::gemv::{
    ActInput, ActQuant, EmbedShape, GemvShape, QAct, Split, WType, embed, gemv, gemv_q8_with,
};
use crate::ops::gemv_gated::{GatedShape, gemv_gated};
use crate::ops::gemv_prep::{gemv_prep, gemv_prep_gated, takes};
use crate::ops::matmul_q::{Prefill, matmul_q};
use crate::ops::prep::{Add, PrepIn, PrepOut, prep};
use crate::ops::reduce::Combine;
use crate::ops::rope_kv::{RopeKv, rope_kv};
use crate::ops::sample::{NON_FINITE_ID, SampleParams, argmax, sample, sample_key};
use crate::tune::{GemvOp, GemvPick, Tuning, prefill_word};

mod load;

pub use load::GpuLoader;

/// Bytes of a mapped file [`GpuModel::load_with`] hands its loader at a time.
const FEED_BYTES: usize = 16 << 20;

/// Prompt tokens per recorded chunk: on CPU adapters (GEMV prefill), and on GPUs (tiled matmuls,
/// where a longer chunk reads the weights fewer times and dispatches less per token).
pub const CHUNK: u32 = 32;
const CHUNK_TILED: u32 = 128;

/// Decode steps per submit by default (see [`GpuModel::set_decode_batch`]).
pub const DECODE_BATCH: u32 = 4;
/// The most decode steps one submit may hold.
pub const MAX_DECODE_BATCH: u32 = 16;

/// Fails unless `n` decode steps per submit is 1 to [`MAX_DECODE_BATCH`].
pub fn check_decode_batch(n: u32) -> Result<()> {
    if (1..=MAX_DECODE_BATCH).contains(&n) {
        return Ok(());
    }
    Err(Error::InvalidOption {
        option: "decode_batch (KILN_DECODE_BATCH, --decode-batch)",
        value: n.to_string(),
        expected: "1 to 16",
    })
}

/// A prompt's submits are sized to about this much GPU time each, far under the 2 s after
/// which Windows resets a GPU that has not finished a submit (TDR).
const SUBMIT_SECONDS: f64 = 0.25;

/// What a model's plans, step parameters and readbacks take on the GPU besides its weights, KV
/// cache and activation scratch, bounded from above: 66-96 KiB measured for the three test
/// models (`memory_needs_cover_a_load` in runtime/tests/limits.rs).
const PLAN_BYTES: u64 = 256 << 10;

/// How a GPU model runs attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnOptions {
    /// How the KV cache stores values (f16 unless asked otherwise).
    pub kv: KvType,
    /// Fewest positions per split when attention is split over the KV length; a step whose
    /// tokens see fewer than twice this many is not split, and 0 never splits. Prompt chunks
    /// use the tiled kernel and decode steps the one-pass kernel when not split.
    pub split_min_len: u32,
}

impl Default for AttnOptions {
    /// An f16 cache, split from [`SPLIT_MIN_LEN`] positions per split (the GPU choice).
    fn default() -> Self {
        AttnOptions {
            kv: KvType::F16,
            split_min_len: SPLIT_MIN_LEN,
        }
    }
}

impl AttnOptions {
    /// What suits the device for `cfg` ([`crate::tune::Tuning::attn_split`]), with a cache of
    /// `kv`, except f32 where the device lacks SHADER_F16 (the f16 cache's kernels need it;
    /// e.g. Chromium's SwiftShader, some mobile GPUs).
    pub fn for_gpu(gpu: &Gpu, cfg: &Config, kv: KvType) -> AttnOptions {
        AttnOptions {
            kv: if gpu.capabilities().f16 {
                kv
            } else {
                KvType::F32
            },
            split_min_len: gpu.tuning().attn_split(cfg),
        }
    }
}

/// One part of a [`GpuMatrix`]: rows `row0..row0 + rows`, starting `offset` bytes into `buffer`.
#[derive(Debug)]
struct Part {
    buffer: wgpu::Buffer,
    offset: u64,
    row0: u32,
    rows: u32,
}

/// A weight matrix `(rows, k)` on the GPU, split by rows into parts that each fit one binding.
/// The gate and up matrices of an FFN share their parts' buffers (see [`GpuLoader`]).
#[derive(Debug)]
pub struct GpuMatrix {
    pub wtype: WType,
    pub rows: u32,
    pub k: u32,
    parts: Vec<Part>,
}

impl GpuMatrix {
    /// Part `p` as a binding (whole words: the last row's bytes are padded to one).
    fn view<'a>(&self, p: &'a Part) -> View<'a> {
        let bytes = u64::from(p.rows)
            * u64::from(self.k / self.wtype.block_elems())
            * u64::from(self.wtype.block_bytes());
        View::new(&p.buffer, p.offset, bytes.next_multiple_of(4))
    }

    /// Whether `up` shares this (gate) matrix's buffers, part by part (see [`GpuLoader`]).
    fn pairs_with(&self, up: &GpuMatrix) -> bool {
        self.wtype == up.wtype
            && self.parts.len() == up.parts.len()
            && self
                .parts
                .iter()
                .zip(&up.parts)
                .all(|(g, u)| g.buffer == u.buffer && g.rows == u.rows)
    }

    /// Records the gather of `n_tok` rows named by `tokens[t0..]` into `out`.
    fn embed(
        &self,
        rec: &mut crate::gpu::Recorder,
        tokens: View<'_>,
        out: View<'_>,
        n_tok: u32,
        t0: u32,
        scale: f32,
    ) -> Result<()> {
        for p in &self.parts {
            let shape = EmbedShape {
                wtype: self.wtype,
                k: self.k,
                row0: p.row0,
                rows: p.rows,
                n_tok,
                t0,
                scale,
            };
            embed(rec, self.view(p), tokens, out, shape)?;
        }
        Ok(())
    }
}

/// A layer's q, k and v projections: one matrix of their rows back to back where the loader
/// could join them, else three.
#[derive(Debug)]
enum Qkv {
    One(GpuMatrix),
    Apart([GpuMatrix; 3]),
}

/// One layer's weights on the GPU; vectors (norm weights, biases) are float offsets into the
/// model's vector buffer.
#[derive(Debug)]
struct Layer {
    attn_norm: u32,
    qkv: Qkv,
    o: GpuMatrix,
    /// The q, k and v biases, back to back from this offset (Qwen2).
    bias: Option<u32>,
    /// Per-head q and k norm weights (Gemma 3, Qwen3).
    qk_norm: Option<[u32; 2]>,
    post_attn_norm: Option<u32>,
    ffn_norm: u32,
    gate: GpuMatrix,
    up: GpuMatrix,
    down: GpuMatrix,
    post_ffn_norm: Option<u32>,
    /// Attends through the sliding window.
    local: bool,
}

impl Layer {
    /// The layer from the loader's weights, checked against the config's shapes.
    fn new(cfg: &Config, il: u32, w: LayerWeights<Option<GpuMatrix>, u32>) -> Result<Layer> {
        let bad = |what: &str| {
            Error::Unsupported(format!(
                "layer {il}'s tensor shapes do not match the metadata ({what})"
            ))
        };
        let (d, qd, kvd, ff) = (cfg.d_model, cfg.q_dim(), cfg.kv_dim(), cfg.d_ff);
        let qkv = match (w.q, w.k, w.v) {
            (Some(m), None, None) if m.rows == qd + 2 * kvd && m.k == d => Qkv::One(m),
            (Some(q), Some(k), Some(v))
                if q.rows == qd && k.rows == kvd && v.rows == kvd && [q.k, k.k, v.k] == [d; 3] =>
            {
                Qkv::Apart([q, k, v])
            }
            _ => return Err(bad("q, k, v")),
        };
        let (o, gate, up, down) = match (w.o, w.gate, w.up, w.down) {
            (Some(o), Some(g), Some(u), Some(dn)) => (o, g, u, dn),
            _ => return Err(bad("a matrix is missing")),
        };
        let ok = o.rows == d
            && o.k == qd
            && gate.rows == ff
            && gate.k == d
            && up.rows == ff
            && up.k == d
            && down.rows == d
            && down.k == ff;
        if !ok {
            return Err(bad("o, gate, up, down"));
        }
        let bias = match w.bias {
            Some([q, k, v]) if k == q + qd && v == k + kvd => Some(q),
            Some(_) => return Err(bad("biases are not back to back")),
            None => None,
        };
        Ok(Layer {
            attn_norm: w.attn_norm,
            qkv,
            o,
            bias,
            qk_norm: w.qk_norm,
            post_attn_norm: w.post_attn_norm,
            ffn_norm: w.ffn_norm,
            gate,
            up,
            down,
            post_ffn_norm: w.post_ffn_norm,
            local: cfg.is_local(il),
        })
    }
}

/// A model's weights on the GPU and what it was loaded for: what the loader fills and hands
/// over (with the vector buffer) to build the model.
#[derive(Debug)]
struct Weights {
    gpu: Gpu,
    cfg: Config,
    capacity: u32,
    attn: AttnOptions,
    embd: GpuMatrix,
    output: Option<GpuMatrix>,
    output_norm: u32,
    /// Llama 3.x's RoPE frequency divisors, where the model has them.
    rope_freqs: Option<u32>,
    layers: Vec<Layer>,
    /// What the model needs on the GPU, as planned.
    needs: MemoryNeeds,
}

/// Activations, allocated once for chunks of up to `chunk` tokens.
#[derive(Debug)]
struct Scratch {
    /// (chunk, d_model): the residual stream, in one buffer or the other as the step goes
    /// (a prologue reads one and writes the other).
    x: [wgpu::Buffer; 2],
    /// (chunk, d_model): a block's output before its residual add.
    t: wgpu::Buffer,
    /// (chunk, q_dim + 2 kv_dim): the q/k/v projection.
    qkv: wgpu::Buffer,
    /// (chunk, q_dim): q after RoPE.
    q: wgpu::Buffer,
    /// (chunk, q_dim): attention's output.
    att: wgpu::Buffer,
    /// (chunk, d_ff): the gated FFN's activation.
    hidden: wgpu::Buffer,
    /// (chunk, d_ff) each: gate and up apart (tiled prefill).
    gate: wgpu::Buffer,
    up: wgpu::Buffer,
    /// (chunk, widest input) f32: the prepared input of f16/f32 weights.
    xn: wgpu::Buffer,
    /// The prepared int8 input: (chunk, widest / 4) words, (chunk, widest / 32) scales, sums.
    xq: wgpu::Buffer,
    xd: wgpu::Buffer,
    xs: wgpu::Buffer,
    /// (vocab).
    logits: wgpu::Buffer,
    /// The one-pass decode kernel's scores (n_head, capacity).
    scores: wgpu::Buffer,
    /// Split attention's partial results, for a chunk and the most splits.
    partials: wgpu::Buffer,
    /// (capacity + 1): the prompt and every chosen id; a step reads its token here.
    tokens: wgpu::Buffer,
}

/// How a model's activations are laid out for a context: the prompt chunk, how chunks
/// multiply, attention's shape at a chunk and the most splits a step uses.
struct Activations {
    prefill: Prefill,
    chunk: u32,
    a: Attention,
    max_splits: u32,
}

impl Activations {
    fn new(gpu: &Gpu, cfg: &Config, capacity: u32, attn: AttnOptions) -> Activations {
        let prefill = gpu.tuning().prefill(cfg);
        let chunk = if prefill == Prefill::Tiled {
            CHUNK_TILED
        } else {
            CHUNK
        };
        let a = Attention {
            n_head: cfg.n_head,
            n_kv_head: cfg.n_kv_head,
            head_dim: cfg.head_dim,
            capacity,
            n_tok: chunk,
            pos0: 0,
            window: 0,
            scale: cfg.attn_scale,
            softcap: cfg.attn_softcap,
            kv: attn.kv,
        };
        // The most splits a step can use: the last position's, without a window.
        let max_splits = if attn.split_min_len > 0 {
            let last = Attention {
                n_tok: 1,
                pos0: capacity - 1,
                ..a
            };
            Splits::plan(&last, attn.split_min_len).count
        } else {
            0
        };
        Activations {
            prefill,
            chunk,
            a,
            max_splits,
        }
    }

    /// Per layer, the key and value caches, from `make(label, bytes)`.
    fn caches(&self, cfg: &Config, make: &mut Make<'_>) -> Result<Vec<[wgpu::Buffer; 2]>> {
        (0..cfg.n_layer)
            .map(|_| {
                Ok([
                    make("k cache", self.a.cache_bytes())?,
                    make("v cache", self.a.cache_bytes())?,
                ])
            })
            .collect()
    }
}

/// Creates (or, to measure, counts) a buffer of a label and a size.
type Make<'a> = dyn FnMut(&str, u64) -> Result<wgpu::Buffer> + 'a;

impl Scratch {
    /// The scratch of a model with this config and activation layout, from `make`.
    fn new(cfg: &Config, act: &Activations, make: &mut Make<'_>) -> Result<Scratch> {
        let (a, chunk) = (&act.a, act.chunk);
        let c = u64::from(chunk);
        let widest = u64::from(cfg.d_model.max(cfg.d_ff).max(cfg.q_dim()));
        // Bytes of `n` floats.
        let f = |n: u64| n.max(1) * 4;
        let (bq, bd, bs) = QAct::sizes(chunk, widest as u32);
        Ok(Scratch {
            x: [
                make("x", f(c * u64::from(cfg.d_model)))?,
                make("x", f(c * u64::from(cfg.d_model)))?,
            ],
            t: make("block output", f(c * u64::from(cfg.d_model)))?,
            qkv: make("qkv", f(c * u64::from(cfg.q_dim() + 2 * cfg.kv_dim())))?,
            q: make("q", f(c * u64::from(cfg.q_dim())))?,
            att: make("att", f(c * u64::from(cfg.q_dim())))?,
            hidden: make("hidden", f(c * u64::from(cfg.d_ff)))?,
            gate: make("gate", f(c * u64::from(cfg.d_ff)))?,
            up: make("up", f(c * u64::from(cfg.d_ff)))?,
            xn: make("xn", f(c * widest))?,
            xq: make("xq", bq)?,
            xd: make("xd", bd)?,
            xs: make("xs", bs)?,
            logits: make("logits", f(u64::from(cfg.vocab)))?,
            scores: make("scores", scratch_bytes(&Attention { n_tok: 1, ..*a }))?,
            partials: make(
                "attention partials",
                partials_bytes(a, act.max_splits).max(4),
            )?,
            tokens: make("tokens", f(u64::from(a.capacity) + 1))?,
        })
    }
}

/// How a step chooses the next token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Choice {
    /// Argmax on the GPU; 4 bytes come back.
    Greedy,
    /// Sampling on the GPU (see [`crate::ops::sample::sample`]); 4 bytes come back.
    Sample {
        params: SampleParams,
        /// Generation step (the RNG's counter).
        step: u32,
        /// Recent ids the repetition penalty looks at.
        last_n: u32,
    },
    /// The last position's logits come back (vocabulary floats); the greedy id is still
    /// written for the next step.
    Logits,
}

/// What a step hands back.
#[derive(Debug, PartialEq)]
pub enum StepOutput {
    /// The greedy next token (chosen on the GPU; 4 bytes read back).
    Token(u32),
    /// The last position's logits (vocab floats read back).
    Logits(Vec<f32>),
}

/// Where a chunk's residual stream stands after its layers: the buffer holding it, and whether
/// the last block's output (in `t`) still has to be added (with this post-norm, if any).
#[derive(Clone, Copy, Debug)]
struct Stream {
    cur: usize,
    pending: Option<Option<u32>>,
}

/// A decode step's plans: the step itself per attention layout (which layers split attention
/// changes with the position), the greedy choice, and the sampled choice of the settings last
/// used.
#[derive(Debug)]
struct DecodePlans {
    arena: StepArena,
    /// (first position, layers that split) and the step's plan recorded at that position.
    bodies: Vec<(u32, [bool; 2], Plan)>,
    /// Argmax recorded at position 0 (slot 1).
    greedy: Plan,
    /// Sampling: settings, penalty window, `pos - step` (constant in a generation), the
    /// position it was recorded at, and the plan.
    sampled: Option<(SampleParams, u32, u32, u32, Plan)>,
}

/// A model loaded onto a GPU, with its KV cache.
#[derive(Debug)]
pub struct GpuModel {
    gpu: Gpu,
    cfg: Config,
    combine: Combine,
    split: Split,
    /// The variant choices (the device's, or what [`GpuModel::set_tuning`] gave).
    tuning: Tuning,
    prefill: Prefill,
    /// Tokens per recorded prompt chunk.
    chunk: u32,
    embd: GpuMatrix,
    output: Option<GpuMatrix>,
    output_norm: u32,
    /// Llama 3.x's RoPE frequency divisors (float offset in `vecs`), where the model has them.
    rope_freqs: Option<u32>,
    layers: Vec<Layer>,
    /// Per layer: the key and value caches (n_kv_head, capacity, head_dim).
    caches: Vec<[wgpu::Buffer; 2]>,
    /// Every norm weight, bias and RoPE frequency divisor (f32), at their offsets.
    vecs: wgpu::Buffer,
    s: Scratch,
    capacity: u32,
    attn: AttnOptions,
    /// Built once the model exists (recording them needs it).
    plans: Option<DecodePlans>,
    /// Decode steps per submit.
    batch: u32,
    /// Whether a decode step prepares each product's input in its GEMV (`gemv_prep`).
    fused: bool,
    /// Seconds of GPU time per prompt token, once measured (sizes a prompt's submits).
    secs_per_token: Option<f64>,
    /// Pipelines created when the pipeline cache was last written to disk.
    cached_pipelines: u64,
    /// What the model needs on the GPU, as planned before loading.
    needs: MemoryNeeds,
    /// What went wrong on the side without stopping generation (a pipeline cache that could not
    /// be written), until the caller takes it.
    warnings: Vec<String>,
}

impl GpuModel {
    /// Uploads the weights of `file` and allocates a KV cache of `capacity` positions.
    /// `progress` is called with (tensors done, tensors in all).
    pub fn load(
        gpu: &Gpu,
        file: &GgufFile,
        cfg: &Config,
        capacity: u32,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<GpuModel> {
        let attn = AttnOptions::for_gpu(gpu, cfg, KvType::F16);
        Self::load_with(gpu, file, cfg, capacity, attn, progress)
    }

    /// [`GpuModel::load`] with attention options (the cache type, when to split): the mapped
    /// file fed to a [`GpuLoader`] (in slices, so that `progress` moves).
    pub fn load_with(
        gpu: &Gpu,
        file: &GgufFile,
        cfg: &Config,
        capacity: u32,
        attn: AttnOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<GpuModel> {
        let mut loader = GpuLoader::new(gpu, file.header(), cfg, capacity, attn)?;
        // The header checked that every tensor lies inside the file.
        let end = usize::try_from(loader.file_len()).expect("the file's length fits in memory");
        for slice in file.bytes()[..end].chunks(FEED_BYTES) {
            loader.write(slice)?;
            let (done, total) = loader.progress();
            progress(done, total);
        }
        loader.finish()
    }

    /// Bytes of the KV cache and of the scratch a model with `cfg` creates for `capacity`
    /// positions (checked against the device's limits, nothing created).
    pub(crate) fn activation_bytes(
        gpu: &Gpu,
        cfg: &Config,
        capacity: u32,
        attn: AttnOptions,
    ) -> Result<(u64, u64)> {
        let storage = wgpu::BufferUsages::STORAGE;
        let bytes = std::cell::Cell::new(0);
        let mut count = |label: &str, size: u64| {
            gpu.check_buffer_size(label, size, storage)?;
            bytes.set(bytes.get() + size.max(4).next_multiple_of(4));
            Ok(gpu.stand_in())
        };
        let act = Activations::new(gpu, cfg, capacity, attn);
        act.caches(cfg, &mut count)?;
        let kv = bytes.get();
        Scratch::new(cfg, &act, &mut count)?;
        Ok((kv, bytes.get() - kv + PLAN_BYTES))
    }

    /// The model from its uploaded weights: KV cache, scratch, and the decode plans (which
    /// create every pipeline and bind group a decode step uses, so no step creates one).
    fn assemble(w: Weights, vecs: wgpu::Buffer) -> Result<GpuModel> {
        let Weights {
            gpu,
            cfg,
            capacity,
            attn,
            embd,
            output,
            output_norm,
            rope_freqs,
            layers,
            needs,
        } = w;
        let storage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        let mut make = |label: &str, bytes: u64| gpu.create_buffer(label, bytes, storage);
        let act = Activations::new(&gpu, &cfg, capacity, attn);
        #[cfg(not(target_arch = "wasm32"))]
        let scope = gpu
            .device()
            .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let caches = act.caches(&cfg, &mut make);
        let s = Scratch::new(&cfg, &act, &mut make);
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::GpuMemory {
                needs,
                why: format!(
                    "but the device ran out of memory creating the KV cache and scratch ({e})"
                ),
            });
        }
        let (caches, s) = (caches?, s?);
        let (prefill, chunk) = (act.prefill, act.chunk);
        let mut model = GpuModel {
            combine: Combine::best(&gpu),
            split: Split::best(&gpu),
            tuning: gpu.tuning().clone(),
            prefill,
            chunk,
            embd,
            output,
            output_norm,
            rope_freqs,
            layers,
            caches,
            vecs,
            s,
            capacity,
            attn,
            plans: None,
            batch: gpu.tuning().decode_batch(&cfg, DECODE_BATCH),
            fused: gpu.tuning().fused(&cfg),
            secs_per_token: None,
            cached_pipelines: 0,
            warnings: Vec::new(),
            needs,
            cfg,
            gpu,
        };
        model.build_plans()?;
        Ok(model)
    }

    /// Records the decode step once per attention layout that positions within the cache
    /// reach, and the greedy choice, and freezes them into plans.
    fn build_plans(&mut self) -> Result<()> {
        // Natively, wait for the driver's verdict on the pipelines and bind groups created
        // here (a browser cannot wait: errors reach the device's handler, checked at the first
        // readback).
        #[cfg(not(target_arch = "wasm32"))]
        let scope = self
            .gpu
            .device()
            .push_error_scope(wgpu::ErrorFilter::Validation);
        let mut layouts: Vec<(u32, [bool; 2])> = Vec::new();
        for pos in 0..self.capacity.saturating_sub(1) {
            let layout = self.layout_at(pos);
            if layouts.last().is_none_or(|l| l.1 != layout) {
                layouts.push((pos, layout));
            }
        }
        let mut recorded = Vec::with_capacity(layouts.len());
        for &(pos, layout) in &layouts {
            let mut rec = self.gpu.plan_recorder();
            let st = self.record_chunk(&mut rec, pos, 1, None)?;
            self.record_head(&mut rec, st, 0)?;
            recorded.push((pos, layout, rec));
        }
        let mut greedy = self.gpu.plan_recorder();
        self.record_choice(&mut greedy, &Choice::Greedy, 1)?;
        // Room for the parameters of the most position-dependent dispatches a batch replays:
        // its steps' and the sampled choice's (one per step, recorded later: its kernel's
        // parameters, at an aligned slot).
        let align = self.gpu.limits().min_uniform_buffer_offset_alignment as usize;
        let choice = KernelSpec::find(&sample_key())?
            .bindings
            .iter()
            .filter(|b| b.kind == BindingKind::Uniform)
            .map(|b| {
                (b.min_size as usize)
                    .next_multiple_of(16)
                    .next_multiple_of(align)
            })
            .sum::<usize>();
        let per_step = recorded
            .iter()
            .map(|(_, _, r)| r.shifting_bytes())
            .max()
            .unwrap_or(0)
            + choice.max(greedy.shifting_bytes());
        let arena = StepArena::new(&self.gpu, per_step * MAX_DECODE_BATCH as usize)?;
        let mut bodies = Vec::with_capacity(recorded.len());
        for (pos, layout, rec) in recorded {
            bodies.push((pos, layout, rec.into_plan(&arena)?));
        }
        let greedy = greedy.into_plan(&arena)?;
        self.plans = Some(DecodePlans {
            arena,
            bodies,
            greedy,
            sampled: None,
        });
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(e.to_string()));
        }
        self.gpu.check()
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// What the model was planned to need on the GPU (see [`GpuLoader::memory_needs`]).
    pub fn memory_needs(&self) -> MemoryNeeds {
        self.needs
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// How chunks of several tokens multiply their weights (default: [`crate::tune::Tuning::prefill`]).
    pub fn set_prefill(&mut self, prefill: Prefill) {
        self.prefill = prefill;
    }

    /// Decode steps recorded into one submit (1 to [`MAX_DECODE_BATCH`]; default
    /// [`DECODE_BATCH`]).
    pub fn set_decode_batch(&mut self, n: u32) -> Result<()> {
        check_decode_batch(n)?;
        self.batch = n;
        Ok(())
    }

    /// Decode steps per submit.
    pub fn decode_batch(&self) -> u32 {
        self.batch
    }

    /// Whether a decode step prepares each product's input inside its GEMV (one dispatch per
    /// product, at most 6 per layer) or in a `prep` dispatch before it (10 per layer); the
    /// default is [`crate::tune::Tuning::fused`]'s. The decode plans are built again on a change.
    pub fn set_fused(&mut self, on: bool) -> Result<()> {
        if on != self.fused {
            self.fused = on;
            self.build_plans()?;
        }
        Ok(())
    }

    /// Whether decode steps run the fused GEMVs.
    pub fn fused(&self) -> bool {
        self.fused
    }

    /// The variant choices as this model runs them and where they came from (JSON, for
    /// reports): [`crate::tune::Tuning::report`] with the model's own settings.
    pub fn tuning_report(&self) -> serde_json::Value {
        let mut v = self.tuning.report(&self.cfg, self.batch);
        v["fused"] = self.fused.into();
        v["prefill"] = prefill_word(self.prefill).into();
        v["attn_split"] = self.attn.split_min_len.into();
        v
    }

    /// The variant choices this model runs with, and the profile they came from.
    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }

    /// Runs with `tuning`'s choices from now on (a tuner tries candidates this way): its
    /// decode-product variants, fusing, prefill and decode batch; the decode plans are built
    /// again. Attention's split is fixed at load ([`AttnOptions`]).
    pub fn set_tuning(&mut self, tuning: Tuning) -> Result<()> {
        self.prefill = tuning.prefill(&self.cfg);
        self.fused = tuning.fused(&self.cfg);
        self.batch = tuning.decode_batch(&self.cfg, DECODE_BATCH);
        self.tuning = tuning;
        self.build_plans()
    }

    /// The distinct decode-step products whose variant a profile chooses, as the step runs
    /// them with fusing `fused`: (op, format, rows, k). Products on f32 activations (f16 and
    /// f32 weights) have no variants to choose.
    pub fn gemv_cases(&self, fused: bool) -> Vec<(GemvOp, WType, u32, u32)> {
        let single = |m: &GpuMatrix| {
            if fused && takes(m.wtype, m.k) {
                GemvOp::Prep
            } else {
                GemvOp::Q8
            }
        };
        let mut all: Vec<(GemvOp, &GpuMatrix)> = Vec::new();
        for l in &self.layers {
            match &l.qkv {
                Qkv::One(m) => all.push((single(m), m)),
                Qkv::Apart(ms) => all.extend(ms.iter().map(|m| (single(m), m))),
            }
            all.push((single(&l.o), &l.o));
            if l.gate.pairs_with(&l.up) {
                let op = if fused && takes(l.gate.wtype, l.gate.k) {
                    GemvOp::PrepGated
                } else {
                    GemvOp::Gated
                };
                all.push((op, &l.gate));
            } else {
                all.extend([(GemvOp::Q8, &l.gate), (GemvOp::Q8, &l.up)]);
            }
            all.push((single(&l.down), &l.down));
        }
        all.push((GemvOp::Q8, self.output.as_ref().unwrap_or(&self.embd)));
        let mut cases = Vec::new();
        for (op, m) in all {
            let case = (op, m.wtype, m.rows, m.k);
            if ActQuant::for_weights(m.wtype).is_some() && !cases.contains(&case) {
                cases.push(case);
            }
        }
        cases
    }

    /// Dispatches of one decode step as planned at position `pos` (without the choice).
    pub fn decode_dispatches(&self, pos: u32) -> usize {
        let plans = self.plans();
        plans.bodies[self.body_at(pos)].2.dispatches()
    }

    fn plans(&self) -> &DecodePlans {
        self.plans.as_ref().expect("built at load")
    }

    /// Runs `tokens` at positions `pos0..`, and chooses the next token on the GPU (or returns
    /// the last position's logits), as `choice` says; NaN or +inf logits are
    /// [`Error::NonFinite`]. Passing no tokens continues from the token the previous step
    /// chose, already on the GPU. Blocks on the readback (native only;
    /// see [`GpuModel::step_async`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn step(
        &mut self,
        tokens: &[u32],
        pos0: u32,
        n_new: u32,
        choice: &Choice,
    ) -> Result<StepOutput> {
        pollster::block_on(self.step_async(tokens, pos0, n_new, choice))
    }

    /// [`GpuModel::step`] awaiting the readback instead of blocking on it: the form a browser
    /// runs (its readbacks resolve in the event loop).
    pub async fn step_async(
        &mut self,
        tokens: &[u32],
        pos0: u32,
        n_new: u32,
        choice: &Choice,
    ) -> Result<StepOutput> {
        let back = self.submit_prompt(tokens, pos0, n_new, choice).await?;
        let bytes = back.bytes().await?;
        self.save_pipelines();
        if matches!(choice, Choice::Logits) {
            return Ok(StepOutput::Logits(bytemuck::pod_collect_to_vec(&bytes)));
        }
        match u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) {
            NON_FINITE_ID => Err(Error::NonFinite {
                position: pos0 + n_new - 1,
            }),
            id => Ok(StepOutput::Token(id)),
        }
    }

    /// Records and submits `n_new` positions from `pos0` (`tokens` written first, unless
    /// empty) in chunks, ending with the choice; returns the readback of the chosen id (or of
    /// the logits). A long prompt is split over several submits of about [`SUBMIT_SECONDS`]
    /// each, measured on the first (so no submit can trip a driver's timeout).
    pub async fn submit_prompt(
        &mut self,
        tokens: &[u32],
        pos0: u32,
        n_new: u32,
        choice: &Choice,
    ) -> Result<Readback> {
        if n_new == 0 || pos0 + n_new > self.capacity {
            return Err(Error::ContextFull {
                capacity: self.capacity,
            });
        }
        if !tokens.is_empty() {
            if tokens.len() as u32 != n_new {
                return Err(Error::Shape {
                    op: "step",
                    detail: format!("{} tokens for {n_new} positions", tokens.len()),
                });
            }
            self.cfg.check_tokens("step", tokens)?;
            self.gpu.write(
                &self.s.tokens,
                u64::from(pos0) * 4,
                bytemuck::cast_slice(tokens),
            );
        }
        let mut rec = self.gpu.recorder();
        let mut in_submit = 0;
        let mut done = 0;
        loop {
            let n = self.chunk.min(n_new - done);
            let st = self.record_chunk(&mut rec, pos0 + done, n, None)?;
            done += n;
            in_submit += n;
            if done == n_new {
                self.record_head(&mut rec, st, n - 1)?;
                let slot = pos0 + n_new;
                self.record_choice(&mut rec, choice, slot)?;
                let view = match choice {
                    Choice::Logits => View::new(&self.s.logits, 0, u64::from(self.cfg.vocab) * 4),
                    _ => View::new(&self.s.tokens, u64::from(slot) * 4, 4),
                };
                let back = rec.read(view)?;
                rec.submit()?;
                return Ok(back);
            }
            let limit = self
                .secs_per_token
                .map_or(self.chunk, |s| self.tokens_per_submit(s));
            if in_submit >= limit {
                let started = Instant::now();
                rec.submit()?;
                if self.secs_per_token.is_none() {
                    // The first long prompt measures how long a chunk takes.
                    self.gpu.idle().await?;
                    let secs = started.elapsed().as_secs_f64() / f64::from(in_submit);
                    self.secs_per_token = Some(secs.max(1e-9));
                }
                rec = self.gpu.recorder();
                in_submit = 0;
            }
        }
    }

    /// Runs `tokens` as a prompt from position 0, chunk by chunk as [`GpuModel::step`] does,
    /// and reads back, per layer, attention's output (`kqv_out`), the residual stream after the
    /// attention block (`sa_out`), the FFN's down projection before its post-norm (`ffn_out`)
    /// and the residual stream after the layer (`l_out`), then the final norm of every position
    /// (`result_norm`), named as llama.cpp's graph names them. The other ops' inputs exist on
    /// the GPU only as int8 units. One submit per chunk; for debugging, not generation.
    pub async fn trace_prompt(&mut self, tokens: &[u32]) -> Result<Vec<Traced>> {
        let n_new = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        if n_new == 0 || n_new > self.capacity {
            return Err(Error::ContextFull {
                capacity: self.capacity,
            });
        }
        self.cfg.check_tokens("trace", tokens)?;
        self.gpu
            .write(&self.s.tokens, 0, bytemuck::cast_slice(tokens));
        let d = self.cfg.d_model;
        let mut trace = Vec::new();
        let mut done = 0;
        while done < n_new {
            let n = self.chunk.min(n_new - done);
            let mut rec = self.gpu.recorder();
            let mut reads = Vec::new();
            let st = self.record_chunk(&mut rec, done, n, Some(&mut reads))?;
            // The last layer's residual add, stored, and the final norm as f32 rows (a step
            // prepares only its last row, as int8 units for the output matrix).
            let s = &self.s;
            let input = self.block_input(&st, self.output_norm);
            prep(&mut rec, &input, PrepOut::F32((&s.xn).into()), n)?;
            let last = format!("l_out-{}", self.cfg.n_layer - 1);
            reads.push((last, d, rec.read(rows(&s.x[st.cur ^ 1], n, d))?));
            reads.push(("result_norm".into(), d, rec.read(rows(&s.xn, n, d))?));
            rec.submit()?;
            for (name, width, back) in reads {
                let bytes = back.bytes().await?;
                append(
                    &mut trace,
                    name,
                    width as usize,
                    &bytemuck::pod_collect_to_vec::<u8, f32>(&bytes),
                );
            }
            done += n;
        }
        self.save_pipelines();
        Ok(trace)
    }

    /// Whole chunks per submit for about [`SUBMIT_SECONDS`] of GPU time, at least one.
    fn tokens_per_submit(&self, secs_per_token: f64) -> u32 {
        let tokens = (SUBMIT_SECONDS / secs_per_token).min(f64::from(u32::MAX / 2)) as u32;
        (tokens / self.chunk).max(1) * self.chunk
    }

    /// Submits `n` decode steps at positions `pos..pos + n`: each embeds the token at its
    /// position (the previous step's choice, already on the GPU) and chooses the next, as
    /// `choice` says for the first of them (a sampled choice's step counts on by one per step).
    /// One submit; the returned readback holds the `n` chosen ids (4 bytes each).
    pub fn submit_decode(&mut self, pos: u32, n: u32, choice: &Choice) -> Result<Readback> {
        if n == 0 || n > MAX_DECODE_BATCH || pos + n >= self.capacity {
            return Err(Error::ContextFull {
                capacity: self.capacity,
            });
        }
        // The chooser's plan and the position it was recorded at.
        let chooser_at = match *choice {
            Choice::Greedy => 0,
            Choice::Sample {
                params,
                step,
                last_n,
            } => {
                let key = pos.wrapping_sub(step);
                let fresh = self
                    .plans()
                    .sampled
                    .as_ref()
                    .is_some_and(|(p, l, k, _, _)| *p == params && *l == last_n && *k == key);
                if !fresh {
                    let mut rec = self.gpu.plan_recorder();
                    self.record_choice(&mut rec, choice, pos + 1)?;
                    let plan = rec.into_plan(&self.plans().arena)?;
                    if let Some(plans) = self.plans.as_mut() {
                        plans.sampled = Some((params, last_n, key, pos, plan));
                    }
                }
                self.plans().sampled.as_ref().map_or(pos, |s| s.3)
            }
            Choice::Logits => {
                return Err(Error::Unsupported(
                    "logits from a planned decode step (use step)".into(),
                ));
            }
        };
        let mut which = [0usize; MAX_DECODE_BATCH as usize];
        for (i, w) in which.iter_mut().take(n as usize).enumerate() {
            *w = self.body_at(pos + i as u32);
        }
        let read = View::new(&self.s.tokens, u64::from(pos + 1) * 4, u64::from(n) * 4);
        let sampled = matches!(choice, Choice::Sample { .. });
        let plans = self.plans.as_mut().expect("built at load");
        let DecodePlans {
            arena,
            bodies,
            greedy,
            sampled: sample_plan,
        } = plans;
        let chooser = match (sampled, sample_plan.as_ref()) {
            (true, Some(s)) => &s.4,
            _ => &*greedy,
        };
        let back = arena.submit(Some(read), |r| {
            for (i, &b) in which.iter().take(n as usize).enumerate() {
                let p = pos + i as u32;
                let (at, _, body) = &bodies[b];
                r.run(body, p - at)?;
                r.run(chooser, p - chooser_at)?;
            }
            Ok(())
        })?;
        Ok(back.expect("a readback was asked for"))
    }

    /// The key and value caches' bytes for positions `0..positions`, layer by layer (keys,
    /// then values; kv head by kv head): the state a context leaves, for comparing two runs.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn kv_prefix(&self, positions: u32) -> Result<Vec<u8>> {
        let positions = positions.min(self.capacity);
        let row = u64::from(self.cfg.head_dim) * self.attn.kv.bytes();
        let mut rec = self.gpu.recorder();
        let mut backs = Vec::new();
        for pair in &self.caches {
            for cache in pair {
                for h in 0..u64::from(self.cfg.n_kv_head) {
                    let at = h * u64::from(self.capacity) * row;
                    let len = u64::from(positions) * row;
                    if len > 0 {
                        backs.push(rec.read(View::new(cache, at, len))?);
                    }
                }
            }
        }
        rec.submit()?;
        let mut bytes = Vec::new();
        for back in backs {
            bytes.extend(back.wait()?);
        }
        Ok(bytes)
    }

    /// The ids in a decode readback's bytes ([`NON_FINITE_ID`] for a step whose logits held a
    /// NaN or +inf; the steps after it in the batch are garbage); persists the pipeline cache if pipelines were
    /// created since it was last written.
    pub fn tokens_from(&mut self, bytes: &[u8]) -> Result<Vec<u32>> {
        self.save_pipelines();
        Ok(bytemuck::pod_collect_to_vec(bytes))
    }

    /// A step that compiled new pipelines (the first prefill, the first sampled token)
    /// persists the pipeline cache, so the next run of the program skips compilation. A cache
    /// that cannot be written is a warning ([`Self::take_warnings`]), never a failed step.
    fn save_pipelines(&mut self) {
        let created = self.gpu.counters().pipelines_created;
        if created != self.cached_pipelines {
            self.cached_pipelines = created;
            if let Err(e) = self.gpu.save_pipeline_cache() {
                self.warnings.push(format!(
                    "the pipeline cache was not saved ({e}); the next run compiles its \
                     shaders again (KILN_CACHE_DIR chooses another folder)"
                ));
            }
        }
    }

    /// Takes the warnings collected so far (side effects that failed without stopping
    /// generation).
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// The layers that split attention at `pos` (local, global) for a decode step.
    fn layout_at(&self, pos: u32) -> [bool; 2] {
        [true, false].map(|local| self.splits(&self.attention(local, pos, 1)))
    }

    /// The index of the step plan for position `pos` (recorded at the first position of its
    /// attention layout).
    fn body_at(&self, pos: u32) -> usize {
        let layout = self.layout_at(pos);
        self.plans()
            .bodies
            .iter()
            .rposition(|(at, l, _)| *at <= pos && *l == layout)
            .expect("a plan for every layout positions reach")
    }

    /// The attention of `n` tokens from `pos0` in a local (windowed) or global layer.
    fn attention(&self, local: bool, pos0: u32, n: u32) -> Attention {
        let cfg = &self.cfg;
        Attention {
            n_head: cfg.n_head,
            n_kv_head: cfg.n_kv_head,
            head_dim: cfg.head_dim,
            capacity: self.capacity,
            n_tok: n,
            pos0,
            window: if local { cfg.window } else { 0 },
            scale: cfg.attn_scale,
            softcap: cfg.attn_softcap,
            kv: self.attn.kv,
        }
    }

    /// Whether attention `a` is split over the KV length.
    fn splits(&self, a: &Attention) -> bool {
        self.attn.split_min_len > 0 && Splits::plan(a, self.attn.split_min_len).count > 1
    }

    /// The input of a block's first product, from the residual stream: the pending block
    /// output added (stored to the other buffer) and RMS-normed with `norm`.
    fn block_input(&self, st: &Stream, norm: u32) -> PrepIn<'_> {
        let s = &self.s;
        PrepIn {
            x: (&s.x[st.cur]).into(),
            add: st.pending.map(|post| Add {
                t: (&s.t).into(),
                post,
            }),
            norm: Some(norm),
            vecs: Some((&self.vecs).into()),
            write: st.pending.map(|_| (&s.x[st.cur ^ 1]).into()),
            k: self.cfg.d_model,
            eps: self.cfg.eps,
            x_row0: 0,
        }
    }

    /// The int8 scratch as activations for `quant`.
    fn qact(&self, quant: ActQuant) -> QAct<'_> {
        QAct {
            quant,
            xq: (&self.s.xq).into(),
            xd: (&self.s.xd).into(),
            xs: (&self.s.xs).into(),
        }
    }

    /// Records the preparation of `m` rows of `input` for weights of `wtype`.
    fn prepared(
        &self,
        rec: &mut crate::gpu::Recorder,
        wtype: WType,
        input: &PrepIn<'_>,
        m: u32,
    ) -> Result<ActInput<'_>> {
        Ok(match ActQuant::for_weights(wtype) {
            Some(quant) => {
                let q = self.qact(quant);
                prep(rec, input, PrepOut::Q8(q), m)?;
                ActInput::Q8(q)
            }
            None => {
                let x: View<'_> = (&self.s.xn).into();
                prep(rec, input, PrepOut::F32(x), m)?;
                ActInput::F32(x)
            }
        })
    }

    /// Records `y[j, y_offset..] = mat · x[j]` for `m` prepared rows: the tiled matmul for
    /// several rows where the device prefers it, else a GEMV, one dispatch per part.
    #[allow(
        clippy::too_many_arguments,
        reason = "one argument per binding and shape"
    )]
    fn multiply(
        &self,
        rec: &mut crate::gpu::Recorder,
        mat: &GpuMatrix,
        x: ActInput<'_>,
        y: View<'_>,
        (y_stride, y_offset): (u32, u32),
        m: u32,
    ) -> Result<()> {
        for p in &mat.parts {
            let shape = GemvShape {
                wtype: mat.wtype,
                k: mat.k,
                rows: p.rows,
                m,
                y_stride,
                y_offset: y_offset + p.row0,
                accumulate: false,
            };
            let w = mat.view(p);
            match x {
                _ if m > 1 && self.prefill == Prefill::Tiled => matmul_q(rec, w, x, y, shape)?,
                ActInput::Q8(q) => {
                    let pick = self.pick(GemvOp::Q8, mat, m);
                    gemv_q8_with(rec, pick, w, q, y, shape)?
                }
                ActInput::F32(v) => gemv(rec, self.split, w, v, y, shape)?,
            }
        }
        Ok(())
    }

    /// The variant of a product `op` of `mat` over `m` tokens: the device's tuning for one
    /// token (a profile's winner for the shape), its default for a chunk.
    fn pick(&self, op: GemvOp, mat: &GpuMatrix, m: u32) -> GemvPick {
        if m == 1 {
            self.tuning.gemv(op, mat.wtype, mat.rows, mat.k)
        } else {
            self.tuning.default_gemv(op)
        }
    }

    /// Whether a product of `mat` over `m` tokens prepares its input in the GEMV: single-token
    /// steps with fusing on, where the fused kernels take the weights.
    fn fuses(&self, mat: &GpuMatrix, m: u32) -> bool {
        m == 1 && self.fused && takes(mat.wtype, mat.k)
    }

    /// Records `y[j, y_offset..] = mat · v[j]` with `v` the prepared `input`: for one token, one
    /// fused dispatch per part (`gemv_prep`) where fusing is on and the kernels take the
    /// weights; else `prep`
    /// and the product (several tokens: each workgroup of a fused GEMV would prepare every row
    /// again, while the dispatch it saves is shared by the chunk's tokens). Only the first part
    /// stores the new residual.
    fn project(
        &self,
        rec: &mut crate::gpu::Recorder,
        mat: &GpuMatrix,
        input: &PrepIn<'_>,
        y: View<'_>,
        (y_stride, y_offset): (u32, u32),
        m: u32,
    ) -> Result<()> {
        if !self.fuses(mat, m) {
            let x = self.prepared(rec, mat.wtype, input, m)?;
            return self.multiply(rec, mat, x, y, (y_stride, y_offset), m);
        }
        for (i, p) in mat.parts.iter().enumerate() {
            let input = if i == 0 {
                *input
            } else {
                PrepIn {
                    write: None,
                    ..*input
                }
            };
            let shape = GemvShape {
                wtype: mat.wtype,
                k: mat.k,
                rows: p.rows,
                m,
                y_stride,
                y_offset: y_offset + p.row0,
                accumulate: false,
            };
            gemv_prep(
                rec,
                self.pick(GemvOp::Prep, mat, m),
                mat.view(p),
                &input,
                y,
                shape,
            )?;
        }
        Ok(())
    }

    /// Records the gated FFN `hidden = act(gate · v) * (up · v)` on the prepared `input`: the
    /// fused `gemv_prep_gated` for one token where it takes the weights, else `prep` then
    /// `gemv_gated`, or (tiled prefill, unpaired weights) the two products and `gated`.
    fn ffn(
        &self,
        rec: &mut crate::gpu::Recorder,
        l: &Layer,
        act: Act,
        input: &PrepIn<'_>,
        m: u32,
    ) -> Result<()> {
        let s = &self.s;
        let ff = self.cfg.d_ff;
        let hidden: View<'_> = (&s.hidden).into();
        let tiled = m > 1 && self.prefill == Prefill::Tiled;
        let paired = l.gate.pairs_with(&l.up);
        if !tiled && paired {
            let fused = self.fuses(&l.gate, m);
            let x = if fused {
                None
            } else {
                Some(self.prepared(rec, l.gate.wtype, input, m)?)
            };
            for (i, (g, u)) in l.gate.parts.iter().zip(&l.up.parts).enumerate() {
                let shape = GatedShape {
                    wtype: l.gate.wtype,
                    act,
                    k: l.gate.k,
                    rows: g.rows,
                    m,
                    up_offset: (u.offset - g.offset) as u32,
                    y_stride: ff,
                    y_offset: g.row0,
                };
                let w: View<'_> = (&g.buffer).into();
                match x {
                    Some(x) => {
                        let split = self.pick(GemvOp::Gated, &l.gate, m).split;
                        gemv_gated(rec, split, w, x, hidden, shape)?
                    }
                    None => {
                        let input = if i == 0 {
                            *input
                        } else {
                            PrepIn {
                                write: None,
                                ..*input
                            }
                        };
                        let pick = self.pick(GemvOp::PrepGated, &l.gate, m);
                        gemv_prep_gated(rec, pick, w, &input, hidden, shape)?;
                    }
                }
            }
            return Ok(());
        }
        let x = self.prepared(rec, l.gate.wtype, input, m)?;
        self.multiply(rec, &l.gate, x, (&s.gate).into(), (ff, 0), m)?;
        let x = if ActQuant::for_weights(l.up.wtype) == ActQuant::for_weights(l.gate.wtype) {
            x
        } else {
            // The residual was stored by the first preparation.
            let again = PrepIn {
                write: None,
                ..*input
            };
            self.prepared(rec, l.up.wtype, &again, m)?
        };
        self.multiply(rec, &l.up, x, (&s.up).into(), (ff, 0), m)?;
        gated(rec, act, (&s.gate).into(), (&s.up).into(), hidden, m * ff)
    }

    /// Attention of the chunk's q against layer `il`'s cache into `att`: split over the KV
    /// length where the tokens see at least two minimal splits' worth of positions, else the
    /// tiled kernel for a prompt chunk (K and V read once per tile of query rows, not once per
    /// row) and the one-pass kernel for a decode step (whose f16-rounded weights match
    /// llama.cpp's arithmetic exactly).
    fn attend(&self, rec: &mut crate::gpu::Recorder, il: usize, a: Attention) -> Result<()> {
        let s = &self.s;
        let [kc, vc] = &self.caches[il];
        let (q, k, v, out) = ((&s.q).into(), kc.into(), vc.into(), (&s.att).into());
        if self.splits(&a) {
            let partials = (&s.partials).into();
            let rule = SplitRule::Planned(self.attn.split_min_len);
            attention_split(rec, q, k, v, partials, out, a, rule)
        } else if a.n_tok > 1 {
            attention_tiled(rec, q, k, v, out, a)
        } else {
            attention(rec, self.combine, q, k, v, (&s.scores).into(), out, a)
        }
    }

    /// Records the layers for `n` tokens at positions `pos0..` (their ids in the token
    /// buffer); returns where the residual stream ends. With `trace`, also the readbacks of the
    /// activations [`GpuModel::trace_prompt`] names, each with its row width (all but the last
    /// layer's `l_out`, which the next layer stores).
    fn record_chunk(
        &self,
        rec: &mut crate::gpu::Recorder,
        pos0: u32,
        n: u32,
        mut trace: Option<&mut Vec<(String, u32, Readback)>>,
    ) -> Result<Stream> {
        let cfg = &self.cfg;
        let s = &self.s;
        let (qd, kvd, ff) = (cfg.q_dim(), cfg.kv_dim(), cfg.d_ff);
        self.embd.embed(
            rec,
            (&s.tokens).into(),
            (&s.x[0]).into(),
            n,
            pos0,
            cfg.embed_scale,
        )?;
        let act = if cfg.arch == Arch::Gemma3 {
            Act::Gelu
        } else {
            Act::Silu
        };
        let vecs: View<'_> = (&self.vecs).into();
        let mut st = Stream {
            cur: 0,
            pending: None,
        };
        for (il, l) in self.layers.iter().enumerate() {
            // Attention block: q|k|v from the prepared stream, then rope_kv and attention.
            let input = self.block_input(&st, l.attn_norm);
            let row = qd + 2 * kvd;
            let qkv: View<'_> = (&s.qkv).into();
            match &l.qkv {
                Qkv::One(m) => self.project(rec, m, &input, qkv, (row, 0), n)?,
                Qkv::Apart(ms) => {
                    for (i, (m, at)) in ms.iter().zip([0, qd, qd + kvd]).enumerate() {
                        let input = if i == 0 {
                            input
                        } else {
                            PrepIn {
                                write: None,
                                ..input
                            }
                        };
                        self.project(rec, m, &input, qkv, (row, at), n)?;
                    }
                }
            }
            if st.pending.is_some() {
                st.cur ^= 1;
                if let Some(t) = trace.as_deref_mut() {
                    let back = rec.read(rows(&s.x[st.cur], n, cfg.d_model))?;
                    t.push((format!("l_out-{}", il - 1), cfg.d_model, back));
                }
            }
            let [kc, vc] = &self.caches[il];
            let r = RopeKv {
                n_head: cfg.n_head,
                n_kv_head: cfg.n_kv_head,
                head_dim: cfg.head_dim,
                rot_dims: cfg.rope_dims,
                n_tok: n,
                pos0,
                capacity: self.capacity,
                layout: cfg.rope_layout,
                kv: self.attn.kv,
                base: if l.local {
                    cfg.rope_base_local
                } else {
                    cfg.rope_base
                },
                freq_scale: if l.local { 1.0 } else { cfg.rope_freq_scale },
                eps: cfg.eps,
                bias: l.bias,
                qk_norm: l.qk_norm,
                freq_factors: self.rope_freqs,
            };
            rope_kv(rec, qkv, Some(vecs), (&s.q).into(), kc.into(), vc.into(), r)?;
            self.attend(rec, il, self.attention(l.local, pos0, n))?;
            if let Some(t) = trace.as_deref_mut() {
                t.push((format!("kqv_out-{il}"), qd, rec.read(rows(&s.att, n, qd))?));
            }
            self.project(
                rec,
                &l.o,
                &PrepIn::plain((&s.att).into(), qd),
                (&s.t).into(),
                (cfg.d_model, 0),
                n,
            )?;
            st.pending = Some(l.post_attn_norm);
            // FFN block.
            let input = self.block_input(&st, l.ffn_norm);
            self.ffn(rec, l, act, &input, n)?;
            st.cur ^= 1;
            if let Some(t) = trace.as_deref_mut() {
                let back = rec.read(rows(&s.x[st.cur], n, cfg.d_model))?;
                t.push((format!("sa_out-{il}"), cfg.d_model, back));
            }
            self.project(
                rec,
                &l.down,
                &PrepIn::plain((&s.hidden).into(), ff),
                (&s.t).into(),
                (cfg.d_model, 0),
                n,
            )?;
            if let Some(t) = trace.as_deref_mut() {
                let back = rec.read(rows(&s.t, n, cfg.d_model))?;
                t.push((format!("ffn_out-{il}"), cfg.d_model, back));
            }
            st.pending = Some(l.post_ffn_norm);
        }
        Ok(st)
    }

    /// Records the logits of row `row` of a chunk that ended at `st`: the last block's
    /// residual add and the final norm prepared for the output matrix, then its GEMV.
    fn record_head(&self, rec: &mut crate::gpu::Recorder, st: Stream, row: u32) -> Result<()> {
        let input = PrepIn {
            x_row0: row,
            write: None,
            ..self.block_input(&st, self.output_norm)
        };
        let output = self.output.as_ref().unwrap_or(&self.embd);
        let x = self.prepared(rec, output.wtype, &input, 1)?;
        self.multiply(
            rec,
            output,
            x,
            (&self.s.logits).into(),
            (self.cfg.vocab, 0),
            1,
        )
    }

    /// Records the choice of the token for `slot` from the logits.
    fn record_choice(
        &self,
        rec: &mut crate::gpu::Recorder,
        choice: &Choice,
        slot: u32,
    ) -> Result<()> {
        let s = &self.s;
        match *choice {
            Choice::Greedy | Choice::Logits => argmax(
                rec,
                (&s.logits).into(),
                (&s.tokens).into(),
                self.cfg.vocab,
                slot,
            ),
            Choice::Sample {
                params,
                step,
                last_n,
            } => sample(
                rec,
                (&s.logits).into(),
                (&s.tokens).into(),
                self.cfg.vocab,
                last_n,
                slot,
                step,
                &params,
            ),
        }
    }
}

/// The first `n` rows of `width` floats of `buffer`.
fn rows(buffer: &wgpu::Buffer, n: u32, width: u32) -> View<'_> {
    View::new(buffer, 0, u64::from(n) * u64::from(width) * 4)
}
