//! Every model kernel on a real adapter against its CPU reference (kiln-cpu, or a reference
//! written here where kiln-cpu's arithmetic differs on purpose): seeded random inputs, sizes that
//! are not multiples of any tile, guard words around every output, NaN/inf checks, and a stated
//! tolerance per op with its reason.

mod common;

use common::quant::{
    QUANTIZED, dequant_rows, int8_bound, random_weights, reference_quantize, test_k,
};
use common::{
    Rng, as_f32, assert_close, combines, gpu, guarded_output, read_guarded, splits, upload_f32,
};
use half::f16;
use kiln::Gpu;
use kiln::gpu::{DType, View};
use kiln::ops::activation::{Act, add_inplace, gated};
use kiln::ops::attention::{Attention, KvType, attention, kv_store, scratch_bytes};
use kiln::ops::gemv::{
    ActQuant, EmbedShape, GemvShape, IntDot, QAct, Split, WType, embed, gemv_q8, gemv_q8_with,
    gemv_with, quantize,
};
use kiln::ops::norm::rms_norm;
use kiln::ops::reduce::Combine;
use kiln::ops::rope::{Rope, RopeLayout, rope};
use kiln::ops::sample::{NON_FINITE_ID, argmax_with};
use kiln::tune::{GemvOp, GemvPick};
use kiln_cpu::ops::AttnParams;

fn upload(gpu: &Gpu, data: &[u8]) -> wgpu::Buffer {
    gpu.upload("test input", data).expect("upload")
}

fn guarded_with(gpu: &Gpu, init: &[f32]) -> (wgpu::Buffer, u64) {
    let (buf, off) = guarded_output(gpu, init.len());
    gpu.write(&buf, off, bytemuck::cast_slice(init));
    (buf, off)
}

fn out_view(buf: &wgpu::Buffer, off: u64, words: usize) -> View<'_> {
    View::new(buf, off, words as u64 * 4)
}

/// Both int8 dot products where the device has `dot4I8Packed`, the unpacked one elsewhere.
fn int_dots(gpu: &Gpu) -> Vec<IntDot> {
    if gpu.capabilities().dot4 {
        vec![IntDot::Unpacked, IntDot::Packed]
    } else {
        common::skip_feature_part("no dot4I8Packed: only the unpacked int8 dot is tested");
        vec![IntDot::Unpacked]
    }
}

/// Asserts `|got - want| <= rel * scale` per element (scale: the sum of |terms| of each dot
/// product, so the bound is relative to the size of what was summed, not to a result that may
/// cancel to near zero), and that got is finite.
fn assert_dot_close(what: &str, got: &[f32], want: &[f64], scale: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for i in 0..got.len() {
        assert!(got[i].is_finite(), "{what}[{i}] = {} is not finite", got[i]);
        let tol = rel * scale[i] + 1e-7;
        assert!(
            (f64::from(got[i]) - want[i]).abs() <= tol,
            "{what}[{i}]: got {}, want {} (tolerance {tol})",
            got[i],
            want[i]
        );
    }
}

/// Records one part of a gemv: (recorder, that part's weights, y, shape).
type RecordGemv<'a> = dyn Fn(&mut kiln::gpu::Recorder, View<'_>, View<'_>, GemvShape) + 'a;

/// The y layout every gemv test uses: `m` rows of `y_stride = rows + 3`; weight rows split in
/// two parts written at y_offset 1 and 1 + part0, so columns 0 and the last two must keep their
/// initial values.
struct GemvCase {
    w: WType,
    k: usize,
    rows: usize,
    m: usize,
    part0: usize,
}

impl GemvCase {
    fn y_stride(&self) -> usize {
        self.rows + 3
    }

