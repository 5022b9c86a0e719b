//! The forward pass on kiln-cpu's SIMD kernels, for machines (and browsers) without a WebGPU
//! adapter. Weights stay in the (memory-mapped) GGUF file in their block formats; activations
//! are quantized to int8 blocks per matrix type, as llama.cpp does. Every buffer is allocated at
//! load: the per-token loop allocates nothing.

use half::f16;
use kiln_cpu::ops::{AttnParams, RopeFreqs, RopeLayout as CpuRope, attention_decode, rope};
use kiln_cpu::{ActBuffer, QMatrix, QType, ThreadPool};

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::model::config::{Arch, Config, LayerWeights, ROPE_FREQS, matrix, vector};
use crate::model::{Traced, append};
use crate::ops::rope::RopeLayout;

/// Prompt tokens processed per batched matmul.
const CHUNK: usize = 32;

/// A weight matrix: where its blocks lie in the file.
#[derive(Debug, Clone)]
struct Mat {
    qtype: QType,
    rows: usize,
    cols: usize,
    start: usize,
    len: usize,
}

impl Mat {
    fn load(file: &GgufFile, name: &str) -> Result<Mat> {
        let (t, _, rows, k) = matrix(file.header(), name)?;
        let qtype = QType::from_ggml_id(t.ty as u32).ok_or_else(|| {
            Error::Unsupported(format!("tensor `{name}` type {:?} on the CPU path", t.ty))
        })?;
        let data = file.tensor_data(t);
        let start = data.as_ptr() as usize - file.bytes().as_ptr() as usize;
        let m = Mat {
            qtype,
            rows: rows as usize,
            cols: k as usize,
            start,
            len: data.len(),
        };
        // Validate the shape once, so later views cannot fail.
        QMatrix::new(m.qtype, m.rows, m.cols, data).map_err(cpu_err)?;
        Ok(m)
    }

    fn bytes<'a>(&self, file: &'a GgufFile) -> &'a [u8] {
        &file.bytes()[self.start..self.start + self.len]
    }

    fn view<'a>(&self, file: &'a GgufFile) -> QMatrix<'a> {
        QMatrix::new(self.qtype, self.rows, self.cols, self.bytes(file)).expect("validated at load")
    }
}

fn cpu_err(e: kiln_cpu::CpuError) -> Error {
    Error::Cpu(e)
}

#[derive(Debug)]
struct Layer {
    w: LayerWeights<Mat, Vec<f32>>,
    k_cache: Vec<f16>,
    v_cache: Vec<f16>,
}

/// Activations for up to CHUNK tokens.
#[derive(Debug)]
struct Scratch {
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    tmp: Vec<f32>,
    tmp2: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    hidden: Vec<f32>,
    scores: Vec<f32>,
    logits: Vec<f32>,
    act: ActBuffer,
}

/// A model on the CPU path, with its KV cache.
pub struct CpuModel {
    file: GgufFile,
    cfg: Config,
    pool: ThreadPool,
    embd: Mat,
    output: Mat,
    output_norm: Vec<f32>,
    /// Llama 3.x's RoPE frequency divisors, where the model has them.
    rope_freqs: Option<Vec<f32>>,
    layers: Vec<Layer>,
    s: Scratch,
    capacity: u32,
    /// The activations recorded while tracing ([`CpuModel::set_trace`]); `None`: off.
    trace: Option<Vec<Traced>>,
}

impl std::fmt::Debug for CpuModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuModel")
            .field("cfg", &self.cfg)
            .field("threads", &self.pool.threads())
            .finish_non_exhaustive()
    }
}

