//! Kernel benchmark: GFLOP/s and GB/s of the model kernels at named shapes of the real models
//! (SmolLM2-135M, Qwen2.5-0.5B, Gemma 3 270M), of sampling at their vocabulary sizes, and of the
//! recurrent kernels (Mamba's selective scan, RWKV-6/7 WKV) at the shapes of small Mamba and
//! RWKV models, on the adapter the environment selects (`KILN_BACKEND`, `KILN_ADAPTER`).
//!
//! Each case records `reps` dispatches of one kernel in one submit, rotating over enough copies
//! of its weights (at least 192 MiB together) that they do not stay in the GPU's last-level
//! cache, as in a decode step where every matrix is read once. Time comes from GPU timestamps
//! around the dispatches where the adapter has TIMESTAMP_QUERY, else from the CPU clock around
//! whole submits after a warm-up, waiting for the device each time. Bytes are the weights plus
//! the activations read and the outputs written; the roofline fraction is printed where the
//! adapter's memory bandwidth is known (a small table below, or `KILN_PEAK_GBPS`).
//!
//! The int8 GEMVs (`gemv_q8`, `gemv_w8a8`) run once with `dot4I8Packed` (`dot4`) where the
//! adapter has it and once unpacked, so the two can be compared on the same device.
//! Prefill cases time a 32-row chunk through `gemv_q8` and through the tiled `matmul_q`; the
//! fused `gemv_gated` is timed at SmolLM2's FFN; `matmul_reg` and `matmul_tiled` at 512^3.
//!
//! `cargo run --release -p kiln --example kernel_bench [-- FILTER]` runs the cases whose name
//! contains FILTER.

use std::time::Instant;

use kiln::gpu::DType;
use kiln::ops::activation::Act;
use kiln::ops::attention::{
    Attention, KvType, SPLIT_MIN_LEN, SplitRule, Splits, attention, attention_split,
    attention_tiled, partials_bytes, scratch_bytes,
};
use kiln::ops::gemv::{
    ActInput, ActQuant, GemvShape, IntDot, QAct, Split, WType, gemv_q8_with, quantize,
};
use kiln::ops::gemv_gated::{GatedShape, gemv_gated};
use kiln::ops::int8::{I8Rows, W8A8Shape, gemv_w8a8};
use kiln::ops::matmul::{MatmulShape, matmul, matmul_tiled};
use kiln::ops::matmul_q::matmul_q;
use kiln::ops::norm::rms_norm;
use kiln::ops::reduce::Combine;
use kiln::ops::rwkv::{Wkv6Io, Wkv7Io, WkvShape, wkv6, wkv7};
use kiln::ops::sample::{SampleParams, sample};
use kiln::ops::ssm::{ScanIo, selective_scan};
use kiln::tune::{GemvOp, GemvPick};
use kiln::{Gpu, GpuOptions, Result};

/// Peak memory bandwidth (GB/s) of adapters whose name contains the key.
const KNOWN_GBPS: &[(&str, f64)] = &[
    ("H100 80GB HBM3", 3350.0),
    ("H100 PCIe", 2039.0),
    ("H200", 4800.0),
];

/// Bytes of rotating weight copies per case: larger than the last-level cache of any GPU here.
const ROTATE_BYTES: u64 = 192 << 20;

/// How a quantized product over `m` activation rows is run.
#[derive(Clone, Copy, PartialEq)]
enum QKernel {
    /// `gemv_q8` with this int8 dot, which reads the weights once per activation row.
    Gemv(IntDot),
    /// `matmul_q` (prefill), which reads each weight unit once per 32 activation rows.
    MatmulQ,
    /// `gemv_gated`: gate and up (two matrices of this shape) and the activation in one.
    Gated,
}

/// A case to build: kernel and shape.
/// Which attention kernel a case times.
#[derive(Clone, Copy, Debug)]
enum AttnPath {
    /// `attention`: a workgroup per (token, head), scores in scratch.
    OnePass,
    /// `attention_tiled`.
    Tiled,
    /// `attention_split` with kiln's default split plan.
    Split,
}

