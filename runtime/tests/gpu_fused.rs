//! The fused decode kernels on a real adapter: `prep` (residual add, post-norm, RMSNorm, int8
//! quantization) against its CPU twin (kiln-cpu's RMSNorm, llama.cpp's quantization rules in
//! common::quant); `gemv_prep` and `gemv_prep_gated` against the unfused kernels they replace
//! (`prep` then `gemv_q8` / `gemv_gated`, which are checked against the CPU elsewhere) and
//! against an f64 product on the CPU; `rope_kv` against kiln-cpu's RMSNorm and RoPE and against
//! the unfused add/norm/rope/store kernels. Odd sizes, several rows, guard words, every format.

mod common;

use common::quant::{
    QUANTIZED, dequant_rows, int8_bound, random_weights, reference_quantize, test_k,
};
use common::{Rng, as_f32, assert_close, gpu, guarded_output, read_guarded, splits, upload_f32};
use half::f16;
use kiln::Gpu;
use kiln::gpu::View;
use kiln::ops::activation::{Act, add_inplace};
use kiln::ops::attention::{Attention, KvType, kv_store};
use kiln::ops::gemv::{ActInput, ActQuant, GemvShape, IntDot, QAct, WType, gemv_q8};
use kiln::ops::gemv_gated::{GatedShape, gemv_gated};
use kiln::ops::gemv_prep::{gemv_prep, gemv_prep_gated};
use kiln::ops::norm::rms_norm;
use kiln::ops::prep::{Add, PrepIn, PrepOut, prep};
use kiln::ops::reduce::Combine;
use kiln::ops::rope::{Rope, RopeLayout, rope};
use kiln::ops::rope_kv::{RopeKv, rope_kv};
use kiln::tune::{GemvOp, GemvPick};

const EPS: f32 = 1e-6;

/// Which parts of the preparation a case turns on: (add t, post-norm t, norm, store r).
type Flags = (bool, bool, bool, bool);

/// Quantization only; norm only; a llama block's input; a Gemma block's input.
const FLAGS: [Flags; 4] = [
    (false, false, false, false),
    (false, false, true, false),
    (true, false, true, true),
    (true, true, true, true),
];

/// The inputs of a preparation: rows of x and t (rows `x_row0..x_row0 + m` are used), and a
/// vector buffer holding the post-norm weight at `post` and the norm weight at `norm`.
struct Inputs {
    k: usize,
    rows: usize,
    x: Vec<f32>,
    t: Vec<f32>,
    wp: Vec<f32>,
    wn: Vec<f32>,
    post: u32,
    norm: u32,
    xb: wgpu::Buffer,
    tb: wgpu::Buffer,
    vecs: wgpu::Buffer,
}

impl Inputs {
    fn new(gpu: &Gpu, rng: &mut Rng, k: usize, rows: usize) -> Inputs {
        let x: Vec<f32> = rng.vec(rows * k).iter().map(|v| v * 3.0).collect();
        let t: Vec<f32> = rng.vec(rows * k).iter().map(|v| v * 5.0).collect();
        let (wp, wn) = (rng.vec(k), rng.vec(k));
        // Offsets that are not multiples of anything.
        let (post, norm) = (3u32, 3 + k as u32 + 5);
        let mut v = vec![0f32; norm as usize + k + 2];
        v[post as usize..post as usize + k].copy_from_slice(&wp);
        v[norm as usize..norm as usize + k].copy_from_slice(&wn);
        Inputs {
            xb: upload_f32(gpu, &x),
            tb: upload_f32(gpu, &t),
            vecs: upload_f32(gpu, &v),
            k,
            rows,
            x,
            t,
            wp,
            wn,
            post,
            norm,
        }
    }

    fn input<'a>(&'a self, f: Flags, write: Option<View<'a>>, x_row0: u32) -> PrepIn<'a> {
        PrepIn {
            x: (&self.xb).into(),
            add: f.0.then(|| Add {
                t: (&self.tb).into(),
                post: f.1.then_some(self.post),
            }),
            norm: f.2.then_some(self.norm),
            vecs: Some((&self.vecs).into()),
            write: if f.3 { write } else { None },
            k: self.k as u32,
            eps: EPS,
            x_row0,
        }
    }