    /// Runs `record(rec, part_weights, y_view, shape)` for both parts and checks the result
    /// against `want` (m, rows) (as f64) with the dot-product tolerance; `init` seeds y.
    #[allow(clippy::too_many_arguments, reason = "test driver")]
    fn check(
        &self,
        gpu: &Gpu,
        what: &str,
        weights: &[u8],
        accumulate: bool,
        init: &[f32],
        want: &[f64],
        scale: &[f64],
        rel: f64,
        record: &RecordGemv<'_>,
    ) {
        let ys = self.y_stride();
        let rb = self.w.row_bytes(self.k as u32).unwrap() as usize;
        let parts = [(0, self.part0), (self.part0, self.rows)];
        let bufs: Vec<wgpu::Buffer> = parts
            .iter()
            .map(|&(a, b)| upload(gpu, &weights[a * rb..b * rb]))
            .collect();
        let (y, off) = guarded_with(gpu, init);
        let mut rec = gpu.recorder();
        for (&(a, b), wb) in parts.iter().zip(&bufs) {
            let shape = GemvShape {
                wtype: self.w,
                k: self.k as u32,
                rows: (b - a) as u32,
                m: self.m as u32,
                y_stride: ys as u32,
                y_offset: (1 + a) as u32,
                accumulate,
            };
            record(&mut rec, wb.into(), out_view(&y, off, self.m * ys), shape);
        }
        rec.submit().unwrap();
        let got = as_f32(&read_guarded(gpu, &y, self.m * ys));
        for j in 0..self.m {
            let row = &got[j * ys..(j + 1) * ys];
            let init_row = &init[j * ys..(j + 1) * ys];
            for c in [0, ys - 2, ys - 1] {
                assert_eq!(
                    row[c].to_bits(),
                    init_row[c].to_bits(),
                    "{what}: column {c} of row {j} outside both parts changed"
                );
            }
            let mut want_row = want[j * self.rows..(j + 1) * self.rows].to_vec();
            if accumulate {
                for (r, v) in want_row.iter_mut().enumerate() {
                    *v += f64::from(init_row[1 + r]);
                }
            }
            let mut sc = scale[j * self.rows..(j + 1) * self.rows].to_vec();
            if accumulate {
                for (r, v) in sc.iter_mut().enumerate() {
                    *v += f64::from(init_row[1 + r].abs());
                }
            }
            assert_dot_close(
                &format!("{what} row {j}"),
                &row[1..1 + self.rows],
                &want_row,
                &sc,
                rel,
            );
        }
    }
}

#[test]
fn gemv_f32_and_f16_activations_every_type_and_split() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(10);
    let mut acts = vec![DType::F32];
    if gpu.capabilities().f16 {
        acts.push(DType::F16);
    } else {
        common::skip_feature_part("no SHADER_F16: the f16-activation GEMV is not tested");
    }
    for act in acts {
        for w in WType::ALL {
            let k = test_k(w);
            for m in [1usize, 3] {
                let case = GemvCase {
                    w,
                    k,
                    rows: 37,
                    m,
                    part0: 20,
                };
                let weights = random_weights(&mut rng, w, case.rows, k);
                let wf = dequant_rows(w, &weights, case.rows, k);
                let mut x = rng.vec(m * k);
                // f16 activations: the reference multiplies the values the kernel reads.
                let xb = match act {
                    DType::F32 => upload_f32(&gpu, &x),
                    DType::F16 => {
                        let h: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
                        for (v, h) in x.iter_mut().zip(&h) {
                            *v = h.to_f32();
                        }
                        upload(&gpu, bytemuck::cast_slice(&h))
                    }
                };
                let mut want = vec![0f64; m * case.rows];
                let mut scale = vec![0f64; m * case.rows];
                for j in 0..m {
                    for r in 0..case.rows {
                        for i in 0..k {
                            let t = f64::from(wf[r * k + i]) * f64::from(x[j * k + i]);
                            want[j * case.rows + r] += t;
                            scale[j * case.rows + r] += t.abs();
                        }
                    }
                }
                let init = rng.vec(m * case.y_stride());
                for split in splits(&gpu) {
                    for acc in [false, true] {
                        // f32 products summed in f32 in another order than the f64 reference:
                        // the error stays far below 2e-5 of the sum of |terms| for k <= 768
                        // (~300 ulp).
                        case.check(
                            &gpu,
                            &format!("gemv {act:?} acts {w:?} {split:?} m={m} acc={acc}"),
                            &weights,
                            acc,
                            &init,
                            &want,
                            &scale,
                            2e-5,
                            &|rec, wv, yv, s| {
                                gemv_with(rec, split, act, wv, (&xb).into(), yv, s).unwrap()
                            },
                        );
                    }
                }
            }
        }
    }
}

fn quants() -> [ActQuant; 3] {
    [ActQuant::Q8_0, ActQuant::Q8_1, ActQuant::Q8K]
}

