//! Every op against a plain f64 reference written from its definition, every multiversioned op
//! against its scalar copy, and bad sizes.

mod common;

use common::{Rng, assert_close, random_blocks};
use half::f16;
use kiln_cpu::ops::*;
use kiln_cpu::quant::dequantize_row;
use kiln_cpu::{ActBuffer, CpuError, Isa, QMatrix, QType, ThreadPool};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const SIZES: [usize; 6] = [1, 5, 8, 31, 67, 300];

/// erf by Simpson's rule on 2/√π·e^(-t²): exact to ~1e-12 for the ranges tested.
fn erf64(x: f64) -> f64 {
    let n = 4000;
    let h = x / n as f64;
    let f = |t: f64| (-t * t).exp();
    let mut s = f(0.0) + f(x);
    for i in 1..n {
        s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
}

fn sig64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}
fn gelu_tanh64(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
}
fn gelu_erf64(x: f64) -> f64 {
    0.5 * x * (1.0 + erf64(x / 2f64.sqrt()))
}

#[test]
fn math_matches_f64() {
    let mut x = -20.0f32;
    while x <= 20.0 {
        let d = x as f64;
        let e = math::exp(x) as f64;
        assert!((e - d.exp()).abs() <= 3e-7 * d.exp(), "exp({x})");
        assert!((math::tanh(x) as f64 - d.tanh()).abs() <= 4e-7, "tanh({x})");
        assert!(
            (math::sigmoid(x) as f64 - sig64(d)).abs() <= 3e-7,
            "sigmoid({x})"
        );
        assert!(
            (math::silu(x) as f64 - d * sig64(d)).abs() <= 1e-6 * d.abs().max(1.0),
            "silu({x})"
        );
        if x.abs() < 6.0 {
            assert!((math::erf(x) as f64 - erf64(d)).abs() <= 4e-7, "erf({x})");
        }
        assert!(
            (math::gelu_tanh(x) as f64 - gelu_tanh64(d)).abs() <= 1e-6 * d.abs().max(1.0),
            "gelu_tanh({x})"
        );
        assert!(
            (math::gelu_erf(x) as f64 - gelu_erf64(d)).abs() <= 1e-6 * d.abs().max(1.0),
            "gelu_erf({x})"
        );
        x += 0.037;
    }
    for big in [1e4f32, 1e30, f32::MAX, f32::INFINITY] {
        assert_eq!(math::tanh(big), 1.0);
        assert_eq!(math::tanh(-big), -1.0);
        assert!(math::exp(big).is_finite() && math::sigmoid(-big) >= 0.0);
        assert!(math::silu(-big).is_finite() || big.is_infinite());
    }
    assert!(math::exp(f32::NAN).is_nan());
}