    /// The CPU twin: (r, v) of rows `x_row0..x_row0 + m`.
    fn cpu(&self, f: Flags, x_row0: usize, m: usize) -> (Vec<f32>, Vec<f32>) {
        let k = self.k;
        let (mut r, mut v) = (Vec::new(), Vec::new());
        let mut scratch = vec![0f32; k];
        for row in x_row0..x_row0 + m {
            let xr = &self.x[row * k..(row + 1) * k];
            let mut rr = xr.to_vec();
            if f.0 {
                let tr = &self.t[row * k..(row + 1) * k];
                let d = if f.1 {
                    kiln_cpu::ops::rms_norm(tr, &self.wp, EPS, &mut scratch).unwrap();
                    scratch.clone()
                } else {
                    tr.to_vec()
                };
                for (a, b) in rr.iter_mut().zip(&d) {
                    *a += b;
                }
            }
            let vr = if f.2 {
                kiln_cpu::ops::rms_norm(&rr, &self.wn, EPS, &mut scratch).unwrap();
                scratch.clone()
            } else {
                rr.clone()
            };
            r.extend(rr);
            v.extend(vr);
        }
        (r, v)
    }
}

/// A guarded output of `words` words, and its view.
fn out(gpu: &Gpu, words: usize) -> (wgpu::Buffer, u64) {
    guarded_output(gpu, words)
}

/// `prep` against its CPU twin for every output format and combination of steps, reading rows
/// 1..4 of a 5-row stream. The residual and the f32 output are float arithmetic in another
/// summation order (the mean of squares): within 1e-5. The int8 values follow llama.cpp's
/// rules on the twin's values: at most one step apart, where a value sits on a rounding
/// boundary the last bits move across (rarely); scales within one f16 ulp (2^-10 relative;
/// Q8_K's f32 scale within 1e-5, the extreme it comes from within a few ulp).
#[test]
fn prep_matches_its_cpu_twin() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(31);
    let (m, x_row0) = (3usize, 1usize);
    for quant in [
        Some(ActQuant::Q8_0),
        Some(ActQuant::Q8_1),
        Some(ActQuant::Q8K),
        None,
    ] {
        let k = if quant == Some(ActQuant::Q8K) {
            768
        } else {
            544
        };
        let inp = Inputs::new(&gpu, &mut rng, k, 5);
        for f in FLAGS {
            let what = format!("prep {quant:?} {f:?}");
            let (xo, xo_off) = out(&gpu, inp.rows * k);
            let write = View::new(&xo, xo_off, (inp.rows * k * 4) as u64);
            let input = inp.input(f, Some(write), x_row0 as u32);
            let (r_want, v_want) = inp.cpu(f, x_row0, m);
            let mut rec = gpu.recorder();
            let (bq, bd, bs) = QAct::sizes(m as u32, k as u32);
            let (q, oq) = out(&gpu, bq as usize / 4);
            let (d, od) = out(&gpu, bd as usize / 4);
            let (s, os) = out(&gpu, bs as usize / 4);
            let (y, oy) = out(&gpu, m * k);
            let target = match quant {
                Some(quant) => PrepOut::Q8(QAct {
                    quant,
                    xq: View::new(&q, oq, bq),
                    xd: View::new(&d, od, bd),
                    xs: View::new(&s, os, bs),
                }),
                None => PrepOut::F32(View::new(&y, oy, (m * k * 4) as u64)),
            };
            prep(&mut rec, &input, target, m as u32).unwrap();
            rec.submit().unwrap();
            let written = as_f32(&read_guarded(&gpu, &xo, inp.rows * k));
            if f.3 {
                assert!(written[..x_row0 * k].iter().all(|&v| v == 0.0), "{what}");
                assert_close(
                    &format!("{what} residual"),
                    &written[x_row0 * k..(x_row0 + m) * k],
                    &r_want,
                    1e-5,
                    1e-5,
                );
            } else {
                assert!(
                    written.iter().all(|&v| v == 0.0),
                    "{what}: wrote a residual"
                );
            }
            let Some(quant) = quant else {
                let got = as_f32(&read_guarded(&gpu, &y, m * k));
                assert_close(&what, &got, &v_want, 1e-5, 1e-5);
                continue;
            };
            let (wq, wd, ws) = reference_quantize(quant, &v_want);
            let gq = read_guarded(&gpu, &q, bq as usize / 4);
            let gq: &[i8] = bytemuck::cast_slice(&gq);
            let gd = as_f32(&read_guarded(&gpu, &d, bd as usize / 4));
            let gs = as_f32(&read_guarded(&gpu, &s, bs as usize / 4));
            for i in 0..m * k {
                let diff = (i32::from(gq[i]) - i32::from(wq[i])).abs();
                assert!(diff <= 1, "{what} q[{i}]: {} vs {}", gq[i], wq[i]);
            }
            let moved = (0..m * k).filter(|&i| gq[i] != wq[i]).count();
            assert!(moved <= m * k / 200, "{what}: {moved} int8 values moved");
            let d_tol = if quant == ActQuant::Q8K { 1e-5 } else { 1e-3 };
            assert_close(&format!("{what} d"), &gd, &wd, 0.0, d_tol);
            // Sums: the GPU's own int8 values summed (exact for Q8_K, f16-rounded times the
            // scale for Q8_0/Q8_1), then against the reference within the moved values.
            for u in 0..m * k / 32 {
                let sum: i32 = gq[32 * u..32 * u + 32].iter().map(|&v| i32::from(v)).sum();
                let own = if quant == ActQuant::Q8K {
                    sum as f32
                } else {
                    f16::from_f32(sum as f32 * gd[u]).to_f32()
                };
                assert!(
                    (gs[u] - own).abs() <= 1e-3 * own.abs() + 1e-6,
                    "{what} s[{u}]: {} vs its own {own}",
                    gs[u]
                );
                let step = if quant == ActQuant::Q8K { 1.0 } else { wd[u] };
                assert!(
                    (gs[u] - ws[u]).abs() <= 1e-3 * ws[u].abs() + 2.0 * step,
                    "{what} s[{u}]: {} vs {}",
                    gs[u],
                    ws[u]
                );
            }
        }
    }
}

