//! The forward pass on the GPU: weights in their GGUF block formats, the f16 KV cache and every
//! activation stay resident; a step (a prompt chunk or one decoded token) is recorded into one
//! submit that ends with the next token chosen on the GPU, so a decode step reads back 4 bytes.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::gpu::{Gpu, View};
use crate::model::config::{Arch, Config, LayerWeights};
use crate::ops::activation::{Act, add_inplace, gated};
use crate::ops::attention::{
    Attention, KvType, SPLIT_MIN_LEN, Splits, attention, attention_split, attention_tiled,
    kv_store, partials_bytes,
};
use crate::ops::gemv::{
    ActInput, ActQuant, EmbedShape, GemvShape, QAct, Split, WType, embed, gemv, gemv_q8, quantize,
};
use crate::ops::gemv_gated::{GatedShape, gemv_gated};
use crate::ops::matmul_q::{Prefill, matmul_q};
use crate::ops::norm::rms_norm;
use crate::ops::reduce::Combine;
use crate::ops::rope::{Rope, rope};
use crate::ops::sample::{SampleParams, argmax, sample};

mod load;

pub use load::GpuLoader;

/// Bytes of a mapped file [`GpuModel::load_with`] hands its loader at a time.
const FEED_BYTES: usize = 16 << 20;