enum Spec {
    /// Kernel, weights, rows, k, activation rows, label.
    Quant(QKernel, WType, u32, u32, u32, &'static str),
    /// Int8 weights with per-row scales against per-row int8 activations.
    W8A8(u32, u32, &'static str, IntDot),
    /// f32 matmul m x n x k, B transposed: `matmul_reg` (None) or `matmul_tiled` (its dtype).
    Matmul(Option<DType>, u32, u32, u32),
    Quantize(ActQuant, u32),
    Norm(u32),
    /// (label, (n_head, n_kv_head, head_dim), context, new tokens, kernel)
    Attention(&'static str, (u32, u32, u32), u32, u32, AttnPath),
    /// Sampling with top-k 40, top-p 0.9 over this many logits.
    Sample(u32),
    /// Mamba's selective scan: label, (d_inner, d_state), tokens per call.
    Scan(&'static str, (u32, u32), u32),
    /// RWKV WKV: version (6 or 7), label, (heads, head size), tokens per call.
    Wkv(u32, &'static str, (u32, u32), u32),
}

impl Spec {
    fn name(&self) -> String {
        match self {
            Spec::Quant(kernel, w, rows, k, m, label) => {
                let name = match kernel {
                    QKernel::Gemv(dot) => format!("gemv_q8 {}", dot_word(*dot)),
                    QKernel::MatmulQ => "matmul_q".to_string(),
                    QKernel::Gated => "gemv_gated".to_string(),
                };
                format!("{name} {} {label} {rows}x{k} m={m}", w.word())
            }
            Spec::W8A8(rows, k, label, dot) => {
                format!("gemv_w8a8 {label} {rows}x{k} {}", dot_word(*dot))
            }
            Spec::Matmul(dtype, m, n, k) => match dtype {
                None => format!("matmul_reg f32 {m}x{n}x{k}"),
                Some(d) => format!("matmul_tiled {} {m}x{n}x{k}", d.wgsl()),
            },
            Spec::Quantize(q, k) => format!("quantize {q:?} k={k}"),
            Spec::Norm(n) => format!("rms_norm n={n}"),
            Spec::Attention(label, _, ctx, n_tok, path) => {
                format!("attention {label} ctx={ctx} n={n_tok} {path:?}")
            }
            Spec::Sample(n) => format!("sample top-k 40 top-p 0.9 n={n}"),
            Spec::Scan(label, (d, n), t) => format!("ssm_scan {label} {d}x{n} t={t}"),
            Spec::Wkv(v, label, (h, n), t) => format!("wkv{v} {label} {h}x{n} t={t}"),
        }
    }
}

fn dot_word(dot: IntDot) -> &'static str {
    match dot {
        IntDot::Packed => "dot4",
        IntDot::Unpacked => "unpacked",
    }
}

struct Case {
    flops: f64,
    bytes: f64,
    /// Buffers kept alive for the recordings.
    buffers: Vec<wgpu::Buffer>,
    /// Records dispatch `i` of the case.
    record: RecordFn,
}

/// Records dispatch `i` of a case over its buffers.
type RecordFn = Box<dyn Fn(&mut kiln::gpu::Recorder, &[wgpu::Buffer], usize) -> Result<()>>;

/// Deterministic filler bytes (weights' values do not change the work).
fn filler(n: usize, seed: u32) -> Vec<u8> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            // Clearing bit 6 of every byte keeps each f16 scale's exponent below 16: finite.
            (s as u8) & 0xbf
        })
        .collect()
}

fn storage(gpu: &Gpu, bytes: u64) -> Result<wgpu::Buffer> {
    gpu.create_buffer(
        "bench",
        bytes,
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
    )
}

fn quant_case(gpu: &Gpu, kernel: QKernel, w: WType, rows: u32, k: u32, m: u32) -> Result<Case> {
    let quant = ActQuant::for_weights(w).expect("quantized type");
    let row_bytes = u64::from(w.row_bytes(k)?);
    let half = u64::from(rows) * row_bytes;
    // The fused kernel reads gate rows, then up rows from the next aligned offset.
    let align = u64::from(gpu.limits().min_storage_buffer_offset_alignment);
    let up_offset = half.next_multiple_of(align);
    let wbytes = if kernel == QKernel::Gated {
        up_offset + half
    } else {
        half
    };
    let copies = ROTATE_BYTES.div_ceil(wbytes).clamp(2, 256);
    let mut buffers = Vec::new();
    for c in 0..copies {
        buffers.push(gpu.upload("bench weights", &filler(wbytes as usize, c as u32))?);
    }
    let (bq, bd, bs) = QAct::sizes(m, k);
    buffers.push(storage(gpu, bq)?);
    buffers.push(storage(gpu, bd)?);
    buffers.push(storage(gpu, bs)?);
    buffers.push(storage(gpu, u64::from(m * rows) * 4)?);
    let split = Split::best(gpu);
    let copies = copies as usize;
    let shape = GemvShape {
        wtype: w,
        k,
        rows,
        m,
        y_stride: rows,
        y_offset: 0,
        accumulate: false,
    };
    let mats = if kernel == QKernel::Gated { 2.0 } else { 1.0 };
    let acts = bq + bd + if quant.has_sums() { bs } else { 0 };
    Ok(Case {
        flops: mats * 2.0 * f64::from(rows) * f64::from(k) * f64::from(m),
        bytes: (mats * half as f64) + (acts + u64::from(m * rows) * 4) as f64,
        buffers,
        record: Box::new(move |rec, b, i| {
            let act = QAct {
                quant,
                xq: (&b[copies]).into(),
                xd: (&b[copies + 1]).into(),
                xs: (&b[copies + 2]).into(),
            };
            let (wv, y) = ((&b[i % copies]).into(), (&b[copies + 3]).into());
            match kernel {
                QKernel::Gemv(dot) => {
                    let wg = GemvOp::Q8.wg_sizes()[0];
                    gemv_q8_with(rec, GemvPick { split, dot, wg }, wv, act, y, shape)
                }
                QKernel::MatmulQ => matmul_q(rec, wv, ActInput::Q8(act), y, shape),
                QKernel::Gated => {
                    let s = GatedShape {
                        wtype: w,
                        act: Act::Silu,
                        k,
                        rows,
                        m,
                        up_offset: up_offset as u32,
                        y_stride: rows,
                        y_offset: 0,
                    };
                    gemv_gated(rec, split, wv, ActInput::Q8(act), y, s)
                }
            }
        }),
    })
}

/// `c = a bᵀ`; counts every operand read once (what tiling aims at).
fn matmul_case(gpu: &Gpu, dtype: Option<DType>, m: u32, n: u32, k: u32) -> Result<Case> {
    let size = dtype.map_or(4, DType::size);
    let s = MatmulShape {
        m,
        n,
        k,
        batch: 1,
        trans_b: true,
    };
    let buffers = vec![
        gpu.upload("a", &vec![0u8; (u64::from(m * k) * size) as usize])?,
        gpu.upload("b", &vec![0u8; (u64::from(n * k) * size) as usize])?,
        storage(gpu, u64::from(m * n) * 4)?,
    ];
    Ok(Case {
        flops: 2.0 * f64::from(m) * f64::from(n) * f64::from(k),
        bytes: (u64::from(m * k + n * k) * size + u64::from(m * n) * 4) as f64,
        buffers,
        record: Box::new(move |rec, b, _| {
            let (a, bb, c) = ((&b[0]).into(), (&b[1]).into(), (&b[2]).into());
            match dtype {
                None => matmul(rec, a, bb, c, s),
                Some(d) => matmul_tiled(rec, d, a, bb, c, s, s.contiguous()),
            }
        }),
    })
}

fn w8a8_case(gpu: &Gpu, rows: u32, k: u32, dot: IntDot) -> Result<Case> {
    let wbytes = u64::from(rows) * u64::from(k);
    let copies = ROTATE_BYTES.div_ceil(wbytes).clamp(2, 256) as usize;
    let mut buffers = Vec::new();
    for c in 0..copies {
        buffers.push(gpu.upload("bench weights", &filler(wbytes as usize, c as u32))?);
    }
    buffers.push(gpu.upload("scales", &vec![0u8; rows as usize * 4])?);
    buffers.push(gpu.upload("xq", &filler(k as usize, 7))?);
    buffers.push(gpu.upload("xd", &[0u8; 4])?);
    buffers.push(storage(gpu, u64::from(rows) * 4)?);
    let split = Split::best(gpu);
    let shape = W8A8Shape {
        k,
        rows,
        m: 1,
        y_stride: rows,
        y_offset: 0,
    };
    Ok(Case {
        flops: 2.0 * f64::from(rows) * f64::from(k),
        bytes: (wbytes + u64::from(rows) * 8 + u64::from(k) + 4) as f64,
        buffers,
        record: Box::new(move |rec, b, i| {
            let w = I8Rows {
                q: (&b[i % copies]).into(),
                d: (&b[copies]).into(),
            };
            let x = I8Rows {
                q: (&b[copies + 1]).into(),
                d: (&b[copies + 2]).into(),
            };
            gemv_w8a8(rec, split, dot, w, x, (&b[copies + 3]).into(), shape)
        }),
    })
}

fn quantize_case(gpu: &Gpu, quant: ActQuant, k: u32) -> Result<Case> {
    let (bq, bd, bs) = QAct::sizes(1, k);
    let buffers = vec![
        gpu.upload("x", &vec![0u8; k as usize * 4])?,
        storage(gpu, bq)?,
        storage(gpu, bd)?,
        storage(gpu, bs)?,
    ];
    Ok(Case {
        flops: 3.0 * f64::from(k),
        bytes: (u64::from(k) * 4 + bq + bd + if quant.has_sums() { bs } else { 0 }) as f64,
        buffers,
        record: Box::new(move |rec, b, _| {
            let act = QAct {
                quant,
                xq: (&b[1]).into(),
                xd: (&b[2]).into(),
                xs: (&b[3]).into(),
            };
            quantize(rec, (&b[0]).into(), act, 1, k)
        }),
    })
}

fn rms_norm_case(gpu: &Gpu, n: u32) -> Result<Case> {
    let buffers = vec![
        gpu.upload("x", &vec![0u8; n as usize * 4])?,
        gpu.upload("w", &vec![0u8; n as usize * 4])?,
        storage(gpu, u64::from(n) * 4)?,
    ];
    let combine = Combine::best(gpu);
    Ok(Case {
        flops: 4.0 * f64::from(n),
        bytes: 12.0 * f64::from(n),
        buffers,
        record: Box::new(move |rec, b, _| {
            rms_norm(
                rec,
                combine,
                (&b[0]).into(),
                (&b[1]).into(),
                (&b[2]).into(),
                1,
                n,
                1e-6,
                0.0,
            )
        }),
    })
}

/// Bytes count the caches once (what a kernel must read at least), plus q and the output.
fn attention_case(
    gpu: &Gpu,
    heads: (u32, u32, u32),
    ctx: u32,
    n_tok: u32,
    path: AttnPath,
) -> Result<Case> {
    let (n_head, n_kv_head, head_dim) = heads;
    let a = Attention {
        n_head,
        n_kv_head,
        head_dim,
        capacity: ctx,
        n_tok,
        pos0: ctx - n_tok,
        window: 0,
        scale: 1.0 / (head_dim as f32).sqrt(),
        softcap: 0.0,
        kv: KvType::F16,
    };
    let cache = a.cache_bytes();
    let qbytes = u64::from(n_tok * n_head * head_dim) * 4;
    let splits = Splits::plan(&a, SPLIT_MIN_LEN);
    let copies = ROTATE_BYTES.div_ceil(2 * cache).clamp(2, 64) as usize;
    let mut buffers = Vec::new();
    for c in 0..2 * copies {
        buffers.push(gpu.upload("cache", &filler(cache as usize, c as u32))?);
    }
    buffers.push(gpu.upload("q", &vec![0u8; qbytes as usize])?);
    buffers.push(storage(gpu, scratch_bytes(&a))?);
    buffers.push(storage(gpu, qbytes)?);
    buffers.push(storage(gpu, partials_bytes(&a, splits.count))?);
    let combine = Combine::best(gpu);
    Ok(Case {
        flops: 4.0 * f64::from(n_tok * n_head) * f64::from(ctx) * f64::from(head_dim),
        bytes: (2 * cache + 2 * qbytes) as f64,
        buffers,
        record: Box::new(move |rec, b, i| {
            let c = i % copies;
            let (q, k, v) = (
                (&b[2 * copies]).into(),
                (&b[2 * c]).into(),
                (&b[2 * c + 1]).into(),
            );
            let (scores, out) = ((&b[2 * copies + 1]).into(), (&b[2 * copies + 2]).into());
            match path {
                AttnPath::OnePass => attention(rec, combine, q, k, v, scores, out, a),
                AttnPath::Tiled => attention_tiled(rec, q, k, v, out, a),
                AttnPath::Split => {
                    let partials = (&b[2 * copies + 3]).into();
                    attention_split(rec, q, k, v, partials, out, a, SplitRule::Fixed(splits))
                }
            }
        }),
    })
}

/// Bytes count one read of the logits, though the top-k and top-p bisections read them up to
/// ~70 times: GB/s here is "vocabularies per second" in bytes, not memory traffic.
fn sample_case(gpu: &Gpu, n: u32) -> Result<Case> {
    let logits: Vec<f32> = filler(n as usize, 7)
        .into_iter()
        .map(|b| f32::from(b) / 16.0)
        .collect();
    let buffers = vec![
        gpu.upload("logits", bytemuck::cast_slice(&logits))?,
        storage(gpu, 4)?,
    ];
    let params = SampleParams {
        temperature: 0.8,
        top_k: 40,
        top_p: 0.9,
        repetition_penalty: 1.0,
        seed: 42,
    };
    Ok(Case {
        flops: 0.0,
        bytes: f64::from(n) * 4.0,
        buffers,
        record: Box::new(move |rec, b, i| {
            sample(
                rec,
                (&b[0]).into(),
                (&b[1]).into(),
                n,
                0,
                0,
                i as u32,
                &params,
            )
        }),
    })
}

/// A buffer of `n` copies of `v`: recurrent kernels' inputs need finite values of sane size
/// (random bits could be NaN or denormal, which change the speed of a CPU adapter).
fn f32_buf(gpu: &Gpu, n: u64, v: f32) -> Result<wgpu::Buffer> {
    gpu.upload("bench input", bytemuck::cast_slice(&vec![v; n as usize]))
}

/// Mamba's selective scan over `t` tokens of `d` channels with `n` states, rotating over copies
/// of the state as a decode step reads each layer's state once. FLOPs count the 6 multiply-adds
/// per (token, channel, state), not the exp.
fn scan_case(gpu: &Gpu, d: u32, n: u32, t: u32) -> Result<Case> {
    let state = u64::from(d) * u64::from(n) * 4;
    let tok = u64::from(t) * u64::from(d) * 4;
    let bc = u64::from(t) * u64::from(n) * 4;
    let copies = ROTATE_BYTES.div_ceil(state).clamp(2, 64) as usize;
    let mut buffers = Vec::new();
    for _ in 0..copies {
        buffers.push(f32_buf(gpu, state / 4, 0.1)?);
    }
    buffers.push(f32_buf(gpu, state / 4, -0.5)?); // a
    buffers.push(f32_buf(gpu, u64::from(d), 1.0)?); // d_skip
    buffers.push(f32_buf(gpu, tok / 4, 0.3)?); // x
    buffers.push(f32_buf(gpu, tok / 4, 0.1)?); // dt
    buffers.push(f32_buf(gpu, bc / 4, 0.2)?); // b
    buffers.push(f32_buf(gpu, bc / 4, 0.2)?); // c
    buffers.push(storage(gpu, tok)?); // y
    Ok(Case {
        flops: 6.0 * f64::from(t) * f64::from(d) * f64::from(n),
        bytes: (3 * state + 3 * tok + 2 * bc + u64::from(d) * 4) as f64,
        buffers,
        record: Box::new(move |rec, b, i| {
            let at = |j: usize| (&b[copies + j]).into();
            let io = ScanIo {
                h: (&b[i % copies]).into(),
                a: at(0),
                d_skip: at(1),
                x: at(2),
                dt: at(3),
                b: at(4),
                c: at(5),
                y: at(6),
            };
            selective_scan(rec, io, d, n, t)
        }),
    })
}

/// RWKV-6 or -7 WKV over `t` tokens of `h` heads of `n`, rotating over copies of the state.
/// FLOPs per token and state element: 6 (v6) or 10 (v7: the `a` product, the update and `y`).
fn wkv_case(gpu: &Gpu, version: u32, h: u32, n: u32, t: u32) -> Result<Case> {
    let state = u64::from(h) * u64::from(n) * u64::from(n) * 4;
    let tok = u64::from(t) * u64::from(h * n) * 4;
    let copies = ROTATE_BYTES.div_ceil(state).clamp(2, 64) as usize;
    let mut buffers = Vec::new();
    for _ in 0..copies {
        buffers.push(f32_buf(gpu, state / 4, 0.01)?);
    }
    // v6: r, k, v, w, u, y; v7: r, w, k, v, a, b, y.
    let inputs = if version == 6 { 5 } else { 7 };
    for j in 0..inputs {
        let words = if version == 6 && j == 4 {
            u64::from(h * n)
        } else {
            tok / 4
        };
        buffers.push(f32_buf(gpu, words, 0.1 + 0.05 * j as f32)?);
    }
    buffers.push(storage(gpu, tok)?);
    let shape = WkvShape {
        n_head: h,
        head_size: n,
        n_tok: t,
    };
    let per = if version == 6 { 6.0 } else { 10.0 };
    let io_tokens = if version == 6 { 5 } else { 7 };
    Ok(Case {
        flops: per * f64::from(t) * (state / 4) as f64,
        bytes: (2 * state + io_tokens * tok) as f64,
        buffers,
        record: Box::new(move |rec, b, i| {
            let at = |j: usize| (&b[copies + j]).into();
            let state = (&b[i % copies]).into();
            if version == 6 {
                let io = Wkv6Io {
                    state,
                    r: at(0),
                    k: at(1),
                    v: at(2),
                    w: at(3),
                    u: at(4),
                    y: at(5),
                };
                wkv6(rec, io, shape)
            } else {
                let io = Wkv7Io {
                    state,
                    r: at(0),
                    w: at(1),
                    k: at(2),
                    v: at(3),
                    a: at(4),
                    b: at(5),
                    y: at(6),
                };
                wkv7(rec, io, shape)
            }
        }),
    })
}

/// Seconds per dispatch: GPU timestamps where available, else CPU time over whole submits.
fn time(gpu: &Gpu, case: &Case, reps: usize) -> Result<(f64, &'static str)> {
    let run = |timed: bool| -> Result<Option<kiln::gpu::Readback>> {
        let mut rec = gpu.recorder();
        let ticks = if timed {
            Some(rec.time_dispatches()?)
        } else {
            None
        };
        for i in 0..reps {
            (case.record)(&mut rec, &case.buffers, i)?;
        }
        rec.submit()?;
        Ok(ticks)
    };
    let timed = gpu.capabilities().timestamps;
    run(false)?;
    gpu.wait_idle()?;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        if timed {
            let bytes = run(true)?.expect("timed").wait()?;
            let t: &[u64] = bytemuck::cast_slice(&bytes);
            let ns = t[1].wrapping_sub(t[0]) as f64 * f64::from(gpu.timestamp_period());
            best = best.min(ns * 1e-9 / reps as f64);
        } else {
            let start = Instant::now();
            run(false)?;
            gpu.wait_idle()?;
            best = best.min(start.elapsed().as_secs_f64() / reps as f64);
        }
    }
    Ok((best, if timed { "gpu" } else { "wall" }))
}