#[test]
fn quantize_matches_llama_cpp_rules() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(11);
    for quant in quants() {
        let (m, k) = (3usize, if quant == ActQuant::Q8K { 768 } else { 224 });
        let mut x: Vec<f32> = rng.vec(m * k).into_iter().map(|v| v * 3.0).collect();
        // An all-zero block must give zero scales and quants, not NaN.
        x[..256].fill(0.0);
        let (wq, wd, ws) = reference_quantize(quant, &x);
        let xb = upload_f32(&gpu, &x);
        let (bq, bd, bs) = QAct::sizes(m as u32, k as u32);
        let (q, oq) = guarded_output(&gpu, bq as usize / 4);
        let (d, od) = guarded_output(&gpu, bd as usize / 4);
        let (s, os) = guarded_output(&gpu, bs as usize / 4);
        let act = QAct {
            quant,
            xq: View::new(&q, oq, bq),
            xd: View::new(&d, od, bd),
            xs: View::new(&s, os, bs),
        };
        let mut rec = gpu.recorder();
        quantize(&mut rec, (&xb).into(), act, m as u32, k as u32).unwrap();
        rec.submit().unwrap();
        let gq = read_guarded(&gpu, &q, bq as usize / 4);
        let gq: &[i8] = bytemuck::cast_slice(&gq);
        let gd = as_f32(&read_guarded(&gpu, &d, bd as usize / 4));
        let gs = as_f32(&read_guarded(&gpu, &s, bs as usize / 4));
        // Quants: exact, except that the shader's division may differ from a correctly rounded
        // one by an ulp, which can move a value sitting on a .5 boundary by one step: at most
        // one step, and rarely.
        for i in 0..m * k {
            let diff = (i32::from(gq[i]) - i32::from(wq[i])).abs();
            assert!(
                diff <= 1,
                "{quant:?} q[{i}]: got {}, want {} (x = {})",
                gq[i],
                wq[i],
                x[i]
            );
        }
        let mismatched = (0..m * k).filter(|&i| gq[i] != wq[i]).count();
        assert!(
            mismatched <= m * k / 500,
            "{quant:?}: {mismatched} quants differ"
        );
        // Scales: f16-rounded for Q8_0/Q8_1: exact unless the division's ulp (WGSL allows 2.5;
        // seen on an H100) crosses an f16 rounding boundary, then one f16 ulp (2^-10 relative);
        // f32 1/iscale for Q8_K (a few ulp).
        let d_tol = if quant == ActQuant::Q8K { 1e-6 } else { 1e-3 };
        assert_close(&format!("{quant:?} d"), &gd, &wd, 0.0, d_tol);
        // Q8_0 gets Q8_1's sums too (one kernel writes both; Q8_0's products ignore them).
        assert_close(&format!("{quant:?} s"), &gs, &ws, 0.0, 1e-3);
    }
}

#[test]
fn gemv_q8_every_type_and_split() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(12);
    for w in QUANTIZED {
        let quant = ActQuant::for_weights(w).unwrap();
        let k = test_k(w);
        for m in [1usize, 3] {
            let case = GemvCase {
                w,
                k,
                rows: 37,
                m,
                part0: 20,
            };
            let weights = random_weights(&mut rng, w, case.rows, k);
            let wf = dequant_rows(w, &weights, case.rows, k);
            let x = rng.vec(m * k);
            let (q, d, s) = reference_quantize(quant, &x);
            // Reference: the dequantized weights against the dequantized activations q * d, in
            // f64. Q4_1's min term meets the f16-rounded sum `s` instead of d * sum(q), as in
            // llama.cpp; other formats' min terms use exact integer sums.
            let rb = w.row_bytes(k as u32).unwrap() as usize;
            let mut want = vec![0f64; m * case.rows];
            let mut scale = vec![0f64; m * case.rows];
            for j in 0..m {
                for r in 0..case.rows {
                    let (mut acc, mut mag) = (0f64, 0f64);
                    for i in 0..k {
                        let xi = f64::from(q[j * k + i]) * f64::from(d[(j * k + i) / 32]);
                        let mut wi = f64::from(wf[r * k + i]);
                        if w == WType::Q4_1 {
                            let at = r * rb + i / 32 * 20 + 2;
                            let min = f16::from_le_bytes([weights[at], weights[at + 1]]);
                            wi -= f64::from(min.to_f32());
                            if i % 32 == 0 {
                                let t = f64::from(min.to_f32()) * f64::from(s[(j * k + i) / 32]);
                                acc += t;
                                mag += t.abs();
                            }
                        }
                        acc += wi * xi;
                        mag += (wi * xi).abs();
                    }
                    want[j * case.rows + r] = acc;
                    scale[j * case.rows + r] = mag;
                }
            }
            let qb = upload(&gpu, bytemuck::cast_slice(&q));
            let db = upload_f32(&gpu, &d);
            let sb = upload_f32(&gpu, &s);
            let act = QAct {
                quant,
                xq: (&qb).into(),
                xd: (&db).into(),
                xs: (&sb).into(),
            };
            let init = rng.vec(m * case.y_stride());
            // Every split, int8 dot product and workgroup size.
            let mut picks = Vec::new();
            for split in splits(&gpu) {
                for dot in int_dots(&gpu) {
                    for wg in GemvOp::Q8.wg_sizes() {
                        picks.push(GemvPick { split, dot, wg });
                    }
                }
            }
            for pick in picks {
                let GemvPick { split, dot, wg } = pick;
                for acc in [false, true] {
                    // Integer dot products per block are exact; only the f32 scaling and
                    // the sum over blocks round, so 1e-5 of the sum of |terms| is ample.
                    case.check(
                        &gpu,
                        &format!("gemv_q8 {w:?} {split:?} {dot:?} wg={wg} m={m} acc={acc}"),
                        &weights,
                        acc,
                        &init,
                        &want,
                        &scale,
                        1e-5,
                        &|rec, wv, yv, sh| gemv_q8_with(rec, pick, wv, act, yv, sh).unwrap(),
                    );
                }
            }
        }
    }
}