#[test]
fn unary_and_gated_match_scalar_and_reference() {
    let mut rng = Rng::new(5);
    type Unary = fn(Isa, &mut [f32]) -> Result<(), CpuError>;
    type Case = (&'static str, Unary, fn(f64) -> f64);
    let unary: [Case; 5] = [
        ("silu", silu_with, |x| x * sig64(x)),
        ("gelu_tanh", gelu_tanh_with, gelu_tanh64),
        ("gelu_erf", gelu_erf_with, gelu_erf64),
        ("sigmoid", sigmoid_with, sig64),
        ("tanh", tanh_with, f64::tanh),
    ];
    for n in SIZES {
        let x = rng.vec(n, 6.0);
        for (name, f, r) in unary {
            let want: Vec<f32> = x.iter().map(|&v| r(v as f64) as f32).collect();
            let mut scalar = x.clone();
            f(Isa::Scalar, &mut scalar).expect("scalar");
            assert_close(name, &scalar, &want, 2e-6, 2e-6);
            for isa in Isa::available() {
                let mut y = x.clone();
                f(isa, &mut y).expect("op");
                assert_close(&format!("{name} {isa:?}"), &y, &scalar, 1e-7, 1e-6);
            }
        }
        let up = rng.vec(n, 2.0);
        for isa in Isa::available() {
            let mut o = vec![0f32; n];
            swiglu_with(isa, &x, &up, &mut o).expect("swiglu");
            let want: Vec<f32> = x
                .iter()
                .zip(&up)
                .map(|(&g, &u)| (g as f64 * sig64(g as f64) * u as f64) as f32)
                .collect();
            assert_close("swiglu", &o, &want, 1e-5, 1e-5);
            geglu_with(isa, &x, &up, &mut o).expect("geglu");
            let want: Vec<f32> = x
                .iter()
                .zip(&up)
                .map(|(&g, &u)| (gelu_tanh64(g as f64) * u as f64) as f32)
                .collect();
            assert_close("geglu", &o, &want, 1e-5, 1e-5);
        }
    }
    assert!(swiglu(&[1.0; 3], &[1.0; 2], &mut [0.0; 3]).is_err());
    assert!(geglu(&[1.0; 3], &[1.0; 3], &mut [0.0; 4]).is_err());
}

#[test]
fn softmax_matches_reference() {
    let mut rng = Rng::new(6);
    for n in SIZES {
        let x = rng.vec(n, 20.0);
        let m = x.iter().fold(f64::MIN, |a, &b| a.max(b as f64));
        let e: Vec<f64> = x.iter().map(|&v| (v as f64 - m).exp()).collect();
        let s: f64 = e.iter().sum();
        let want: Vec<f32> = e.iter().map(|v| (v / s) as f32).collect();
        for isa in Isa::available() {
            let mut y = x.clone();
            softmax_with(isa, &mut y).expect("softmax");
            assert_close(&format!("softmax {isa:?}"), &y, &want, 1e-7, 2e-6);
        }
    }
    let mut masked = [1.0, f32::NEG_INFINITY, 1.0];
    softmax(&mut masked);
    assert_close("masked", &masked, &[0.5, 0.0, 0.5], 1e-7, 0.0);
}

#[test]
fn norms_match_reference() {
    let mut rng = Rng::new(8);
    for n in SIZES {
        let x = rng.vec(n, 3.0);
        let w = rng.vec(n, 1.0);
        let b = rng.vec(n, 1.0);
        let ms = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / n as f64;
        let r = 1.0 / (ms + 1e-6).sqrt();
        for gemma in [false, true] {
            let want: Vec<f32> = x
                .iter()
                .zip(&w)
                .map(|(&v, &g)| (v as f64 * r * (g as f64 + if gemma { 1.0 } else { 0.0 })) as f32)
                .collect();
            for isa in Isa::available() {
                let mut o = vec![0f32; n];
                rms_norm_with(isa, &x, &w, 1e-6, &mut o, gemma).expect("rms");
                assert_close("rms_norm", &o, &want, 1e-5, 1e-5);
            }
        }
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        let want: Vec<f32> = (0..n)
            .map(|i| {
                ((x[i] as f64 - mean) / (var + 1e-5).sqrt() * w[i] as f64 + b[i] as f64) as f32
            })
            .collect();
        let mut o = vec![0f32; n];
        layer_norm(&x, Some(&w), Some(&b), 1e-5, &mut o).expect("layer_norm");
        assert_close("layer_norm", &o, &want, 1e-4, 1e-4);
    }
    assert!(rms_norm(&[1.0; 4], &[1.0; 3], 1e-6, &mut [0.0; 4]).is_err());
    assert!(layer_norm(&[1.0; 4], None, Some(&[0.0; 5]), 1e-6, &mut [0.0; 4]).is_err());
}

#[test]
fn rope_matches_reference() {
    let mut rng = Rng::new(9);
    let (hd, heads, n_rot, base, pos) = (10, 3, 8, 10000.0f32, 37);
    let x = rng.vec(hd * heads, 1.0);
    let factors = [1.0f32, 1.5, 4.0, 8.0];
    let plain = RopeFreqs::base(base);
    let scaled = RopeFreqs {
        base,
        scale: 0.25,
        factors: Some(&factors),
    };
    for layout in [RopeLayout::Normal, RopeLayout::NeoX] {
        for f in [plain, scaled] {
            let mut want = x.clone();
            for h in 0..heads {
                for i in 0..n_rot / 2 {
                    let factor = f.factors.map_or(1.0, |v| v[i] as f64);
                    let th = pos as f64 * f.scale as f64
                        / (base as f64).powf(2.0 * i as f64 / n_rot as f64)
                        / factor;
                    let (a, b) = if layout == RopeLayout::Normal {
                        (2 * i, 2 * i + 1)
                    } else {
                        (i, i + n_rot / 2)
                    };
                    let (x0, x1) = (x[h * hd + a] as f64, x[h * hd + b] as f64);
                    want[h * hd + a] = (x0 * th.cos() - x1 * th.sin()) as f32;
                    want[h * hd + b] = (x0 * th.sin() + x1 * th.cos()) as f32;
                }
            }
            let mut y = x.clone();
            rope(&mut y, hd, n_rot, pos, &f, layout).expect("rope");
            assert_close(&format!("rope {layout:?} {f:?}"), &y, &want, 1e-6, 1e-6);
            assert_eq!(y[8..10], x[8..10], "unrotated tail untouched");
            let mut z = x.clone();
            rope(&mut z, hd, n_rot, 0, &f, layout).expect("rope");
            assert_eq!(z, x, "position 0 is the identity");
        }
    }
    let f = RopeFreqs::base(1e4);
    assert!(rope(&mut [0.0; 10], 4, 4, 1, &f, RopeLayout::Normal).is_err());
    assert!(rope(&mut [0.0; 8], 4, 3, 1, &f, RopeLayout::Normal).is_err());
    assert!(rope(&mut [0.0; 8], 4, 6, 1, &f, RopeLayout::NeoX).is_err());
    let short = RopeFreqs {
        factors: Some(&factors[..3]),
        ..scaled
    };
    assert!(
        rope(&mut [0.0; 10], 10, 8, 1, &short, RopeLayout::Normal).is_err(),
        "n_rot / 2 factors"
    );
}

struct Cache {
    k: Vec<f16>,
    v: Vec<f16>,
}

fn ref_attention(q: &[f32], c: &Cache, p: &AttnParams, len: usize) -> Vec<f32> {
    let hd = p.head_dim;
    let mut out = vec![0f32; p.n_head * hd];
    let lo = p.window.map_or(0, |w| len.saturating_sub(w));
    for h in 0..p.n_head {
        let kv = h * p.n_kv_head / p.n_head;
        let at = |pos: usize, d: usize| kv * p.capacity * hd + pos * hd + d;
        let scores: Vec<f64> = (lo..len)
            .map(|pos| {
                let s = (0..hd)
                    .map(|d| q[h * hd + d] as f64 * c.k[at(pos, d)].to_f64())
                    .sum::<f64>()
                    * p.scale as f64;
                p.softcap
                    .map_or(s, |cap| cap as f64 * (s / cap as f64).tanh())
            })
            .collect();
        let m = scores.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
        let sum: f64 = e.iter().sum();
        for d in 0..hd {
            out[h * hd + d] = (lo..len)
                .zip(&e)
                // The kernel rounds the weights to f16 before they meet f16 values (llama.cpp).
                .map(|(pos, w)| f16::from_f64(w / sum).to_f64() * c.v[at(pos, d)].to_f64())
                .sum::<f64>() as f32;
        }
    }
    out
}

#[test]
fn attention_matches_reference() {
    let mut rng = Rng::new(10);
    for (n_head, n_kv, window, softcap) in [
        (4, 4, None, None),
        (6, 2, Some(5), None),
        (4, 1, None, Some(2.0)),
        (3, 3, Some(1), Some(50.0)),
    ] {
        let (hd, cap) = (12, 20);
        let p = AttnParams {
            n_head,
            n_kv_head: n_kv,
            head_dim: hd,
            capacity: cap,
            scale: 1.0 / (hd as f32).sqrt(),
            window,
            softcap,
        };
        let c = Cache {
            k: rng
                .vec(n_kv * cap * hd, 2.0)
                .into_iter()
                .map(f16::from_f32)
                .collect(),
            v: rng
                .vec(n_kv * cap * hd, 1.0)
                .into_iter()
                .map(f16::from_f32)
                .collect(),
        };
        let mut scratch = vec![0f32; cap];
        for len in [1, 2, 9, 17] {
            let q = rng.vec(n_head * hd, 1.0);
            let want = ref_attention(&q, &c, &p, len);
            for isa in Isa::available() {
                let mut out = vec![f32::NAN; n_head * hd];
                attention_decode_with(isa, &q, &c.k, &c.v, &p, len, &mut scratch, &mut out)
                    .expect("decode");
                assert_close(&format!("attn {isa:?} len {len}"), &out, &want, 2e-5, 2e-5);
            }
        }
        // Prefill of 5 tokens at positions 7..12 = five decodes.
        let q = rng.vec(5 * n_head * hd, 1.0);
        let mut out = vec![f32::NAN; q.len()];
        attention_prefill(&q, &c.k, &c.v, &p, 7, &mut scratch, &mut out).expect("prefill");
        for t in 0..5 {
            let n = n_head * hd;
            let want = ref_attention(&q[t * n..(t + 1) * n], &c, &p, 7 + t + 1);
            assert_close("prefill", &out[t * n..(t + 1) * n], &want, 2e-5, 2e-5);
        }
        let mut o = vec![0f32; n_head * hd];
        let q1 = &q[..n_head * hd];
        assert!(
            attention_decode(q1, &c.k, &c.v, &p, cap + 1, &mut vec![0.0; cap + 1], &mut o).is_err(),
            "past capacity"
        );
        assert!(
            attention_decode(q1, &c.k, &c.v, &p, 5, &mut scratch[..4], &mut o).is_err(),
            "short scratch"
        );
        assert!(
            attention_decode(q1, &c.k[1..], &c.v, &p, 5, &mut scratch, &mut o).is_err(),
            "short cache"
        );
        assert!(
            attention_decode(&q1[1..], &c.k, &c.v, &p, 5, &mut scratch, &mut o).is_err(),
            "short q"
        );
        let bad = AttnParams { n_kv_head: 5, ..p };
        assert!(
            attention_decode(q1, &c.k, &c.v, &bad, 5, &mut scratch, &mut o).is_err(),
            "n_head % n_kv"
        );
    }
}

#[test]
fn embed_row_dequantizes_one_row() {
    let mut rng = Rng::new(12);
    for t in QType::ALL {
        let cols = t.block_size().max(32) * 2;
        let table = random_blocks(t, 5 * cols, &mut rng);
        let rb = t.row_bytes(cols).expect("aligned");
        let mut want = vec![0f32; cols];
        dequantize_row(t, &table[3 * rb..4 * rb], &mut want).expect("dequantize");
        let mut got = vec![0f32; cols];
        embed_row(t, &table, 3, &mut got).expect("embed");
        assert_eq!(got, want, "{t:?}");
        assert!(
            embed_row(t, &table, 5, &mut got).is_err(),
            "{t:?} row past the end"
        );
        assert!(
            embed_row(t, &table, usize::MAX, &mut got).is_err(),
            "{t:?} overflow"
        );
    }
}

#[test]
fn mamba_conv_and_scan_match_reference() {
    let mut rng = Rng::new(13);
    let (d, k, n, len) = (7, 4, 5, 6);
    let w = rng.vec(d * k, 1.0);
    let bias = rng.vec(d, 1.0);
    let xs = rng.vec(len * d, 1.0);
    let mut state = vec![0f32; d * (k - 1)];
    let mut out = vec![0f32; d];
    for t in 0..len {
        causal_conv1d_step(
            &xs[t * d..(t + 1) * d],
            &mut state,
            &w,
            Some(&bias),
            &mut out,
        )
        .expect("conv");
        for c in 0..d {
            // Window of the last k inputs (zeros before the start), oldest first.
            let want: f64 = bias[c] as f64
                + (0..k)
                    .map(|j| {
                        let tt = t as isize - (k - 1 - j) as isize;
                        if tt < 0 {
                            0.0
                        } else {
                            w[c * k + j] as f64 * xs[tt as usize * d + c] as f64
                        }
                    })
                    .sum::<f64>();
            assert!((out[c] as f64 - want).abs() < 1e-5, "conv t {t} c {c}");
        }
    }
    assert!(causal_conv1d_step(&xs[..d], &mut state[1..], &w, None, &mut out).is_err());

    let a: Vec<f32> = rng
        .vec(d * n, 1.0)
        .into_iter()
        .map(|v| -(v.abs() + 0.1))
        .collect();
    let dskip = rng.vec(d, 1.0);
    let dt: Vec<f32> = rng
        .vec(len * d, 0.5)
        .into_iter()
        .map(|v| v.abs() + 0.01)
        .collect();
    let b = rng.vec(len * n, 1.0);
    let cc = rng.vec(len * n, 1.0);
    let mut h = vec![0f32; d * n];
    let mut y = vec![0f32; len * d];
    selective_scan(&mut h, &a, &dskip, &xs, &dt, &b, &cc, &mut y).expect("scan");
    let mut hr = vec![0f64; d * n];
    for t in 0..len {
        for ch in 0..d {
            let (x, dtc) = (xs[t * d + ch] as f64, dt[t * d + ch] as f64);
            let mut acc = 0.0;
            for s in 0..n {
                hr[ch * n + s] = (dtc * a[ch * n + s] as f64).exp() * hr[ch * n + s]
                    + dtc * b[t * n + s] as f64 * x;
                acc += cc[t * n + s] as f64 * hr[ch * n + s];
            }
            let want = acc + dskip[ch] as f64 * x;
            assert!(
                (y[t * d + ch] as f64 - want).abs() < 1e-5,
                "scan t {t} ch {ch}"
            );
        }
    }
    assert!(selective_scan(&mut h, &a, &dskip, &xs, &dt[1..], &b, &cc, &mut y).is_err());
}

#[test]
fn rwkv6_wkv_matches_matrix_form() {
    let mut rng = Rng::new(14);
    let (h, n) = (2, 8);
    let c = h * n;
    let mut state = rng.vec(h * n * n, 0.5);
    let mut sr: Vec<f64> = state.iter().map(|&v| v as f64).collect();
    for _ in 0..3 {
        let (r, k, v, u) = (
            rng.vec(c, 1.0),
            rng.vec(c, 1.0),
            rng.vec(c, 1.0),
            rng.vec(c, 1.0),
        );
        let w: Vec<f32> = rng
            .vec(c, 1.0)
            .into_iter()
            .map(|x| (-(x.exp())).exp())
            .collect();
        let mut out = vec![0f32; c];
        wkv6_step(&mut state, &r, &k, &v, &w, &u, n, &mut out).expect("wkv6");
        for hh in 0..h {
            let o = hh * n;
            for j in 0..n {
                let y: f64 = (0..n)
                    .map(|i| {
                        r[o + i] as f64
                            * (u[o + i] as f64 * k[o + i] as f64 * v[o + j] as f64
                                + sr[hh * n * n + i * n + j])
                    })
                    .sum();
                assert!((out[o + j] as f64 - y).abs() < 1e-4, "wkv6 y");
            }
            for i in 0..n {
                for j in 0..n {
                    let s = &mut sr[hh * n * n + i * n + j];
                    *s = w[o + i] as f64 * *s + k[o + i] as f64 * v[o + j] as f64;
                }
            }
        }
        assert_close(
            "wkv6 state",
            &state,
            &sr.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            1e-5,
            1e-5,
        );
    }
    assert!(
        wkv6_step(
            &mut state[1..],
            &[0.0; 16],
            &[0.0; 16],
            &[0.0; 16],
            &[0.0; 16],
            &[0.0; 16],
            8,
            &mut [0.0; 16]
        )
        .is_err()
    );
}

#[test]
fn rwkv7_wkv_matches_matrix_form() {
    let mut rng = Rng::new(15);
    let (h, n) = (2, 8);
    let c = h * n;
    let mut state = rng.vec(h * n * n, 0.5);
    let mut sr: Vec<f64> = state.iter().map(|&v| v as f64).collect();
    for _ in 0..3 {
        let (r, k, v) = (rng.vec(c, 1.0), rng.vec(c, 1.0), rng.vec(c, 1.0));
        let kk = rng.vec(c, 0.3);
        let a: Vec<f32> = kk.iter().map(|x| -x).collect();
        let b: Vec<f32> = kk.iter().map(|x| x * 0.5).collect();
        let w: Vec<f32> = rng
            .vec(c, 1.0)
            .into_iter()
            .map(|x| (-(x.exp())).exp())
            .collect();
        let mut out = vec![0f32; c];
        wkv7_step(
            &mut state,
            Wkv7 {
                r: &r,
                w: &w,
                k: &k,
                v: &v,
                a: &a,
                b: &b,
            },
            n,
            &mut out,
        )
        .expect("wkv7");
        for hh in 0..h {
            let o = hh * n;
            let s0: Vec<f64> = sr[hh * n * n..(hh + 1) * n * n].to_vec();
            // S' = S·(diag(w) + a·bᵀ) + v·kᵀ
            for i in 0..n {
                for j in 0..n {
                    let m: f64 = (0..n)
                        .map(|l| {
                            s0[i * n + l]
                                * (if l == j { w[o + j] as f64 } else { 0.0 }
                                    + a[o + l] as f64 * b[o + j] as f64)
                        })
                        .sum();
                    sr[hh * n * n + i * n + j] = m + v[o + i] as f64 * k[o + j] as f64;
                }
            }
            for i in 0..n {
                let y: f64 = (0..n)
                    .map(|j| sr[hh * n * n + i * n + j] * r[o + j] as f64)
                    .sum();
                assert!((out[o + i] as f64 - y).abs() < 1e-4, "wkv7 y");
            }
        }
        assert_close(
            "wkv7 state",
            &state,
            &sr.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            1e-5,
            1e-5,
        );
    }
}

#[test]
fn channel_mix_matches_reference() {
    let mut rng = Rng::new(16);
    let (d, f) = (64, 96);
    let pool = ThreadPool::new(2);
    // F32 weights keep activations exact, so the match is tight; Q8_0 quantizes the activations
    // twice (xk, then the squared k with its wide range), which costs a few percent.
    for (t, tol) in [(QType::F32, 1e-5), (QType::Q8_0, 0.06)] {
        let (bk, bv, br) = (
            random_blocks(t, f * d, &mut rng),
            random_blocks(t, d * f, &mut rng),
            random_blocks(t, d * d, &mut rng),
        );
        let deq = |b: &[u8], n: usize| {
            let mut o = vec![0f32; n];
            dequantize_row(t, b, &mut o).expect("dequantize");
            o
        };
        let (wk, wv, wr) = (deq(&bk, f * d), deq(&bv, d * f), deq(&br, d * d));
        let (mu_k, mu_r) = (rng.vec(d, 1.0), rng.vec(d, 1.0));
        for v6 in [true, false] {
            let m = ChannelMix {
                mu_k: &mu_k,
                mu_r: v6.then_some(&mu_r[..]),
                wk: QMatrix::new(t, f, d, &bk).expect("wk"),
                wv: QMatrix::new(t, d, f, &bv).expect("wv"),
                wr: v6.then(|| QMatrix::new(t, d, d, &br).expect("wr")),
            };
            let x = rng.vec(d, 1.0);
            let prev0 = rng.vec(d, 1.0);
            let mut prev = prev0.clone();
            let mut scratch = ChannelMixScratch::default();
            let mut out = vec![0f32; d];
            channel_mix(&x, &mut prev, &m, &mut scratch, &pool, &mut out).expect("channel mix");
            assert_eq!(prev, x, "shift state updated");
            let mix = |mu: &[f32]| -> Vec<f64> {
                (0..d)
                    .map(|i| x[i] as f64 + (prev0[i] as f64 - x[i] as f64) * mu[i] as f64)
                    .collect()
            };
            let (xk, xr) = (mix(&mu_k), mix(&mu_r));
            let k: Vec<f64> = (0..f)
                .map(|o| {
                    (0..d)
                        .map(|i| wk[o * d + i] as f64 * xk[i])
                        .sum::<f64>()
                        .max(0.0)
                        .powi(2)
                })
                .collect();
            let scale = out.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
            for o in 0..d {
                let mut want: f64 = (0..f).map(|i| wv[o * f + i] as f64 * k[i]).sum();
                if v6 {
                    want *= sig64((0..d).map(|i| wr[o * d + i] as f64 * xr[i]).sum());
                }
                assert!(
                    (out[o] as f64 - want).abs() <= tol * scale + 1e-4,
                    "{t:?} v6 {v6} out {o}: {} vs {want}",
                    out[o]
                );
            }
        }
    }
    let _ = ActBuffer::new();
}

#[test]
fn elementwise_helpers() {
    let mut o = [0f32; 3];
    add(&[1.0, 2.0, 3.0], &[1.0, 1.0, 1.0], &mut o).expect("add");
    assert_eq!(o, [2.0, 3.0, 4.0]);
    mul(&[1.0, 2.0, 3.0], &[2.0, 2.0, 2.0], &mut o).expect("mul");
    assert_eq!(o, [2.0, 4.0, 6.0]);
    add_in_place(&mut o, &[1.0, 1.0, 1.0]).expect("add_in_place");
    assert_eq!(o, [3.0, 5.0, 7.0]);
    scale(&mut o, 2.0);
    assert_eq!(o, [6.0, 10.0, 14.0]);
    assert!(add(&[1.0], &[1.0, 2.0], &mut o).is_err());
    assert!(mul(&[1.0; 3], &[1.0; 3], &mut [0.0; 2]).is_err());
    let mut t = [0f32; 2];
    token_shift(&[1.0, 2.0], &[3.0, 4.0], &[0.5, 0.0], &mut t).expect("shift");
    assert_eq!(t, [2.0, 2.0]);
}