fn main() -> Result<()> {
    let filter = std::env::args().nth(1).unwrap_or_default();
    let gpu = Gpu::new_blocking(GpuOptions::from_env()?)?;
    let info = gpu.adapter_info();
    println!(
        "adapter: {} ({:?}, {:?}); timestamps: {}",
        info.name,
        info.backend,
        info.device_type,
        gpu.capabilities().timestamps
    );
    let peak = std::env::var("KILN_PEAK_GBPS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .or_else(|| {
            KNOWN_GBPS
                .iter()
                .find(|(k, _)| info.name.contains(k))
                .map(|&(_, v)| v)
        });
    match peak {
        Some(p) => println!("roofline: {p} GB/s memory bandwidth"),
        None => println!(
            "roofline: unknown for `{}` (a CPU adapter such as lavapipe has none that means \
             anything here; set KILN_PEAK_GBPS to give one)",
            info.name
        ),
    }
    let mut specs = Vec::new();
    // The packed int8 dot where the device has it, the unpacking fallback always.
    let dots: &[IntDot] = if gpu.capabilities().dot4 {
        &[IntDot::Packed, IntDot::Unpacked]
    } else {
        &[IntDot::Unpacked]
    };
    let shapes: [(&'static str, u32, u32); 4] = [
        ("smollm2 ffn_down", 576, 1536),
        ("smollm2 ffn_up", 1536, 576),
        ("qwen2 ffn_down", 896, 4864),
        ("smollm2 logits", 49152, 576),
    ];
    for (label, rows, k) in shapes {
        for w in [
            WType::Q4_0,
            WType::Q4_1,
            WType::Q5_0,
            WType::Q8_0,
            WType::Q4K,
            WType::Q6K,
        ] {
            // K-quant rows need whole 256-blocks (576 is not; the real models store such
            // matrices as Q5_0 or Q8_0).
            if k.is_multiple_of(w.block_elems()) {
                for &dot in dots {
                    specs.push(Spec::Quant(QKernel::Gemv(dot), w, rows, k, 1, label));
                }
            }
        }
        for &dot in dots {
            specs.push(Spec::W8A8(rows, k, label, dot));
        }
    }
    // Prefill of one 32-token chunk: a GEMV over 32 rows against the tiled matmul.
    let prefill: [(&str, u32, u32); 2] =
        [("smollm2 ffn_up", 1536, 576), ("qwen2 ffn_down", 896, 4864)];
    for (label, rows, k) in prefill {
        for w in [
            WType::Q4_0,
            WType::Q4_1,
            WType::Q8_0,
            WType::Q4K,
            WType::Q6K,
        ] {
            if k.is_multiple_of(w.block_elems()) {
                for kernel in [QKernel::Gemv(IntDot::best(&gpu)), QKernel::MatmulQ] {
                    specs.push(Spec::Quant(kernel, w, rows, k, 32, label));
                }
            }
        }
    }
    // Decode FFN: gate and up in one fused dispatch (compare with two gemv_q8 ffn_up above).
    for w in [WType::Q4_0, WType::Q4_1, WType::Q8_0] {
        specs.push(Spec::Quant(
            QKernel::Gated,
            w,
            1536,
            576,
            1,
            "smollm2 ffn_gate+up",
        ));
    }
    for dtype in [None, Some(DType::F32), Some(DType::F16)] {
        if dtype != Some(DType::F16) || gpu.capabilities().f16 {
            specs.push(Spec::Matmul(dtype, 512, 512, 512));
        }
    }
    for quant in [ActQuant::Q8_0, ActQuant::Q8_1, ActQuant::Q8K] {
        specs.push(Spec::Quantize(quant, 4864));
    }
    for n in [576, 896] {
        specs.push(Spec::Norm(n));
    }
    for ctx in [512, 2048] {
        for (label, heads) in [
            ("smollm2 9/3x64", (9, 3, 64)),
            ("gemma3 4/1x256", (4, 1, 256)),
        ] {
            // A decode step and a prompt chunk (the GPU model's CHUNK of 32) at the end of
            // the context, by each kernel that can run it.
            for path in [AttnPath::OnePass, AttnPath::Split] {
                specs.push(Spec::Attention(label, heads, ctx, 1, path));
            }
            for path in [AttnPath::OnePass, AttnPath::Tiled, AttnPath::Split] {
                specs.push(Spec::Attention(label, heads, ctx, 32, path));
            }
        }
    }
    for n in [49152, 151_936, 262_144] {
        specs.push(Spec::Sample(n));
    }
    // Decode (1 token) and a prompt chunk (512 tokens) of Mamba-130m (d_inner 1536, d_state 16),
    // RWKV-6 1.6B (32 heads of 64) and RWKV-7 0.1B (12 heads of 64).
    for t in [1, 512] {
        specs.push(Spec::Scan("mamba-130m", (1536, 16), t));
        specs.push(Spec::Wkv(6, "rwkv6-1.6b", (32, 64), t));
        specs.push(Spec::Wkv(7, "rwkv7-0.1b", (12, 64), t));
    }
    // Lavapipe runs a dispatch in milliseconds, a GPU in microseconds.
    let reps = if info.device_type == wgpu::DeviceType::Cpu {
        8
    } else {
        64
    };
    println!(
        "{:<52} {:>6} {:>10} {:>9} {:>8} {:>9}",
        "case", "clock", "us", "GFLOP/s", "GB/s", "roofline"
    );
    for spec in specs {
        let name = spec.name();
        if !name.contains(&filter) {
            continue;
        }
        // Built one at a time, so only one case's rotating copies exist at once.
        let case = match spec {
            Spec::Quant(kernel, w, rows, k, m, _) => quant_case(&gpu, kernel, w, rows, k, m)?,
            Spec::W8A8(rows, k, _, dot) => w8a8_case(&gpu, rows, k, dot)?,
            Spec::Matmul(dtype, m, n, k) => matmul_case(&gpu, dtype, m, n, k)?,
            Spec::Quantize(q, k) => quantize_case(&gpu, q, k)?,
            Spec::Norm(n) => rms_norm_case(&gpu, n)?,
            Spec::Attention(_, heads, ctx, n_tok, path) => {
                attention_case(&gpu, heads, ctx, n_tok, path)?
            }
            Spec::Sample(n) => sample_case(&gpu, n)?,
            Spec::Scan(_, (d, n), t) => scan_case(&gpu, d, n, t)?,
            Spec::Wkv(v, _, (h, n), t) => wkv_case(&gpu, v, h, n, t)?,
        };
        let (secs, clock) = time(&gpu, &case, reps)?;
        let gbps = case.bytes / secs * 1e-9;
        let roof = peak.map_or("-".to_string(), |p| format!("{:.0}%", 100.0 * gbps / p));
        println!(
            "{:<52} {:>6} {:>10.2} {:>9.1} {:>8.1} {:>9}",
            name,
            clock,
            secs * 1e6,
            case.flops / secs * 1e-9,
            gbps,
            roof
        );
    }
    Ok(())
}