#[test]
fn embed_every_type_with_parts_and_scale() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(13);
    let (vocab, row0, rows) = (11usize, 4usize, 5usize);
    let tokens: [u32; 6] = [5, 0, 8, 4, 10, 6];
    let tb = upload(&gpu, bytemuck::cast_slice(&tokens));
    for w in WType::ALL {
        let k = test_k(w);
        let table = random_weights(&mut rng, w, vocab, k);
        let rb = w.row_bytes(k as u32).unwrap() as usize;
        let part = upload(&gpu, &table[row0 * rb..(row0 + rows) * rb]);
        let scale = 1.7f32;
        // tokens[1..] are gathered (t0 = 1); tokens outside the part keep the output's zeros.
        let n_tok = tokens.len() - 1;
        let (out, off) = guarded_output(&gpu, n_tok * k);
        let mut rec = gpu.recorder();
        embed(
            &mut rec,
            (&part).into(),
            (&tb).into(),
            out_view(&out, off, n_tok * k),
            EmbedShape {
                wtype: w,
                k: k as u32,
                row0: row0 as u32,
                rows: rows as u32,
                n_tok: n_tok as u32,
                t0: 1,
                scale,
            },
        )
        .unwrap();
        rec.submit().unwrap();
        let got = as_f32(&read_guarded(&gpu, &out, n_tok * k));
        let mut want = vec![0f32; n_tok * k];
        for (t, &id) in tokens[1..].iter().enumerate() {
            let id = id as usize;
            if (row0..row0 + rows).contains(&id) {
                let o = &mut want[t * k..(t + 1) * k];
                kiln_cpu::ops::embed_row(w.qtype(), &table, id, o).unwrap();
                o.iter_mut().for_each(|v| *v *= scale);
            }
        }
        // Dequantization is the same f32 arithmetic up to operation order: a couple of ulp.
        assert_close(&format!("embed {w:?}"), &got, &want, 1e-6, 1e-6);
    }
}