/// Weights of `rows` rows (and, gated, the up rows from the next 256-byte boundary after
/// them): the buffer and the gate rows' f32 values.
struct Weights {
    buf: wgpu::Buffer,
    up_offset: u32,
    gate: Vec<f32>,
}

fn weights(gpu: &Gpu, rng: &mut Rng, w: WType, rows: usize, k: usize) -> Weights {
    let g = random_weights(rng, w, rows, k);
    let u = random_weights(rng, w, rows, k);
    let up_offset = g.len().next_multiple_of(256);
    let mut both = g.clone();
    both.resize(up_offset, 0);
    both.extend_from_slice(&u);
    Weights {
        buf: gpu.upload("weights", &both).unwrap(),
        up_offset: up_offset as u32,
        gate: dequant_rows(w, &g, rows, k),
    }
}

/// Output rows `rows + 3` wide, written from column 1: the view, and a reader that returns the
/// written columns after checking that columns 0, rows + 1 and rows + 2 kept their zeros.
const Y_OFFSET: u32 = 1;

fn written(gpu: &Gpu, y: &wgpu::Buffer, m: usize, rows: usize, what: &str) -> Vec<f32> {
    let ys = rows + 3;
    let all = as_f32(&read_guarded(gpu, y, m * ys));
    let mut got = Vec::new();
    for j in 0..m {
        let row = &all[j * ys..(j + 1) * ys];
        assert!(
            row[0] == 0.0 && row[ys - 2] == 0.0 && row[ys - 1] == 0.0,
            "{what}: wrote outside its columns"
        );
        got.extend_from_slice(&row[1..1 + rows]);
    }
    got
}