impl CpuModel {
    /// Maps the weights of `file` and allocates every buffer for `capacity` positions.
    pub fn load(
        file: GgufFile,
        cfg: &Config,
        capacity: u32,
        threads: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<CpuModel> {
        if cfg.final_softcap != 0.0 {
            return Err(Error::Unsupported(
                "final soft-capping is not implemented on the CPU path".into(),
            ));
        }
        let n_layer = cfg.n_layer as usize;
        let cache = cfg.n_kv_head as usize * capacity as usize * cfg.head_dim as usize;
        let vec = |name: &str, len: u32| vector(&file, name, len);
        let mut layers = Vec::with_capacity(n_layer);
        for il in 0..cfg.n_layer {
            layers.push(Layer {
                w: LayerWeights::load(cfg, il, |name, _| Mat::load(&file, name), &vec)?,
                k_cache: vec![f16::ZERO; cache],
                v_cache: vec![f16::ZERO; cache],
            });
            progress(il as usize + 1, n_layer + 1);
        }
        let embd = Mat::load(&file, "token_embd.weight")?;
        let output = match file.tensor("output.weight") {
            Some(_) => Mat::load(&file, "output.weight")?,
            None => embd.clone(),
        };
        let output_norm = vec("output_norm.weight", cfg.d_model)?;
        let rope_freqs = if cfg.rope_freqs {
            Some(vec(ROPE_FREQS, cfg.rope_dims / 2)?)
        } else {
            None
        };
        let c = CHUNK;
        let (d, qd, kvd, ff) = (
            cfg.d_model as usize,
            cfg.q_dim() as usize,
            cfg.kv_dim() as usize,
            cfg.d_ff as usize,
        );
        let widest = d.max(qd).max(ff);
        let s = Scratch {
            x: vec![0.0; c * d],
            xn: vec![0.0; c * d],
            q: vec![0.0; c * qd],
            k: vec![0.0; c * kvd],
            v: vec![0.0; c * kvd],
            att: vec![0.0; c * qd],
            // Holds o/down outputs (c, d) and, for the q/k norms, a copy of q (c, qd): Gemma 3's
            // qd (4 * 256) exceeds d (640).
            tmp: vec![0.0; c * d.max(qd)],
            tmp2: vec![0.0; c * d],
            gate: vec![0.0; c * ff],
            up: vec![0.0; c * ff],
            hidden: vec![0.0; c * ff],
            scores: vec![0.0; capacity as usize],
            logits: vec![0.0; cfg.vocab as usize],
            act: ActBuffer::with_capacity(c, widest),
        };
        progress(n_layer + 1, n_layer + 1);
        Ok(CpuModel {
            file,
            cfg: cfg.clone(),
            pool: ThreadPool::new(threads),
            embd,
            output,
            output_norm,
            rope_freqs,
            layers,
            s,
            capacity,
            trace: None,
        })
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The instruction set and thread count, for reports.
    /// Threads of the pool (the caller included).
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    pub fn describe(&self) -> String {
        format!(
            "{:?}, {} threads",
            kiln_cpu::Isa::active(),
            self.pool.threads()
        )
    }

    /// The KV cache's f16 bytes for positions `0..positions`, layer by layer, keys then values,
    /// kv head by kv head.
    pub fn kv_prefix(&self, positions: u32) -> Vec<u8> {
        let hd = self.cfg.head_dim as usize;
        let (cap, n) = (
            self.capacity as usize,
            positions.min(self.capacity) as usize,
        );
        let mut bytes = Vec::new();
        for l in &self.layers {
            for cache in [&l.k_cache, &l.v_cache] {
                for h in 0..self.cfg.n_kv_head as usize {
                    let at = h * cap * hd;
                    bytes.extend_from_slice(bytemuck::cast_slice(&cache[at..at + n * hd]));
                }
            }
        }
        bytes
    }

    /// Turns tracing on (recording every op's output of the steps that follow, see
    /// [`CpuModel::take_trace`]) or off; off by default, and then nothing is recorded or copied.
    pub fn set_trace(&mut self, on: bool) {
        self.trace = on.then(Vec::new);
    }

    /// The activations recorded since tracing was turned on or last taken, in the order first
    /// recorded, each op's rows over every position the steps ran: per layer `attn_norm`,
    /// `kqv_out`, `attn_post_norm` (Gemma 3), `sa_out`, `ffn_norm`, `ffn_out`, `ffn_post_norm`
    /// (Gemma 3) and `l_out`, then `result_norm`, named as llama.cpp's graph names them.
    pub fn take_trace(&mut self) -> Vec<Traced> {
        self.trace.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The logits of the last step.
    pub fn logits(&self) -> &[f32] {
        &self.s.logits
    }

    /// The logits of the last step, for in-place sampling (penalties).
    pub fn logits_mut(&mut self) -> &mut [f32] {
        &mut self.s.logits
    }

    /// Runs `tokens` at positions `pos0..` and returns the logits after the last one.
    pub fn step(&mut self, tokens: &[u32], pos0: u32) -> Result<&[f32]> {
        let n_new = tokens.len();
        if n_new == 0 || pos0 as usize + n_new > self.capacity as usize {
            return Err(Error::ContextFull {
                capacity: self.capacity,
            });
        }
        self.cfg.check_tokens("step", tokens)?;
        let mut done = 0;
        while done < n_new {
            let n = CHUNK.min(n_new - done);
            self.chunk(&tokens[done..done + n], pos0 as usize + done)?;
            done += n;
        }
        // The last row of the last chunk.
        let d = self.cfg.d_model as usize;
        let last = (n_new - 1) % CHUNK;
        let s = &mut self.s;
        let x = &s.x[last * d..(last + 1) * d];
        kiln_cpu::ops::rms_norm(x, &self.output_norm, self.cfg.eps, &mut s.xn[..d])
            .map_err(cpu_err)?;
        let out = self.output.view(&self.file);
        s.act
            .quantize_rows(&s.xn[..d], 1, out.qtype())
            .map_err(cpu_err)?;
        out.gemv(&s.act, &mut s.logits, &self.pool)
            .map_err(cpu_err)?;
        Ok(&self.s.logits)
    }

    /// `y (n, W.rows) = x (n, W.cols) · Wᵀ`.
    fn matmul(
        file: &GgufFile,
        pool: &ThreadPool,
        act: &mut ActBuffer,
        w: &Mat,
        x: &[f32],
        n: usize,
        y: &mut [f32],
    ) -> Result<()> {
        Self::matmuls(file, pool, act, x, n, &mut [(w, y)])
    }

    /// `y_i = x · W_iᵀ` for matrices that share the input `x` (q/k/v, gate/up): `x` is quantized
    /// once per activation format, not once per matrix.
    fn matmuls(
        file: &GgufFile,
        pool: &ThreadPool,
        act: &mut ActBuffer,
        x: &[f32],
        n: usize,
        outs: &mut [(&Mat, &mut [f32])],
    ) -> Result<()> {
        let mut held = None;
        for (w, y) in outs.iter_mut() {
            let kind = w.qtype.act_kind();
            if held != Some((kind, w.cols)) {
                act.quantize_rows(&x[..n * w.cols], n, w.qtype)
                    .map_err(cpu_err)?;
                held = Some((kind, w.cols));
            }
            w.view(file)
                .matmul(act, &mut y[..n * w.rows], pool)
                .map_err(cpu_err)?;
        }
        Ok(())
    }

    fn chunk(&mut self, tokens: &[u32], pos0: usize) -> Result<()> {
        let cfg = &self.cfg;
        let n = tokens.len();
        let (d, hd) = (cfg.d_model as usize, cfg.head_dim as usize);
        let (qd, kvd, ff) = (
            cfg.q_dim() as usize,
            cfg.kv_dim() as usize,
            cfg.d_ff as usize,
        );
        let s = &mut self.s;
        let trace = &mut self.trace;
        let file = &self.file;
        let pool = &self.pool;
        let embd = self.embd.view(file);
        for (t, &tok) in tokens.iter().enumerate() {
            let row = &mut s.x[t * d..(t + 1) * d];
            kiln_cpu::ops::embed_row(embd.qtype(), self.embd.bytes(file), tok as usize, row)
                .map_err(cpu_err)?;
            if cfg.embed_scale != 1.0 {
                kiln_cpu::ops::scale(row, cfg.embed_scale);
            }
        }
        let layout = match cfg.rope_layout {
            RopeLayout::Norm => CpuRope::Normal,
            RopeLayout::Neox => CpuRope::NeoX,
        };
        let eps = cfg.eps;
        for (il, l) in self.layers.iter_mut().enumerate() {
            let local = cfg.is_local(il as u32);
            norm_rows(&s.x, &l.w.attn_norm, eps, &mut s.xn, n, d)?;
            keep(trace, "attn_norm", Some(il), &s.xn, n, d);
            Self::matmuls(
                file,
                pool,
                &mut s.act,
                &s.xn,
                n,
                &mut [(&l.w.q, &mut s.q), (&l.w.k, &mut s.k), (&l.w.v, &mut s.v)],
            )?;
            if let Some([bq, bk, bv]) = &l.w.bias {
                for t in 0..n {
                    add_row(&mut s.q[t * qd..(t + 1) * qd], bq);
                    add_row(&mut s.k[t * kvd..(t + 1) * kvd], bk);
                    add_row(&mut s.v[t * kvd..(t + 1) * kvd], bv);
                }
            }
            if let Some([nq, nk]) = &l.w.qk_norm {
                s.tmp[..n * qd].copy_from_slice(&s.q[..n * qd]);
                norm_rows(&s.tmp, nq, eps, &mut s.q, n * cfg.n_head as usize, hd)?;
                s.tmp[..n * kvd].copy_from_slice(&s.k[..n * kvd]);
                norm_rows(&s.tmp, nk, eps, &mut s.k, n * cfg.n_kv_head as usize, hd)?;
            }
            // Sliding-window layers rotate unscaled, at their own base (Gemma 3), as on the GPU.
            let freqs = RopeFreqs {
                base: if local {
                    cfg.rope_base_local
                } else {
                    cfg.rope_base
                },
                scale: if local { 1.0 } else { cfg.rope_freq_scale },
                factors: self.rope_freqs.as_deref(),
            };
            let params = AttnParams {
                n_head: cfg.n_head as usize,
                n_kv_head: cfg.n_kv_head as usize,
                head_dim: hd,
                capacity: self.capacity as usize,
                scale: cfg.attn_scale,
                window: (local && cfg.window > 0).then_some(cfg.window as usize),
                softcap: (cfg.attn_softcap > 0.0).then_some(cfg.attn_softcap),
            };
            for t in 0..n {
                let pos = pos0 + t;
                let q = &mut s.q[t * qd..(t + 1) * qd];
                let k = &mut s.k[t * kvd..(t + 1) * kvd];
                let rot = cfg.rope_dims as usize;
                rope(q, hd, rot, pos, &freqs, layout).map_err(cpu_err)?;
                // q meets the f16 cache rounded to f16, as in llama.cpp's f16 KV path.
                for x in q.iter_mut() {
                    *x = f16::from_f32(*x).to_f32();
                }
                rope(k, hd, rot, pos, &freqs, layout).map_err(cpu_err)?;
                let v = &s.v[t * kvd..(t + 1) * kvd];
                for h in 0..cfg.n_kv_head as usize {
                    let at = (h * self.capacity as usize + pos) * hd;
                    for (dst, &src) in l.k_cache[at..at + hd].iter_mut().zip(&k[h * hd..]) {
                        *dst = f16::from_f32(src);
                    }
                    for (dst, &src) in l.v_cache[at..at + hd].iter_mut().zip(&v[h * hd..]) {
                        *dst = f16::from_f32(src);
                    }
                }
                attention_decode(
                    &s.q[t * qd..(t + 1) * qd],
                    &l.k_cache,
                    &l.v_cache,
                    &params,
                    pos + 1,
                    &mut s.scores,
                    &mut s.att[t * qd..(t + 1) * qd],
                )
                .map_err(cpu_err)?;
            }
            keep(trace, "kqv_out", Some(il), &s.att, n, qd);
            Self::matmul(file, pool, &mut s.act, &l.w.o, &s.att, n, &mut s.tmp)?;
            residual_add(
                &mut s.x,
                &s.tmp,
                &mut s.tmp2,
                l.w.post_attn_norm.as_deref(),
                n,
                d,
                eps,
            )?;
            if l.w.post_attn_norm.is_some() {
                keep(trace, "attn_post_norm", Some(il), &s.tmp2, n, d);
            }
            keep(trace, "sa_out", Some(il), &s.x, n, d);
            norm_rows(&s.x, &l.w.ffn_norm, eps, &mut s.xn, n, d)?;
            keep(trace, "ffn_norm", Some(il), &s.xn, n, d);
            Self::matmuls(
                file,
                pool,
                &mut s.act,
                &s.xn,
                n,
                &mut [(&l.w.gate, &mut s.gate), (&l.w.up, &mut s.up)],
            )?;
            let (g, u, h) = (&s.gate[..n * ff], &s.up[..n * ff], &mut s.hidden[..n * ff]);
            if cfg.arch == Arch::Gemma3 {
                kiln_cpu::ops::geglu(g, u, h).map_err(cpu_err)?;
            } else {
                kiln_cpu::ops::swiglu(g, u, h).map_err(cpu_err)?;
            }
            Self::matmul(file, pool, &mut s.act, &l.w.down, &s.hidden, n, &mut s.tmp)?;
            keep(trace, "ffn_out", Some(il), &s.tmp, n, d);
            residual_add(
                &mut s.x,
                &s.tmp,
                &mut s.tmp2,
                l.w.post_ffn_norm.as_deref(),
                n,
                d,
                eps,
            )?;
            if l.w.post_ffn_norm.is_some() {
                keep(trace, "ffn_post_norm", Some(il), &s.tmp2, n, d);
            }
            keep(trace, "l_out", Some(il), &s.x, n, d);
        }
        if trace.is_some() {
            // Every row's final norm (a step norms only the last row, for the logits).
            norm_rows(&s.x, &self.output_norm, eps, &mut s.xn, n, d)?;
            keep(trace, "result_norm", None, &s.xn, n, d);
        }
        Ok(())
    }
}

/// Records the first `n` rows of `width` of `x` as op `op` of layer `il` (or of the model) while
/// tracing; nothing when not.
fn keep(
    trace: &mut Option<Vec<Traced>>,
    op: &str,
    il: Option<usize>,
    x: &[f32],
    n: usize,
    width: usize,
) {
    if let Some(t) = trace {
        let name = il.map_or_else(|| op.to_string(), |il| format!("{op}-{il}"));
        append(t, name, width, &x[..n * width]);
    }
}

/// RMSNorm of `rows` rows of `len`.
fn norm_rows(
    x: &[f32],
    w: &[f32],
    eps: f32,
    out: &mut [f32],
    rows: usize,
    len: usize,
) -> Result<()> {
    for (xr, or) in x
        .chunks_exact(len)
        .zip(out.chunks_exact_mut(len))
        .take(rows)
    {
        kiln_cpu::ops::rms_norm(xr, w, eps, or).map_err(cpu_err)?;
    }
    Ok(())
}

/// `x += [post_norm](out)` over `n` rows of `d`: a block's residual add, through Gemma 3's
/// post-norm where the model has one (`scratch` holds the normed rows).
fn residual_add(
    x: &mut [f32],
    out: &[f32],
    scratch: &mut [f32],
    post_norm: Option<&[f32]>,
    n: usize,
    d: usize,
    eps: f32,
) -> Result<()> {
    let out = match post_norm {
        Some(w) => {
            norm_rows(out, w, eps, scratch, n, d)?;
            &*scratch
        }
        None => out,
    };
    add_row(&mut x[..n * d], &out[..n * d]);
    Ok(())
}

/// `x[i] += b[i % b.len()]`.
fn add_row(x: &mut [f32], b: &[f32]) {
    for (xi, bi) in x.iter_mut().zip(b.iter().cycle()) {
        *xi += bi;
    }
}