#[test]
fn rms_norm_both_forms_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(14);
    let (rows, n) = (3usize, 999usize);
    let x: Vec<f32> = rng.vec(rows * n).into_iter().map(|v| v * 4.0).collect();
    let w = rng.vec(n);
    let (xb, wb) = (upload_f32(&gpu, &x), upload_f32(&gpu, &w));
    let eps = 1e-6;
    for combine in combines(&gpu) {
        for w_offset in [0.0f32, 1.0] {
            let (out, off) = guarded_output(&gpu, rows * n);
            let mut rec = gpu.recorder();
            rms_norm(
                &mut rec,
                combine,
                (&xb).into(),
                (&wb).into(),
                out_view(&out, off, rows * n),
                rows as u32,
                n as u32,
                eps,
                w_offset,
            )
            .unwrap();
            rec.submit().unwrap();
            let got = as_f32(&read_guarded(&gpu, &out, rows * n));
            let mut want = vec![0f32; rows * n];
            for r in 0..rows {
                let (xr, o) = (&x[r * n..(r + 1) * n], &mut want[r * n..(r + 1) * n]);
                if w_offset == 0.0 {
                    kiln_cpu::ops::rms_norm(xr, &w, eps, o).unwrap();
                } else {
                    kiln_cpu::ops::rms_norm_gemma(xr, &w, eps, o).unwrap();
                }
            }
            // The mean of squares is summed in another order (tree vs SIMD lanes): a few ulp of
            // the scale, times |x w| <= ~8.
            assert_close(
                &format!("rms_norm {combine:?} w_offset={w_offset}"),
                &got,
                &want,
                1e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn rope_both_layouts_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(15);
    let (n_tok, n_head, head_dim, rot_dims, pos0) = (3usize, 5usize, 48usize, 32usize, 7usize);
    let base = 10000.0;
    for (layout, cpu_layout) in [
        (RopeLayout::Norm, kiln_cpu::ops::RopeLayout::Normal),
        (RopeLayout::Neox, kiln_cpu::ops::RopeLayout::NeoX),
    ] {
        let x = rng.vec(n_tok * n_head * head_dim);
        let n = x.len();
        let (buf, off) = guarded_with(&gpu, &x);
        let mut rec = gpu.recorder();
        rope(
            &mut rec,
            out_view(&buf, off, n),
            Rope {
                layout,
                n_head: n_head as u32,
                head_dim: head_dim as u32,
                rot_dims: rot_dims as u32,
                n_tok: n_tok as u32,
                pos0: pos0 as u32,
                base,
                freq_scale: 1.0,
            },
        )
        .unwrap();
        rec.submit().unwrap();
        let got = as_f32(&read_guarded(&gpu, &buf, n));
        let mut want = x.clone();
        let per_tok = n_head * head_dim;
        for t in 0..n_tok {
            kiln_cpu::ops::rope(
                &mut want[t * per_tok..(t + 1) * per_tok],
                head_dim,
                rot_dims,
                pos0 + t,
                &kiln_cpu::ops::RopeFreqs::base(base),
                cpu_layout,
            )
            .unwrap();
        }
        // The GPU forms angles in f32 (pow, then sin/cos of angles up to ~10 rad) where the CPU
        // uses f64: a few 1e-6 of error in an angle, on values of size ~1.
        assert_close(&format!("rope {layout:?}"), &got, &want, 2e-5, 0.0);
        for (i, (g, v)) in got.iter().zip(&x).enumerate() {
            if i % head_dim >= rot_dims {
                assert_eq!(g, v, "rope changed unrotated dimension {i}");
            }
        }
    }
}

struct AttnCase {
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    capacity: usize,
    n_tok: usize,
    pos0: usize,
    window: usize,
    softcap: f32,
}

fn run_attention(gpu: &Gpu, combine: Combine, c: &AttnCase, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let kv_row = c.n_kv_head * c.head_dim;
    let total = c.pos0 + c.n_tok;
    let k_src = rng.vec(total * kv_row);
    let v_src = rng.vec(total * kv_row);
    let q: Vec<f32> = rng
        .vec(c.n_tok * c.n_head * c.head_dim)
        .into_iter()
        .map(|v| v * 3.0)
        .collect();
    let a = |n_tok: usize, pos0: usize| Attention {
        n_head: c.n_head as u32,
        n_kv_head: c.n_kv_head as u32,
        head_dim: c.head_dim as u32,
        capacity: c.capacity as u32,
        n_tok: n_tok as u32,
        pos0: pos0 as u32,
        window: c.window as u32,
        scale: 1.0 / (c.head_dim as f32).sqrt(),
        softcap: c.softcap,
        kv: KvType::F16,
    };
    let cache_words = (a(1, 0).cache_bytes() / 4) as usize;
    let (kc, ko) = guarded_output(gpu, cache_words);
    let (vc, vo) = guarded_output(gpu, cache_words);
    let qb = upload_f32(gpu, &q);
    let sb = gpu
        .create_buffer(
            "scores",
            scratch_bytes(&a(c.n_tok, c.pos0)),
            wgpu::BufferUsages::STORAGE,
        )
        .unwrap();
    let n_out = c.n_tok * c.n_head * c.head_dim;
    let (out, oo) = guarded_output(gpu, n_out);
    let mut rec = gpu.recorder();
    // The prompt's keys first (positions 0..pos0, when there is a prompt), then the new
    // tokens' at pos0, as two dispatches in one submit.
    for (src, cache, o) in [(&k_src, &kc, ko), (&v_src, &vc, vo)] {
        let cache_v = View::new(cache, o, cache_words as u64 * 4);
        let (prompt, new) = src.split_at(c.pos0 * kv_row);
        let (pb, nb) = (upload_f32(gpu, prompt), upload_f32(gpu, new));
        if c.pos0 > 0 {
            kv_store(&mut rec, (&pb).into(), cache_v, a(c.pos0, 0)).unwrap();
        }
        kv_store(&mut rec, (&nb).into(), cache_v, a(c.n_tok, c.pos0)).unwrap();
    }
    attention(
        &mut rec,
        combine,
        (&qb).into(),
        View::new(&kc, ko, cache_words as u64 * 4),
        View::new(&vc, vo, cache_words as u64 * 4),
        (&sb).into(),
        out_view(&out, oo, n_out),
        a(c.n_tok, c.pos0),
    )
    .unwrap();
    rec.submit().unwrap();

    // The caches hold exactly the f16 roundings of the sources, and zeros past them.
    let to_cache = |src: &[f32]| -> Vec<f16> {
        let mut cache = vec![f16::ZERO; cache_words * 2];
        for p in 0..total {
            for h in 0..c.n_kv_head {
                for d in 0..c.head_dim {
                    cache[(h * c.capacity + p) * c.head_dim + d] =
                        f16::from_f32(src[p * kv_row + h * c.head_dim + d]);
                }
            }
        }
        cache
    };
    let (kh, vh) = (to_cache(&k_src), to_cache(&v_src));
    for (name, buf, want) in [("k", &kc, &kh), ("v", &vc, &vh)] {
        let got = read_guarded(gpu, buf, cache_words);
        let got: &[f16] = bytemuck::cast_slice(&got);
        for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{name} cache[{i}]");
        }
    }

    let got = as_f32(&read_guarded(gpu, &out, n_out));
    let p = AttnParams {
        n_head: c.n_head,
        n_kv_head: c.n_kv_head,
        head_dim: c.head_dim,
        capacity: c.capacity,
        scale: 1.0 / (c.head_dim as f32).sqrt(),
        window: (c.window > 0).then_some(c.window),
        softcap: (c.softcap > 0.0).then_some(c.softcap),
    };
    let per_tok = c.n_head * c.head_dim;
    let mut scratch = vec![0f32; c.capacity];
    for t in 0..c.n_tok {
        // The GPU rounds q to f16 before it meets the f16 keys; give the CPU the same q.
        let qt: Vec<f32> = q[t * per_tok..(t + 1) * per_tok]
            .iter()
            .map(|&v| f16::from_f32(v).to_f32())
            .collect();
        let mut want = vec![0f32; per_tok];
        kiln_cpu::ops::attention_decode(&qt, &kh, &vh, &p, c.pos0 + t + 1, &mut scratch, &mut want)
            .unwrap();
        // Both round the normalized weights to f16; exp and the sums differ by ulps, which can
        // move a weight across an f16 rounding boundary (one f16 ulp, 2^-11 relative), and the
        // values are at most 1: 1e-3 absolute covers it.
        assert_close(
            &format!("attention {combine:?} token {t}"),
            &got[t * per_tok..(t + 1) * per_tok],
            &want,
            1e-3,
            0.0,
        );
    }
    got
}

fn attention_cases() -> [AttnCase; 3] {
    [
        // SmolLM2-like decode: GQA 3:1, head 64.
        AttnCase {
            n_head: 6,
            n_kv_head: 2,
            head_dim: 64,
            capacity: 45,
            n_tok: 1,
            pos0: 30,
            window: 0,
            softcap: 0.0,
        },
        // Gemma-like prefill: head 256, 4:1, sliding window, soft-capping, causal block of 3.
        AttnCase {
            n_head: 4,
            n_kv_head: 1,
            head_dim: 256,
            capacity: 33,
            n_tok: 3,
            pos0: 17,
            window: 7,
            softcap: 2.0,
        },
        // Whole prompt at once from position 0, no GQA, window longer than the context.
        AttnCase {
            n_head: 2,
            n_kv_head: 2,
            head_dim: 64,
            capacity: 13,
            n_tok: 5,
            pos0: 0,
            window: 100,
            softcap: 0.0,
        },
    ]
}

#[test]
fn kv_store_and_attention_match_cpu() {
    let Some(gpu) = gpu() else { return };
    for (i, case) in attention_cases().iter().enumerate() {
        for combine in combines(&gpu) {
            run_attention(&gpu, combine, case, 100 + i as u64);
        }
    }
}

#[test]
fn gated_activations_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(16);
    let n = 1001usize;
    let g: Vec<f32> = rng.vec(n).into_iter().map(|v| v * 6.0).collect();
    let u = rng.vec(n);
    let (gb, ub) = (upload_f32(&gpu, &g), upload_f32(&gpu, &u));
    for act in [Act::Silu, Act::Gelu] {
        let (out, off) = guarded_output(&gpu, n);
        let mut rec = gpu.recorder();
        gated(
            &mut rec,
            act,
            (&gb).into(),
            (&ub).into(),
            out_view(&out, off, n),
            n as u32,
        )
        .unwrap();
        rec.submit().unwrap();
        let got = as_f32(&read_guarded(&gpu, &out, n));
        let mut want = vec![0f32; n];
        match act {
            Act::Silu => kiln_cpu::ops::swiglu(&g, &u, &mut want).unwrap(),
            Act::Gelu => kiln_cpu::ops::geglu(&g, &u, &mut want).unwrap(),
        }
        // exp/tanh differ by a few ulp between the shader and kiln-cpu's polynomials; the
        // tanh form cancels near 0 (1 - e) so allow an absolute 1e-6 too.
        assert_close(&format!("gated {act:?}"), &got, &want, 1e-6, 1e-5);
    }
}