/// The fused GEMVs equal the unfused `prep` + `gemv_q8` (and `prep` + `gemv_gated`) on the same
/// adapter, for every weight format, split and step combination, 1 and 3 rows: bit for bit with
/// the per-thread split (same arithmetic in the same order), and within 1e-6 of the largest
/// output with the workgroup split (the fused kernel sums a row's units in 16 lanes, gemv_q8 in
/// a 64-wide reduction). The residual they store is bit for bit `prep`'s (same kernel code).
#[test]
fn fused_gemvs_equal_prep_then_gemv() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(32);
    let rows = 37usize;
    for w in QUANTIZED {
        let k = test_k(w);
        let ws = weights(&gpu, &mut rng, w, rows, k);
        let inp = Inputs::new(&gpu, &mut rng, k, 4);
        let quant = ActQuant::for_weights(w).unwrap();
        let (bq, bd, bs) = QAct::sizes(3, k as u32);
        let acts: Vec<kiln::gpu::GpuBuffer> = [bq, bd, bs]
            .iter()
            .map(|&n| gpu.alloc_storage("acts", n).unwrap())
            .collect();
        let qa = QAct {
            quant,
            xq: acts[0].buffer().into(),
            xd: acts[1].buffer().into(),
            xs: acts[2].buffer().into(),
        };
        for m in [1usize, 3] {
            for f in [FLAGS[0], FLAGS[3]] {
                for split in splits(&gpu) {
                    for gated in [None, Some(Act::Silu), Some(Act::Gelu)] {
                        let what = format!("{w:?} m={m} {f:?} {split:?} {gated:?}");
                        let ys = (rows + 3) as u32;
                        let (yf, of) = out(&gpu, m * rows + 3 * m);
                        let (yu, ou) = out(&gpu, m * rows + 3 * m);
                        let (xf, oxf) = out(&gpu, 4 * k);
                        let (xu, oxu) = out(&gpu, 4 * k);
                        let vy = |b, o| View::new(b, o, (m as u64) * u64::from(ys) * 4);
                        let vx = |b, o| View::new(b, o, (4 * k * 4) as u64);
                        let mut rec = gpu.recorder();
                        let gemv_shape = GemvShape {
                            wtype: w,
                            k: k as u32,
                            rows: rows as u32,
                            m: m as u32,
                            y_stride: ys,
                            y_offset: Y_OFFSET,
                            accumulate: false,
                        };
                        let gated_shape = |act| GatedShape {
                            wtype: w,
                            act,
                            k: k as u32,
                            rows: rows as u32,
                            m: m as u32,
                            up_offset: ws.up_offset,
                            y_stride: ys,
                            y_offset: Y_OFFSET,
                        };
                        let fused_in = inp.input(f, Some(vx(&xf, oxf)), 1);
                        let unfused_in = inp.input(f, Some(vx(&xu, oxu)), 1);
                        let wv: View<'_> = (&ws.buf).into();
                        let rb = w.row_bytes(k as u32).unwrap() as u64 * rows as u64;
                        let gate_view = View::new(&ws.buf, 0, rb.next_multiple_of(4));
                        prep(&mut rec, &unfused_in, PrepOut::Q8(qa), m as u32).unwrap();
                        match gated {
                            None => {
                                gemv_prep(
                                    &mut rec,
                                    GemvPick {
                                        split,
                                        dot: IntDot::best(&gpu),
                                        wg: GemvOp::Prep.wg_sizes()[0],
                                    },
                                    gate_view,
                                    &fused_in,
                                    vy(&yf, of),
                                    gemv_shape,
                                )
                                .unwrap();
                                gemv_q8(&mut rec, split, gate_view, qa, vy(&yu, ou), gemv_shape)
                                    .unwrap();
                            }
                            Some(act) => {
                                gemv_prep_gated(
                                    &mut rec,
                                    GemvPick {
                                        split,
                                        dot: IntDot::best(&gpu),
                                        wg: GemvOp::Prep.wg_sizes()[0],
                                    },
                                    wv,
                                    &fused_in,
                                    vy(&yf, of),
                                    gated_shape(act),
                                )
                                .unwrap();
                                gemv_gated(
                                    &mut rec,
                                    split,
                                    wv,
                                    ActInput::Q8(qa),
                                    vy(&yu, ou),
                                    gated_shape(act),
                                )
                                .unwrap();
                            }
                        }
                        rec.submit().unwrap();
                        let got = written(&gpu, &yf, m, rows, &what);
                        let want = written(&gpu, &yu, m, rows, &what);
                        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                        assert!(scale > 0.0, "{what}: a non-trivial reference");
                        let tol = if split == kiln::ops::gemv::Split::Thread {
                            0.0
                        } else {
                            1e-6 * scale
                        };
                        assert_close(&what, &got, &want, tol, 0.0);
                        let (a, b) = (
                            read_guarded(&gpu, &xf, 4 * k),
                            read_guarded(&gpu, &xu, 4 * k),
                        );
                        assert!(a == b, "{what}: the stored residuals differ");
                    }
                }
            }
        }
    }
}

