//! Quantized weights and activations for kernel tests: random valid GGUF blocks, their f32
//! values, and llama.cpp's activation quantization written out as the reference.

use half::f16;
use kiln::ops::gemv::{ActQuant, WType};
use kiln_cpu::quant::dequantize_row;

use super::Rng;

/// The int8-quantized weight formats.
pub const QUANTIZED: [WType; 6] = [
    WType::Q4_0,
    WType::Q4_1,
    WType::Q5_0,
    WType::Q8_0,
    WType::Q4K,
    WType::Q6K,
];

pub fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// `rows` rows of `k` weights as random but valid GGUF blocks: random quant bits, finite f16
/// scales of sane size (0.01..0.1 for 32-blocks; smaller super-scales for K-quants, whose
/// 6-bit sub-scales multiply them).
pub fn random_weights(rng: &mut Rng, w: WType, rows: usize, k: usize) -> Vec<u8> {
    let n_blocks = rows * k / w.block_elems() as usize;
    let bb = w.block_bytes() as usize;
    let mut out = vec![0u8; n_blocks * bb];
    let scale = |rng: &mut Rng, lo: f32, hi: f32| lo + (hi - lo) * (rng.f32() * 0.5 + 0.5);
    for b in out.chunks_exact_mut(bb) {
        match w {
            WType::F32 => {
                for v in b.chunks_exact_mut(4) {
                    v.copy_from_slice(&rng.f32().to_le_bytes());
                }
                continue;
            }
            WType::F16 => {
                for i in 0..bb / 2 {
                    put_f16(b, 2 * i, rng.f32());
                }
                continue;
            }
            _ => {}
        }
        for byte in b.iter_mut() {
            *byte = rng.next_u64() as u8;
        }
        match w {
            WType::Q4_0 | WType::Q5_0 | WType::Q8_0 => put_f16(b, 0, scale(rng, 0.01, 0.1)),
            WType::Q4_1 => {
                put_f16(b, 0, scale(rng, 0.01, 0.1));
                put_f16(b, 2, rng.f32() * 0.1);
            }
            WType::Q4K => {
                put_f16(b, 0, scale(rng, 0.001, 0.01));
                put_f16(b, 2, scale(rng, 0.001, 0.01));
            }
            WType::Q6K => put_f16(b, 208, scale(rng, 0.001, 0.01)),
            WType::F16 | WType::F32 => unreachable!("handled above"),
        }
    }
    out
}

/// Row length for tests of `w`: a few blocks, not a multiple of the 64-invocation workgroup's
/// share of 32-weight units.
pub fn test_k(w: WType) -> usize {
    if w.block_elems() == 256 { 768 } else { 224 }
}

/// The f32 values of `rows` rows of `k` weights.
pub fn dequant_rows(w: WType, bytes: &[u8], rows: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * k];
    let rb = w.row_bytes(k as u32).unwrap() as usize;
    for r in 0..rows {
        dequantize_row(
            w.qtype(),
            &bytes[r * rb..(r + 1) * rb],
            &mut out[r * k..(r + 1) * k],
        )
        .unwrap();
    }
    out
}

/// llama.cpp's activation quantization, written out here as the reference for the GPU's
/// (kiln-cpu's `ActBuffer` deliberately differs: f32 scales, Q8_K scaled by |max|).
/// Returns (q (m*k), d (m*k/32), s (m*k/32)) in the GPU layout; Q8_0 gets Q8_1's sums.
pub fn reference_quantize(quant: ActQuant, x: &[f32]) -> (Vec<i8>, Vec<f32>, Vec<f32>) {
    let n = x.len();
    let mut q = vec![0i8; n];
    let mut d = vec![0f32; n / 32];
    let mut s = vec![0f32; n / 32];
    match quant {
        ActQuant::Q8_0 | ActQuant::Q8_1 => {
            for b in 0..n / 32 {
                let xb = &x[32 * b..32 * b + 32];
                let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
                let db = amax / 127.0;
                let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                let mut sum = 0i32;
                for i in 0..32 {
                    let v = (xb[i] * id).round_ties_even() as i32;
                    q[32 * b + i] = v as i8;
                    sum += v;
                }
                d[b] = f16::from_f32(db).to_f32();
                s[b] = f16::from_f32(sum as f32 * db).to_f32();
            }
        }
        ActQuant::Q8K => {
            for b in 0..n / 256 {
                let xb = &x[256 * b..256 * b + 256];
                let (mut amax, mut vmax) = (0f32, 0f32);
                for &v in xb {
                    if v.abs() > amax {
                        amax = v.abs();
                        vmax = v;
                    }
                }
                let (iscale, db) = if amax != 0.0 {
                    let is = -127.0 / vmax;
                    (is, 1.0 / is)
                } else {
                    (0.0, 0.0)
                };
                for u in 0..8 {
                    let mut sum = 0i32;
                    for i in 0..32 {
                        let v = (iscale * xb[32 * u + i]).round_ties_even().min(127.0) as i32;
                        q[256 * b + 32 * u + i] = v as i8;
                        sum += v;
                    }
                    d[8 * b + u] = db;
                    s[8 * b + u] = sum as f32;
                }
            }
        }
    }
    (q, d, s)
}

/// How far an int8 product of weight row `w` with activation row `x` may be from the exact f64
/// product: each activation is off by at most half a quantization step d of its block (variance
/// d^2/12 per value; 6 sigma over the row) and each block's scale is f16-rounded (2^-11 of its
/// partial dot), with `block` activations per scale.
pub fn int8_bound(w: &[f32], x: &[f32], block: usize) -> f64 {
    let (mut var, mut scale_err) = (0f64, 0f64);
    for b in 0..x.len() / block {
        let xs = &x[b * block..(b + 1) * block];
        let ws = &w[b * block..(b + 1) * block];
        let step = f64::from(xs.iter().fold(0f32, |a, v| a.max(v.abs()))) / 127.0;
        let mut partial = 0f64;
        for (wi, xi) in ws.iter().zip(xs) {
            var += f64::from(*wi).powi(2) * step * step / 6.0;
            partial += f64::from(*wi) * f64::from(*xi);
        }
        scale_err += partial.abs() / 1024.0;
    }
    6.0 * var.sqrt() + scale_err + 1e-5
}