#[test]
fn add_inplace_with_period_is_exact() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(17);
    for (n, period) in [(999usize, 333usize), (257, 257)] {
        let x = rng.vec(n);
        let b = rng.vec(period);
        let (buf, off) = guarded_with(&gpu, &x);
        let bb = upload_f32(&gpu, &b);
        let mut rec = gpu.recorder();
        add_inplace(
            &mut rec,
            out_view(&buf, off, n),
            (&bb).into(),
            n as u32,
            period as u32,
        )
        .unwrap();
        rec.submit().unwrap();
        let got = as_f32(&read_guarded(&gpu, &buf, n));
        let want: Vec<f32> = (0..n).map(|i| x[i] + b[i % period]).collect();
        // One f32 addition: exactly the same rounding on both sides.
        assert_close(
            &format!("add_inplace n={n} period={period}"),
            &got,
            &want,
            0.0,
            0.0,
        );
    }
}

#[test]
fn argmax_takes_lowest_index_on_ties() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(18);
    let mut cases: Vec<(Vec<f32>, usize)> = Vec::new();
    for (n, ties) in [
        (1001usize, vec![900usize, 200, 513]),
        (70_001, vec![69_999, 4]),
        (3, vec![2]),
    ] {
        let mut x = rng.vec(n);
        for &t in &ties {
            x[t] = 5.0;
        }
        cases.push((x, *ties.iter().min().unwrap()));
    }
    // -inf logits (masked tokens) are candidates like any other: all masked picks the first,
    // and a finite logit beats them wherever it is.
    cases.push((vec![f32::NEG_INFINITY; 300], 0));
    let mut masked = vec![f32::NEG_INFINITY; 5000];
    masked[4321] = -1e30;
    cases.push((masked, 4321));
    for combine in combines(&gpu) {
        for (x, want) in &cases {
            let n = x.len();
            let got = argmax_into(&gpu, combine, x, 2);
            assert_eq!(kiln_cpu::sample::argmax(x).unwrap() as usize, *want);
            assert_eq!(
                got,
                vec![0, 0, *want as u32, 0],
                "argmax {combine:?} n={n} into slot 2"
            );
        }
    }
}