/// The fused GEMV against its CPU twin: the prepared rows in f32 (kiln-cpu's RMSNorm), times
/// the dequantized weights in f64. The bound is the int8 quantization of the activations (each
/// value off by at most half a step d: variance d^2/12 per value, 6 sigma over the row) plus the
/// f16 rounding of each block's scale (2^-11 of its partial dot), as int8_path_agrees_with_kiln_cpu.
#[test]
fn fused_gemv_matches_its_cpu_twin() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(33);
    let (rows, m) = (29usize, 2usize);
    for w in QUANTIZED {
        let k = test_k(w);
        let ws = weights(&gpu, &mut rng, w, rows, k);
        let inp = Inputs::new(&gpu, &mut rng, k, 3);
        let f = FLAGS[3];
        let (_, v) = inp.cpu(f, 1, m);
        let split = kiln::ops::gemv::Split::best(&gpu);
        let (y, oy) = out(&gpu, m * (rows + 3));
        let (xo, oxo) = out(&gpu, 3 * k);
        let mut rec = gpu.recorder();
        let rb = w.row_bytes(k as u32).unwrap() as u64 * rows as u64;
        let shape = GemvShape {
            wtype: w,
            k: k as u32,
            rows: rows as u32,
            m: m as u32,
            y_stride: (rows + 3) as u32,
            y_offset: Y_OFFSET,
            accumulate: false,
        };
        let input = inp.input(f, Some(View::new(&xo, oxo, (3 * k * 4) as u64)), 1);
        gemv_prep(
            &mut rec,
            GemvPick {
                split,
                dot: IntDot::best(&gpu),
                wg: GemvOp::Prep.wg_sizes()[0],
            },
            View::new(&ws.buf, 0, rb.next_multiple_of(4)),
            &input,
            View::new(&y, oy, (m * (rows + 3) * 4) as u64),
            shape,
        )
        .unwrap();
        rec.submit().unwrap();
        let got = written(&gpu, &y, m, rows, &format!("{w:?}"));
        let block = if w.block_elems() == 256 { 256 } else { 32 };
        for j in 0..m {
            let xs = &v[j * k..(j + 1) * k];
            for r in 0..rows {
                let wr = &ws.gate[r * k..(r + 1) * k];
                let exact: f64 = wr
                    .iter()
                    .zip(xs)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum();
                let bound = int8_bound(wr, xs, block);
                let g = f64::from(got[j * rows + r]);
                assert!(
                    (g - exact).abs() <= bound,
                    "{w:?} [{j}, {r}]: GPU {g}, exact {exact}, bound {bound}"
                );
            }
        }
    }
}

/// One rope_kv case: geometry, which extras are on, and the data.
struct RopeCase {
    layout: RopeLayout,
    kv: KvType,
    bias: bool,
    qk_norm: bool,
    freq_scale: f32,
    /// Divide the rotation frequencies by `RopeData::factors` (Llama 3's `rope_freqs`).
    freq_factors: bool,
}

const N_HEAD: usize = 4;
const N_KV: usize = 2;
const HD: usize = 48;
const ROT: usize = 32;
const N_TOK: usize = 3;
const POS0: u32 = 5;
const CAP: usize = 12;
const BASE: f32 = 10000.0;