/// Prompt tokens processed per recorded chunk.
pub const CHUNK: u32 = 32;

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
    /// What suits the device: no split on CPU adapters (lavapipe), whose few cores gain
    /// nothing from more workgroups (there a split decode step at 2048 positions took 2.3x
    /// the one-pass kernel's time), [`SPLIT_MIN_LEN`] on GPUs.
    /// The cache is `kv`, except f32 where the device lacks SHADER_F16 (the f16 cache's kernels
    /// need it; e.g. Chromium's SwiftShader, some mobile GPUs).
    pub fn for_gpu(gpu: &Gpu, kv: KvType) -> AttnOptions {
        let cpu = gpu.adapter_info().device_type == wgpu::DeviceType::Cpu;
        AttnOptions {
            kv: if gpu.capabilities().f16 {
                kv
            } else {
                KvType::F32
            },
            split_min_len: if cpu { 0 } else { SPLIT_MIN_LEN },
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
/// The gate and up matrices of an FFN share their parts' buffers (see
/// [`GpuLoader`]).
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

    /// Records `out[j, :] = act(Wg x[j, :]) * (Wu x[j, :])` with `self` as Wg, in one
    /// dispatch per part, when `up` shares its buffers (see [`GpuLoader`]);
    /// returns false, recording nothing, when it does not.
    #[allow(
        clippy::too_many_arguments,
        reason = "one argument per binding and shape"
    )]
    fn gated(
        &self,
        rec: &mut crate::gpu::Recorder,
        up: &GpuMatrix,
        split: Split,
        act: Act,
        acts: &Acts,
        x: View<'_>,
        out: View<'_>,
        m: u32,
    ) -> Result<bool> {
        let paired = self.parts.len() == up.parts.len()
            && self
                .parts
                .iter()
                .zip(&up.parts)
                .all(|(g, u)| g.buffer == u.buffer && g.rows == u.rows);
        if !paired {
            return Ok(false);
        }
        let input = match ActQuant::for_weights(self.wtype) {
            Some(quant) => ActInput::Q8(acts.get(quant)),
            None => ActInput::F32(x),
        };
        for (g, u) in self.parts.iter().zip(&up.parts) {
            let shape = GatedShape {
                wtype: self.wtype,
                act,
                k: self.k,
                rows: g.rows,
                m,
                up_offset: (u.offset - g.offset) as u32,
                y_stride: self.rows,
                y_offset: g.row0,
            };
            gemv_gated(rec, split, (&g.buffer).into(), input, out, shape)?;
        }
        Ok(true)
    }

    /// Records `y[j, :] (+)= W x[j, :]` for `m` activation rows; `x` must have been prepared
    /// (quantized for this matrix's type) by [`Acts::prepare`].
    #[allow(
        clippy::too_many_arguments,
        reason = "one argument per binding and shape"
    )]
    fn gemv(
        &self,
        rec: &mut crate::gpu::Recorder,
        (split, prefill): (Split, Prefill),
        acts: &Acts,
        x: View<'_>,
        y: View<'_>,
        m: u32,
        accumulate: bool,
    ) -> Result<()> {
        for p in &self.parts {
            let shape = GemvShape {
                wtype: self.wtype,
                k: self.k,
                rows: p.rows,
                m,
                y_stride: self.rows,
                y_offset: p.row0,
                accumulate,
            };
            let w = self.view(p);
            let input = match ActQuant::for_weights(self.wtype) {
                Some(quant) => ActInput::Q8(acts.get(quant)),
                None => ActInput::F32(x),
            };
            // Several rows (prefill) where the device prefers it: the tiled matmul reads each
            // weight unit once per tile of rows; else the GEMV.
            match input {
                _ if m > 1 && prefill == Prefill::Tiled => matmul_q(rec, w, input, y, shape)?,
                ActInput::Q8(q) => gemv_q8(rec, split, w, q, y, shape)?,
                ActInput::F32(x) => gemv(rec, split, w, x, y, shape)?,
            }
        }
        Ok(())
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

/// Scratch for activations quantized to each int8 format, sized for CHUNK rows of the widest
/// input.
#[derive(Debug)]
struct Acts {
    sets: Vec<(ActQuant, [wgpu::Buffer; 3])>,
}

impl Acts {
    fn new(gpu: &Gpu, max_k: u32) -> Result<Acts> {
        let (bq, bd, bs) = QAct::sizes(CHUNK, max_k);
        let usage = wgpu::BufferUsages::STORAGE;
        let mut sets = Vec::new();
        for quant in [ActQuant::Q8_0, ActQuant::Q8_1, ActQuant::Q8K] {
            sets.push((
                quant,
                [
                    gpu.create_buffer("xq", bq, usage)?,
                    gpu.create_buffer("xd", bd, usage)?,
                    gpu.create_buffer("xs", bs, usage)?,
                ],
            ));
        }
        Ok(Acts { sets })
    }

    fn get(&self, quant: ActQuant) -> QAct<'_> {
        let (_, [xq, xd, xs]) = self
            .sets
            .iter()
            .find(|(q, _)| *q == quant)
            .expect("a set for every format");
        QAct {
            quant,
            xq: xq.into(),
            xd: xd.into(),
            xs: xs.into(),
        }
    }

    /// Quantizes `x` (m, k) once for each int8 format the given matrices need.
    fn prepare(
        &self,
        rec: &mut crate::gpu::Recorder,
        x: View<'_>,
        m: u32,
        mats: &[&GpuMatrix],
    ) -> Result<()> {
        // At most one quantization per int8 format (3 of them), tracked without allocating.
        let mut done = [None; 3];
        for mat in mats {
            if let Some(quant) = ActQuant::for_weights(mat.wtype)
                && !done.contains(&Some(quant))
            {
                quantize(rec, x, self.get(quant), m, mat.k)?;
                if let Some(slot) = done.iter_mut().find(|d| d.is_none()) {
                    *slot = Some(quant);
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Layer {
    w: LayerWeights<GpuMatrix, wgpu::Buffer>,
    k_cache: wgpu::Buffer,
    v_cache: wgpu::Buffer,
}

/// Activations, allocated once for chunks of up to [`CHUNK`] tokens.
#[derive(Debug)]
struct Scratch {
    x: wgpu::Buffer,
    xn: wgpu::Buffer,
    q: wgpu::Buffer,
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    qn: wgpu::Buffer,
    kn: wgpu::Buffer,
    att: wgpu::Buffer,
    tmp: wgpu::Buffer,
    tmp2: wgpu::Buffer,
    gate: wgpu::Buffer,
    up: wgpu::Buffer,
    hidden: wgpu::Buffer,
    last: wgpu::Buffer,
    last_norm: wgpu::Buffer,
    logits: wgpu::Buffer,
    /// The one-pass decode kernel's scores (n_head, capacity).
    scores: wgpu::Buffer,
    /// Split attention's partial results, for CHUNK tokens and the most splits.
    partials: wgpu::Buffer,
    tokens: wgpu::Buffer,
    /// The repetition penalty's window of recent ids.
    recent: wgpu::Buffer,
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

/// A model loaded onto a GPU, with its KV cache.
#[derive(Debug)]
pub struct GpuModel {
    gpu: Gpu,
    cfg: Config,
    combine: Combine,
    split: Split,
    prefill: Prefill,
    acts: Acts,
    embd: GpuMatrix,
    output: Option<GpuMatrix>,
    output_norm: wgpu::Buffer,
    layers: Vec<Layer>,
    s: Scratch,
    capacity: u32,
    attn: AttnOptions,
    /// Pipelines created when the pipeline cache was last written to disk.
    cached_pipelines: u64,
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
        let attn = AttnOptions::for_gpu(gpu, KvType::F16);
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

    /// Creates the pipelines of a one-token chunk (the GEMVs; a prompt's chunks use the tiled
    /// matmul instead) by recording one and dropping it unsubmitted, so that no decode step
    /// compiles a pipeline, even after a prefill that never ran a one-token chunk.
    fn prewarm_decode(&self) -> Result<()> {
        let mut rec = self.gpu.recorder();
        self.record_chunk(&mut rec, 0, 1)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// How chunks of several tokens multiply their weights (default: [`Prefill::best`]).
    pub fn set_prefill(&mut self, prefill: Prefill) {
        self.prefill = prefill;
    }

    /// Runs `tokens` at positions `pos0..`, in chunks of [`CHUNK`], all in one submit, and
    /// chooses the next token on the GPU (or returns the last position's logits), as `choice`
    /// says. Passing no tokens continues from the token the previous step chose, already on the
    /// GPU. Blocks on the readback (native only; see [`GpuModel::step_async`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn step(
        &mut self,
        tokens: &[u32],
        pos0: u32,
        n_new: u32,
        choice: &Choice,
    ) -> Result<StepOutput> {
        let (back, want_logits) = self.submit_step(tokens, pos0, n_new, choice)?;
        let bytes = pollster::block_on(back.bytes())?;
        self.finish_step(&bytes, want_logits)
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
        let (back, want_logits) = self.submit_step(tokens, pos0, n_new, choice)?;
        let bytes = back.bytes().await?;
        self.finish_step(&bytes, want_logits)
    }

    /// Records and submits a step; returns its readback and whether it carries the logits.
    fn submit_step(
        &mut self,
        tokens: &[u32],
        pos0: u32,
        n_new: u32,
        choice: &Choice,
    ) -> Result<(crate::gpu::Readback, bool)> {
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
            if let Some(bad) = tokens.iter().find(|&&t| t >= self.cfg.vocab) {
                return Err(Error::Shape {
                    op: "step",
                    detail: format!(
                        "token id {bad} is outside the vocabulary of {}",
                        self.cfg.vocab
                    ),
                });
            }
            self.gpu.write(
                &self.s.tokens,
                u64::from(pos0) * 4,
                bytemuck::cast_slice(tokens),
            );
        }
        let mut rec = self.gpu.recorder();
        let mut done = 0;
        while done < n_new {
            let n = CHUNK.min(n_new - done);
            self.record_chunk(&mut rec, pos0 + done, n)?;
            done += n;
        }
        let cfg = &self.cfg;
        let s = &self.s;
        let d = u64::from(cfg.d_model) * 4;
        rec.copy(
            View::new(
                &s.x,
                u64::from(n_new - 1 - (n_new - 1) / CHUNK * CHUNK) * d,
                d,
            ),
            (&s.last).into(),
        )?;
        rms_norm(
            &mut rec,
            self.combine,
            (&s.last).into(),
            (&self.output_norm).into(),
            (&s.last_norm).into(),
            1,
            cfg.d_model,
            cfg.eps,
            0.0,
        )?;
        let output = self.output.as_ref().unwrap_or(&self.embd);
        self.acts
            .prepare(&mut rec, (&s.last_norm).into(), 1, &[output])?;
        output.gemv(
            &mut rec,
            (self.split, self.prefill),
            &self.acts,
            (&s.last_norm).into(),
            (&s.logits).into(),
            1,
            false,
        )?;
        let next_slot = pos0 + n_new;
        match *choice {
            Choice::Greedy | Choice::Logits => argmax(
                &mut rec,
                (&s.logits).into(),
                (&s.tokens).into(),
                cfg.vocab,
                next_slot,
            )?,
            Choice::Sample {
                params,
                step,
                last_n,
            } => {
                // The penalty window: the last `last_n` ids (prompt included), copied out of
                // the token buffer (copies need only 4-byte alignment, bindings 256).
                let n_recent = last_n.min(next_slot);
                if n_recent > 0 {
                    rec.copy(
                        View::new(
                            &s.tokens,
                            u64::from(next_slot - n_recent) * 4,
                            u64::from(n_recent) * 4,
                        ),
                        View::new(&s.recent, 0, u64::from(n_recent) * 4),
                    )?;
                }
                sample(
                    &mut rec,
                    (&s.logits).into(),
                    (&s.recent).into(),
                    (&s.tokens).into(),
                    cfg.vocab,
                    n_recent,
                    next_slot,
                    step,
                    &params,
                )?;
            }
        }
        let want_logits = matches!(choice, Choice::Logits);
        let back = if want_logits {
            rec.read(View::new(&s.logits, 0, u64::from(cfg.vocab) * 4))?
        } else {
            rec.read(View::new(&s.tokens, u64::from(next_slot) * 4, 4))?
        };
        rec.submit()?;
        Ok((back, want_logits))
    }

    /// The output of a step from its read-back bytes.
    fn finish_step(&mut self, bytes: &[u8], want_logits: bool) -> Result<StepOutput> {
        // A step that compiled new pipelines (the first prefill, the first sampled token)
        // persists the pipeline cache, so the next run of the program skips compilation.
        let created = self.gpu.counters().pipelines_created;
        if created != self.cached_pipelines {
            self.cached_pipelines = created;
            self.gpu.save_pipeline_cache()?;
        }
        Ok(if want_logits {
            StepOutput::Logits(bytemuck::pod_collect_to_vec(bytes))
        } else {
            StepOutput::Token(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        })
    }

    /// RMSNorm of `rows` rows of `len` (the model's eps, plain `w`).
    #[allow(
        clippy::too_many_arguments,
        reason = "one argument per binding and shape"
    )]
    fn norm(
        &self,
        rec: &mut crate::gpu::Recorder,
        x: &wgpu::Buffer,
        w: &wgpu::Buffer,
        out: &wgpu::Buffer,
        rows: u32,
        len: u32,
    ) -> Result<()> {
        rms_norm(
            rec,
            self.combine,
            x.into(),
            w.into(),
            out.into(),
            rows,
            len,
            self.cfg.eps,
            0.0,
        )
    }

    /// `x += [post_norm](W input)` for `n` rows: the output projection of a block and its
    /// residual add, fused into the GEMV where there is no post-norm (Gemma 3 has one).
    fn residual(
        &self,
        rec: &mut crate::gpu::Recorder,
        mat: &GpuMatrix,
        input: &wgpu::Buffer,
        post_norm: Option<&wgpu::Buffer>,
        n: u32,
    ) -> Result<()> {
        let s = &self.s;
        let d = self.cfg.d_model;
        self.acts.prepare(rec, input.into(), n, &[mat])?;
        match post_norm {
            Some(w) => {
                mat.gemv(
                    rec,
                    (self.split, self.prefill),
                    &self.acts,
                    input.into(),
                    (&s.tmp).into(),
                    n,
                    false,
                )?;
                self.norm(rec, &s.tmp, w, &s.tmp2, n, d)?;
                add_inplace(rec, (&s.x).into(), (&s.tmp2).into(), n * d, n * d)
            }
            None => mat.gemv(
                rec,
                (self.split, self.prefill),
                &self.acts,
                input.into(),
                (&s.x).into(),
                n,
                true,
            ),
        }
    }

    /// Attention of the chunk's `q` against layer `l`'s cache into `att`: split over the KV
    /// length where the tokens see at least two minimal splits' worth of positions, else the
    /// tiled kernel for a prompt chunk (K and V read once per tile of query rows, not once per
    /// row) and the one-pass kernel for a decode step (whose f16-rounded weights match
    /// llama.cpp's arithmetic exactly).
    fn attend(
        &self,
        rec: &mut crate::gpu::Recorder,
        combine: Combine,
        q: &wgpu::Buffer,
        l: &Layer,
        a: Attention,
    ) -> Result<()> {
        let s = &self.s;
        let (k, v) = ((&l.k_cache).into(), (&l.v_cache).into());
        let splits = Splits::plan(&a, self.attn.split_min_len);
        if self.attn.split_min_len > 0 && splits.count > 1 {
            let partials = View::new(&s.partials, 0, partials_bytes(&a, splits.count));
            attention_split(rec, q.into(), k, v, partials, (&s.att).into(), a, splits)
        } else if a.n_tok > 1 {
            attention_tiled(rec, q.into(), k, v, (&s.att).into(), a)
        } else {
            attention(
                rec,
                combine,
                q.into(),
                k,
                v,
                (&s.scores).into(),
                (&s.att).into(),
                a,
            )
        }
    }

    fn record_chunk(&self, rec: &mut crate::gpu::Recorder, pos0: u32, n: u32) -> Result<()> {
        let cfg = &self.cfg;
        let s = &self.s;
        let cb = self.combine;
        let sp = (self.split, self.prefill);
        let d = cfg.d_model;
        self.embd.embed(
            rec,
            (&s.tokens).into(),
            (&s.x).into(),
            n,
            pos0,
            cfg.embed_scale,
        )?;
        for (il, l) in self.layers.iter().enumerate() {
            let local = cfg.is_local(il as u32);
            self.norm(rec, &s.x, &l.w.attn_norm, &s.xn, n, d)?;
            let acts = &self.acts;
            acts.prepare(rec, (&s.xn).into(), n, &[&l.w.q, &l.w.k, &l.w.v])?;
            l.w.q
                .gemv(rec, sp, acts, (&s.xn).into(), (&s.q).into(), n, false)?;
            l.w.k
                .gemv(rec, sp, acts, (&s.xn).into(), (&s.k).into(), n, false)?;
            l.w.v
                .gemv(rec, sp, acts, (&s.xn).into(), (&s.v).into(), n, false)?;
            if let Some([bq, bk, bv]) = &l.w.bias {
                add_inplace(rec, (&s.q).into(), bq.into(), n * cfg.q_dim(), cfg.q_dim())?;
                add_inplace(
                    rec,
                    (&s.k).into(),
                    bk.into(),
                    n * cfg.kv_dim(),
                    cfg.kv_dim(),
                )?;
                add_inplace(
                    rec,
                    (&s.v).into(),
                    bv.into(),
                    n * cfg.kv_dim(),
                    cfg.kv_dim(),
                )?;
            }
            let (q, k) = match &l.w.qk_norm {
                Some([nq, nk]) => {
                    self.norm(rec, &s.q, nq, &s.qn, n * cfg.n_head, cfg.head_dim)?;
                    self.norm(rec, &s.k, nk, &s.kn, n * cfg.n_kv_head, cfg.head_dim)?;
                    (&s.qn, &s.kn)
                }
                None => (&s.q, &s.k),
            };
            let r = Rope {
                layout: cfg.rope_layout,
                n_head: cfg.n_head,
                head_dim: cfg.head_dim,
                rot_dims: cfg.rope_dims,
                n_tok: n,
                pos0,
                base: if local {
                    cfg.rope_base_local
                } else {
                    cfg.rope_base
                },
                freq_scale: if local { 1.0 } else { cfg.rope_freq_scale },
            };
            rope(rec, q.into(), r)?;
            rope(
                rec,
                k.into(),
                Rope {
                    n_head: cfg.n_kv_head,
                    ..r
                },
            )?;
            let a = Attention {
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
            };
            kv_store(rec, k.into(), (&l.k_cache).into(), a)?;
            kv_store(rec, (&s.v).into(), (&l.v_cache).into(), a)?;
            self.attend(rec, cb, q, l, a)?;
            self.residual(rec, &l.w.o, &s.att, l.w.post_attn_norm.as_ref(), n)?;
            self.norm(rec, &s.x, &l.w.ffn_norm, &s.xn, n, d)?;
            acts.prepare(rec, (&s.xn).into(), n, &[&l.w.gate, &l.w.up])?;
            let act = if cfg.arch == Arch::Gemma3 {
                Act::Gelu
            } else {
                Act::Silu
            };
            // One token, or several through GEMVs: the fused gated GEMV. Several through the
            // tiled matmul: gate and up each tiled (each half of the pair binds alone).
            let fused = (n == 1 || self.prefill == Prefill::Gemv)
                && l.w.gate.gated(
                    rec,
                    &l.w.up,
                    self.split,
                    act,
                    acts,
                    (&s.xn).into(),
                    (&s.hidden).into(),
                    n,
                )?;
            if !fused {
                l.w.gate
                    .gemv(rec, sp, acts, (&s.xn).into(), (&s.gate).into(), n, false)?;
                l.w.up
                    .gemv(rec, sp, acts, (&s.xn).into(), (&s.up).into(), n, false)?;
                gated(
                    rec,
                    act,
                    (&s.gate).into(),
                    (&s.up).into(),
                    (&s.hidden).into(),
                    n * cfg.d_ff,
                )?;
            }
            self.residual(rec, &l.w.down, &s.hidden, l.w.post_ffn_norm.as_ref(), n)?;
        }
        Ok(())
    }
}