/// `argmax_with` of `x` into word `slot` of a guarded 4-word output, read back whole.
fn argmax_into(gpu: &Gpu, combine: Combine, x: &[f32], slot: u32) -> Vec<u32> {
    let xb = upload_f32(gpu, x);
    let (tok, off) = guarded_output(gpu, 4);
    let mut rec = gpu.recorder();
    argmax_with(
        &mut rec,
        combine,
        (&xb).into(),
        out_view(&tok, off, 4),
        x.len() as u32,
        slot,
    )
    .unwrap();
    rec.submit().unwrap();
    read_guarded(gpu, &tok, 4)
}

/// A NaN (either sign) or +inf logit anywhere makes the pick meaningless: argmax writes
/// `NON_FINITE_ID` in both variants, whatever the rest holds.
#[test]
fn argmax_writes_the_sentinel_for_nan_or_inf() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(19);
    for combine in combines(&gpu) {
        for n in [3usize, 1001, 70_001] {
            for (at, bad) in [(0, f32::NAN), (n - 1, -f32::NAN), (n / 2, f32::INFINITY)] {
                let mut x = rng.vec(n);
                x[at] = bad;
                assert_eq!(
                    argmax_into(&gpu, combine, &x, 1),
                    vec![0, NON_FINITE_ID, 0, 0],
                    "argmax {combine:?} n={n} logit {at} = {bad}"
                );
            }
        }
    }
}

#[test]
fn subgroup_and_shared_memory_variants_agree() {
    let Some(gpu) = gpu() else { return };
    if !gpu.capabilities().subgroup {
        common::skip_feature(
            "this adapter has no subgroups, so there is no subgroup variant to compare",
        );
        return;
    }
    // Each variant is checked against the CPU elsewhere; here they are checked against each
    // other, which is tighter: only the order of a tree reduction differs.
    for (i, case) in attention_cases().iter().enumerate() {
        let a = run_attention(&gpu, Combine::Subgroup, case, 200 + i as u64);
        let b = run_attention(&gpu, Combine::SharedMemory, case, 200 + i as u64);
        assert_close(&format!("attention case {i}"), &a, &b, 1e-5, 1e-5);
    }
    let mut rng = Rng::new(19);
    let (rows, n) = (2usize, 777usize);
    let x = rng.vec(rows * n);
    let w = rng.vec(n);
    let (xb, wb) = (upload_f32(&gpu, &x), upload_f32(&gpu, &w));
    let outs: Vec<Vec<f32>> = [Combine::Subgroup, Combine::SharedMemory]
        .into_iter()
        .map(|combine| {
            let (out, off) = guarded_output(&gpu, rows * n);
            let mut rec = gpu.recorder();
            rms_norm(
                &mut rec,
                combine,
                (&xb).into(),
                (&wb).into(),
                out_view(&out, off, rows * n),
                rows as u32,
                n as u32,
                1e-5,
                0.0,
            )
            .unwrap();
            rec.submit().unwrap();
            as_f32(&read_guarded(&gpu, &out, rows * n))
        })
        .collect();
    assert_close(
        "rms_norm subgroup vs shared",
        &outs[0],
        &outs[1],
        1e-6,
        1e-6,
    );
}

