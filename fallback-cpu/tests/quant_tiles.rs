//! The wide and multi-row dot products (AVX-512 VNNI: four 32-blocks per step with a masked
//! tail, four activation rows per weight row) against their scalar twins: every tail length,
//! every activation-tile remainder, extreme values, and output guard words in the matmul.

mod common;

use common::{Rng, assert_close, random_blocks};
use kiln_cpu::quant::{dequantize_row, vec_dot};
use kiln_cpu::{ActBuffer, Isa, QMatrix, QType, ThreadPool};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const QUANTS: [QType; 6] = [
    QType::Q4_0,
    QType::Q4_1,
    QType::Q5_0,
    QType::Q8_0,
    QType::Q4_K,
    QType::Q6_K,
];

/// Activations with a few outliers, so block scales differ and some values quantize to ±127.
fn activations(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut x = rng.vec(n, 1.0);
    for _ in 0..n / 16 + 1 {
        let i = rng.below(n);
        x[i] = 8.0 * rng.f32();
    }
    x
}

/// Tolerance against the scalar twin: the integer block sums are exact, so only the f32 scaling
/// and summation order differ; bound that by f32 rounding of `Σ|w·x|` (and of the result).
fn tol(t: QType, w: &[u8], x: &[f32], want: f32) -> f32 {
    let mut wf = vec![0f32; x.len()];
    dequantize_row(t, w, &mut wf).expect("dequantize");
    let mag: f64 = wf.iter().zip(x).map(|(a, b)| (a * b).abs() as f64).sum();
    1e-5 * (want.abs() + mag as f32) + 1e-6
}

#[test]
fn wide_dot_matches_scalar_for_every_tail() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx2")
    {
        assert!(Isa::available().contains(&Isa::Avx512Vnni));
    }
    let mut rng = Rng::new(21);
    for t in QUANTS {
        // 1..=9 blocks: every remainder of the four-block step, plus a long row.
        for nblocks in (1..=9).chain([37]) {
            let n = t.block_size() * nblocks;
            let w = random_blocks(t, n, &mut rng);
            let x = activations(&mut rng, n);
            let mut act = ActBuffer::new();
            act.quantize(&x, t).expect("quantize");
            let want = vec_dot(Isa::Scalar, t, &w, &act, 0).expect("scalar");
            let bound = tol(t, &w, &x, want);
            for isa in Isa::available() {
                let got = vec_dot(isa, t, &w, &act, 0).expect("dot");
                assert!(got.is_finite(), "{t:?} {isa:?} n={n}: {got}");
                assert!(
                    (got - want).abs() <= bound,
                    "{t:?} {isa:?} n={n}: {got} vs scalar {want} (bound {bound})"
                );
            }
        }
    }
}

#[test]
fn q8_0_minus_128_weights() {
    // ggml's quantizer never writes -128, but a file may; |-128| must read as 128 unsigned.
    let t = QType::Q8_0;
    let n = 32 * 5;
    let mut w = vec![0x80u8; t.row_bytes(n).expect("aligned")];
    for (k, b) in w.chunks_exact_mut(34).enumerate() {
        b[..2].copy_from_slice(&half::f16::from_f32(0.25).to_le_bytes());
        b[2 + k] = 0x7f;
    }
    let mut rng = Rng::new(5);
    let x = activations(&mut rng, n);
    let mut act = ActBuffer::new();
    act.quantize(&x, t).expect("quantize");
    let want = vec_dot(Isa::Scalar, t, &w, &act, 0).expect("scalar");
    for isa in Isa::available() {
        let got = vec_dot(isa, t, &w, &act, 0).expect("dot");
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{isa:?}: {got} vs {want}"
        );
    }
}

#[test]
fn matmul_tiles_match_scalar_with_guards() {
    let mut rng = Rng::new(33);
    let pools = [ThreadPool::new(1), ThreadPool::new(2)];
    const GUARD: usize = 7;
    for t in QUANTS {
        let cols = t.block_size() * 5;
        let rows = 19;
        let w = random_blocks(t, rows * cols, &mut rng);
        let m = QMatrix::new(t, rows, cols, &w).expect("matrix");
        // 1..=4 (the multi-row kernel's remainders), 8 and 9 (past one activation tile), 13.
        for tokens in [1, 2, 3, 4, 5, 8, 9, 13] {
            let x = activations(&mut rng, tokens * cols);
            let mut act = ActBuffer::new();
            act.quantize_rows(&x, tokens, t).expect("quantize");
            let want: Vec<f32> = (0..tokens)
                .flat_map(|i| (0..rows).map(move |r| (i, r)))
                .map(|(i, r)| {
                    vec_dot(Isa::Scalar, t, m.row(r).expect("row"), &act, i).expect("dot")
                })
                .collect();
            for isa in Isa::available() {
                for pool in &pools {
                    let mut buf = vec![f32::from_bits(0x7fc0_dead); tokens * rows + 2 * GUARD];
                    let y = &mut buf[GUARD..GUARD + tokens * rows];
                    m.matmul_with(isa, &act, y, pool).expect("matmul");
                    let what = format!("{t:?} {isa:?} tokens={tokens}");
                    assert!(y.iter().all(|v| v.is_finite()), "{what}: non-finite output");
                    assert_close(&what, y, &want, 1e-4, 1e-5);
                    for g in buf[..GUARD].iter().chain(&buf[GUARD + tokens * rows..]) {
                        assert_eq!(g.to_bits(), 0x7fc0_dead, "{what}: guard overwritten");
                    }
                }
            }
        }
    }
}