/// What rope_kv produced: q (N_TOK, N_HEAD, HD) and the two caches as f32.
struct RopeOut {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

fn cache_values(kv: KvType, words: &[u32]) -> Vec<f32> {
    match kv {
        KvType::F32 => as_f32(words),
        KvType::F16 => words
            .iter()
            .flat_map(|&w| [w as u16, (w >> 16) as u16].map(|h| f16::from_bits(h).to_f32()))
            .collect(),
    }
}

/// The projection rows, the vector buffer (biases from 2, q-norm and k-norm weights and the
/// frequency divisors after), and its offsets.
struct RopeData {
    qkv: Vec<f32>,
    bias: Vec<f32>,
    qn: Vec<f32>,
    kn: Vec<f32>,
    factors: Vec<f32>,
    vecs: Vec<f32>,
    offsets: (u32, u32, u32, u32),
}

fn rope_data(rng: &mut Rng) -> RopeData {
    let row = (N_HEAD + 2 * N_KV) * HD;
    let qkv: Vec<f32> = rng.vec(N_TOK * row).iter().map(|v| v * 2.0).collect();
    let (bias, qn, kn) = (rng.vec(row), rng.vec(HD), rng.vec(HD));
    // Divisors from 1 to 8, as Llama 3's between its high- and low-frequency bands.
    let factors: Vec<f32> = (0..ROT / 2).map(|_| 4.5 + 3.5 * rng.f32()).collect();
    let (b0, q0, k0) = (2u32, 2 + row as u32 + 1, 2 + row as u32 + 1 + HD as u32 + 3);
    let f0 = k0 + HD as u32 + 1;
    let mut vecs = vec![0f32; f0 as usize + ROT / 2];
    vecs[b0 as usize..b0 as usize + row].copy_from_slice(&bias);
    vecs[q0 as usize..q0 as usize + HD].copy_from_slice(&qn);
    vecs[k0 as usize..k0 as usize + HD].copy_from_slice(&kn);
    vecs[f0 as usize..].copy_from_slice(&factors);
    RopeData {
        qkv,
        bias,
        qn,
        kn,
        factors,
        vecs,
        offsets: (b0, q0, k0, f0),
    }
}

fn run_rope_kv(gpu: &Gpu, c: &RopeCase, d: &RopeData) -> RopeOut {
    let qkv = upload_f32(gpu, &d.qkv);
    let vecs = upload_f32(gpu, &d.vecs);
    let cache_words = N_KV * CAP * HD * c.kv.bytes() as usize / 4;
    let (kc, okc) = out(gpu, cache_words);
    let (vc, ovc) = out(gpu, cache_words);
    let (q, oq) = out(gpu, N_TOK * N_HEAD * HD);
    let s = RopeKv {
        n_head: N_HEAD as u32,
        n_kv_head: N_KV as u32,
        head_dim: HD as u32,
        rot_dims: ROT as u32,
        n_tok: N_TOK as u32,
        pos0: POS0,
        capacity: CAP as u32,
        layout: c.layout,
        kv: c.kv,
        base: BASE,
        freq_scale: c.freq_scale,
        eps: EPS,
        bias: c.bias.then_some(d.offsets.0),
        qk_norm: c.qk_norm.then_some([d.offsets.1, d.offsets.2]),
        freq_factors: c.freq_factors.then_some(d.offsets.3),
    };
    let mut rec = gpu.recorder();
    let cv = |b, o| View::new(b, o, (cache_words * 4) as u64);
    rope_kv(
        &mut rec,
        (&qkv).into(),
        Some((&vecs).into()),
        View::new(&q, oq, (N_TOK * N_HEAD * HD * 4) as u64),
        cv(&kc, okc),
        cv(&vc, ovc),
        s,
    )
    .unwrap();
    rec.submit().unwrap();
    RopeOut {
        q: as_f32(&read_guarded(gpu, &q, N_TOK * N_HEAD * HD)),
        k: cache_values(c.kv, &read_guarded(gpu, &kc, cache_words)),
        v: cache_values(c.kv, &read_guarded(gpu, &vc, cache_words)),
    }
}

/// rope_kv against its CPU twin (bias add, kiln-cpu's RMSNorm per head and RoPE, the cache
/// written at positions pos0..), plain and with linear scaling and Llama 3's frequency divisors:
/// q within 2e-5 (the GPU forms angles in f32, the CPU in f64, as rope_both_layouts_match_cpu),
/// the f16 cache within one f16 rounding of that, every other cache position untouched.
#[test]
fn rope_kv_matches_its_cpu_twin() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(34);
    let row = (N_HEAD + 2 * N_KV) * HD;
    for layout in [RopeLayout::Norm, RopeLayout::Neox] {
        for kv in [KvType::F16, KvType::F32] {
            for (bias, qk_norm, scaled) in [
                (false, false, false),
                (true, false, false),
                (false, true, false),
                (false, false, true),
                (false, true, true),
            ] {
                let c = RopeCase {
                    layout,
                    kv,
                    bias,
                    qk_norm,
                    freq_scale: if scaled { 0.25 } else { 1.0 },
                    freq_factors: scaled,
                };
                let what = format!(
                    "rope_kv {layout:?} {kv:?} bias={bias} qk_norm={qk_norm} scaled={scaled}"
                );
                let d = rope_data(&mut rng);
                let got = run_rope_kv(&gpu, &c, &d);
                let cpu_layout = match layout {
                    RopeLayout::Norm => kiln_cpu::ops::RopeLayout::Normal,
                    RopeLayout::Neox => kiln_cpu::ops::RopeLayout::NeoX,
                };
                let mut q_want = vec![0f32; N_TOK * N_HEAD * HD];
                let mut k_want = vec![0f32; N_KV * CAP * HD];
                let mut v_want = vec![0f32; N_KV * CAP * HD];
                let mut written = vec![false; N_KV * CAP * HD];
                let freqs = kiln_cpu::ops::RopeFreqs {
                    base: BASE,
                    scale: c.freq_scale,
                    factors: scaled.then_some(&d.factors[..]),
                };
                for t in 0..N_TOK {
                    for hi in 0..N_HEAD + 2 * N_KV {
                        let src = t * row + hi * HD;
                        let mut h: Vec<f32> = (0..HD)
                            .map(|i| d.qkv[src + i] + if bias { d.bias[hi * HD + i] } else { 0.0 })
                            .collect();
                        let is_v = hi >= N_HEAD + N_KV;
                        if !is_v {
                            if qk_norm {
                                let w = if hi < N_HEAD { &d.qn } else { &d.kn };
                                let mut o = vec![0f32; HD];
                                kiln_cpu::ops::rms_norm(&h, w, EPS, &mut o).unwrap();
                                h = o;
                            }
                            let pos = POS0 as usize + t;
                            kiln_cpu::ops::rope(&mut h, HD, ROT, pos, &freqs, cpu_layout).unwrap();
                        }
                        if hi < N_HEAD {
                            q_want[(t * N_HEAD + hi) * HD..][..HD].copy_from_slice(&h);
                        } else {
                            let kvh = if is_v {
                                hi - N_HEAD - N_KV
                            } else {
                                hi - N_HEAD
                            };
                            let at = (kvh * CAP + POS0 as usize + t) * HD;
                            let cache = if is_v { &mut v_want } else { &mut k_want };
                            cache[at..at + HD].copy_from_slice(&h);
                            written[at..at + HD].fill(true);
                        }
                    }
                }
                assert_close(&format!("{what} q"), &got.q, &q_want, 2e-5, 0.0);
                let rel = if kv == KvType::F16 { 1e-3 } else { 0.0 };
                for (name, g, want) in [("k", &got.k, &k_want), ("v", &got.v, &v_want)] {
                    for i in 0..g.len() {
                        if written[i] {
                            let tol = 2e-5 + rel * want[i].abs();
                            assert!(
                                (g[i] - want[i]).abs() <= tol,
                                "{what} {name}[{i}]: {} vs {}",
                                g[i],
                                want[i]
                            );
                        } else {
                            assert_eq!(g[i], 0.0, "{what}: {name} position outside pos0.. written");
                        }
                    }
                }
            }
        }
    }
}