#[test]
fn timestamps_bracket_the_dispatches() {
    let Some(gpu) = gpu() else { return };
    let n = 1 << 16;
    let x = upload_f32(&gpu, &vec![1.0; n]);
    let b = upload_f32(&gpu, &[2.0]);
    let mut rec = gpu.recorder();
    let ticks = match rec.time_dispatches() {
        Ok(t) => t,
        Err(e) => {
            assert!(!gpu.capabilities().timestamps, "{e}");
            assert!(matches!(e, kiln::Error::Unsupported(_)), "{e}");
            eprintln!("no TIMESTAMP_QUERY on this adapter: checked the refusal instead");
            return;
        }
    };
    // Two passes (a copy between them): the start is written in the first, the end in the last.
    add_inplace(&mut rec, (&x).into(), (&b).into(), n as u32, 1).unwrap();
    let back = rec.read(View::new(&x, 0, 16)).unwrap();
    for _ in 0..20 {
        add_inplace(&mut rec, (&x).into(), (&b).into(), n as u32, 1).unwrap();
    }
    let start = std::time::Instant::now();
    rec.submit().unwrap();
    let t = ticks.wait().unwrap();
    let wall = start.elapsed().as_secs_f64() * 1e9;
    let t: &[u64] = bytemuck::cast_slice(&t);
    let ns = t[1].wrapping_sub(t[0]) as f64 * f64::from(gpu.timestamp_period());
    assert!(
        t[1] > t[0],
        "end tick {} not after start tick {}",
        t[1],
        t[0]
    );
    assert!(
        ns < wall,
        "GPU time {ns} ns exceeds the wall time {wall} ns around the submit"
    );
    assert_eq!(
        as_f32(bytemuck::cast_slice(&back.wait().unwrap())),
        vec![3.0; 4]
    );
}

/// The whole int8 path (`quantize` then `gemv_q8`) against kiln-cpu's own (`ActBuffer` then
/// `QMatrix::matmul`). The two quantize differently on purpose (kiln-cpu keeps f32 scales and
/// scales Q8_K blocks by |max|), so they agree only to the quantization error. The bound: six
/// standard deviations of two independent roundings of every activation (each uniform within
/// half a step `d`, variance d^2/12), plus the f16 rounding of a block's scale (2^-11 of that
/// block's partial dot, per side). For these inputs it is about a tenth of the error that
/// dropping one block of a row would cause.
#[test]
fn int8_path_agrees_with_kiln_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(20);
    let pool = kiln_cpu::ThreadPool::new(1);
    for w in QUANTIZED {
        let quant = ActQuant::for_weights(w).unwrap();
        let (k, rows, m) = (test_k(w), 29usize, 3usize);
        let weights = random_weights(&mut rng, w, rows, k);
        let wf = dequant_rows(w, &weights, rows, k);
        let x = rng.vec(m * k);
        let mut act = kiln_cpu::ActBuffer::new();
        act.quantize_rows(&x, m, w.qtype()).unwrap();
        let mut want = vec![0f32; m * rows];
        kiln_cpu::QMatrix::new(w.qtype(), rows, k, &weights)
            .unwrap()
            .matmul(&act, &mut want, &pool)
            .unwrap();

        let (bq, bd, bs) = QAct::sizes(m as u32, k as u32);
        let xb = upload_f32(&gpu, &x);
        let wb = upload(&gpu, &weights);
        let q = gpu.alloc_storage("xq", bq).unwrap();
        let d = gpu.alloc_storage("xd", bd).unwrap();
        let s = gpu.alloc_storage("xs", bs).unwrap();
        let qa = QAct {
            quant,
            xq: View::new(q.buffer(), 0, bq),
            xd: View::new(d.buffer(), 0, bd),
            xs: View::new(s.buffer(), 0, bs),
        };
        let (y, off) = guarded_output(&gpu, m * rows);
        let mut rec = gpu.recorder();
        quantize(&mut rec, (&xb).into(), qa, m as u32, k as u32).unwrap();
        let shape = GemvShape {
            wtype: w,
            k: k as u32,
            rows: rows as u32,
            m: m as u32,
            y_stride: rows as u32,
            y_offset: 0,
            accumulate: false,
        };
        gemv_q8(
            &mut rec,
            Split::best(&gpu),
            (&wb).into(),
            qa,
            out_view(&y, off, m * rows),
            shape,
        )
        .unwrap();
        rec.submit().unwrap();
        let got = as_f32(&read_guarded(&gpu, &y, m * rows));
        let block = if quant == ActQuant::Q8K { 256 } else { 32 };
        for j in 0..m {
            for r in 0..rows {
                let bound =
                    int8_bound(&wf[r * k..(r + 1) * k], &x[j * k..(j + 1) * k], block) as f32;
                let (g, c) = (got[j * rows + r], want[j * rows + r]);
                assert!(
                    g.is_finite() && (g - c).abs() <= bound,
                    "{w:?} [{j}, {r}]: GPU {g}, kiln-cpu {c}, bound {bound}"
                );
            }
        }
    }
}