/// rope_kv equals the unfused kernels it replaces (add_inplace for the biases, rms_norm per
/// head, rope, kv_store) on the same adapter, with linear RoPE scaling: within 1e-6 (the norms'
/// means of squares are summed by differently sized workgroups).
#[test]
fn rope_kv_equals_the_unfused_kernels() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(35);
    let row = (N_HEAD + 2 * N_KV) * HD;
    let (qd, kvd) = (N_HEAD * HD, N_KV * HD);
    for layout in [RopeLayout::Norm, RopeLayout::Neox] {
        for kv in [KvType::F16, KvType::F32] {
            let c = RopeCase {
                layout,
                kv,
                bias: true,
                qk_norm: true,
                freq_scale: 0.25,
                freq_factors: false,
            };
            let d = rope_data(&mut rng);
            let got = run_rope_kv(&gpu, &c, &d);
            // The unfused path on separate q, k, v rows.
            let split = |lo: usize, n: usize| -> Vec<f32> {
                (0..N_TOK)
                    .flat_map(|t| d.qkv[t * row + lo..t * row + lo + n].to_vec())
                    .collect()
            };
            let (q, k, v) = (
                upload_f32(&gpu, &split(0, qd)),
                upload_f32(&gpu, &split(qd, kvd)),
                upload_f32(&gpu, &split(qd + kvd, kvd)),
            );
            let (qn, kn) = (
                gpu.alloc_storage("qn", (N_TOK * qd * 4) as u64).unwrap(),
                gpu.alloc_storage("kn", (N_TOK * kvd * 4) as u64).unwrap(),
            );
            let b = |lo: usize, n: usize| upload_f32(&gpu, &d.bias[lo..lo + n]);
            let (bq, bk, bv) = (b(0, qd), b(qd, kvd), b(qd + kvd, kvd));
            let (wq, wk) = (upload_f32(&gpu, &d.qn), upload_f32(&gpu, &d.kn));
            let cache_bytes = (N_KV * CAP * HD) as u64 * kv.bytes();
            let zeros = vec![0u8; cache_bytes as usize];
            let kc = gpu.upload("kc", &zeros).unwrap();
            let vc = gpu.upload("vc", &zeros).unwrap();
            let mut rec = gpu.recorder();
            let n = N_TOK as u32;
            add_inplace(
                &mut rec,
                (&q).into(),
                (&bq).into(),
                n * qd as u32,
                qd as u32,
            )
            .unwrap();
            add_inplace(
                &mut rec,
                (&k).into(),
                (&bk).into(),
                n * kvd as u32,
                kvd as u32,
            )
            .unwrap();
            add_inplace(
                &mut rec,
                (&v).into(),
                (&bv).into(),
                n * kvd as u32,
                kvd as u32,
            )
            .unwrap();
            let norm = |rec: &mut kiln::gpu::Recorder,
                        x: &wgpu::Buffer,
                        w: &wgpu::Buffer,
                        o: View<'_>,
                        heads: usize| {
                rms_norm(
                    rec,
                    Combine::SharedMemory,
                    x.into(),
                    w.into(),
                    o,
                    (N_TOK * heads) as u32,
                    HD as u32,
                    EPS,
                    0.0,
                )
                .unwrap()
            };
            norm(&mut rec, &q, &wq, (&qn).into(), N_HEAD);
            norm(&mut rec, &k, &wk, (&kn).into(), N_KV);
            let r = Rope {
                layout,
                n_head: N_HEAD as u32,
                head_dim: HD as u32,
                rot_dims: ROT as u32,
                n_tok: n,
                pos0: POS0,
                base: BASE,
                freq_scale: 0.25,
            };
            rope(&mut rec, (&qn).into(), r).unwrap();
            rope(
                &mut rec,
                (&kn).into(),
                Rope {
                    n_head: N_KV as u32,
                    ..r
                },
            )
            .unwrap();
            let a = Attention {
                n_head: N_HEAD as u32,
                n_kv_head: N_KV as u32,
                head_dim: HD as u32,
                capacity: CAP as u32,
                n_tok: n,
                pos0: POS0,
                window: 0,
                scale: 1.0,
                softcap: 0.0,
                kv,
            };
            kv_store(&mut rec, (&kn).into(), (&kc).into(), a).unwrap();
            kv_store(&mut rec, (&v).into(), (&vc).into(), a).unwrap();
            let backs = [
                rec.read((&qn).into()).unwrap(),
                rec.read((&kc).into()).unwrap(),
                rec.read((&vc).into()).unwrap(),
            ];
            rec.submit().unwrap();
            let [bq, bk, bv] = backs.map(|b| b.wait().unwrap());
            let what = format!("rope_kv vs unfused {layout:?} {kv:?}");
            let words = |b: &[u8]| -> Vec<u32> { bytemuck::pod_collect_to_vec(b) };
            assert_close(
                &format!("{what} q"),
                &got.q,
                &as_f32(&words(&bq))[..N_TOK * qd],
                1e-6,
                1e-6,
            );
            let n_cache = N_KV * CAP * HD;
            let (wk, wv) = (
                cache_values(kv, &words(&bk))[..n_cache].to_vec(),
                cache_values(kv, &words(&bv))[..n_cache].to_vec(),
            );
            let rel = if kv == KvType::F16 { 1e-3 } else { 1e-6 };
            assert_close(&format!("{what} k"), &got.k, &wk, 1e-6, rel);
            assert_close(&format!("{what} v"), &got.v, &wv, 0.0, 0.0);
        }
    }
}
