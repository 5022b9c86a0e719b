//! Block formats against llama.cpp's `gguf` package, SIMD dot products against their scalar
//! twins and against the f32 reference, GEMV/matmul against per-row dots, and bad sizes.

mod common;

use common::{Rng, assert_close, dot64, random_blocks};
use kiln_cpu::quant::{dequantize_row, vec_dot};
use kiln_cpu::{ActBuffer, CpuError, Isa, QMatrix, QType, ThreadPool};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const FIXTURES: &str = include_str!("data/quant_fixtures.txt");

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn qtype(name: &str) -> QType {
    *QType::ALL
        .iter()
        .find(|t| format!("{t:?}") == name)
        .expect("known type")
}

#[test]
fn dequantize_matches_gguf_python() {
    let mut seen = Vec::new();
    for line in FIXTURES.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split(' ').collect();
        let t = qtype(f[0]);
        let n: usize = f[1].parse().expect("count");
        let bytes = unhex(f[2]);
        let want: Vec<f32> = unhex(f[3])
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut got = vec![f32::NAN; n];
        dequantize_row(t, &bytes, &mut got).expect("dequantize");
        assert_close(f[0], &got, &want, 1e-7, 1e-6);
        seen.push(t);
    }
    assert_eq!(seen, QType::ALL.to_vec(), "fixture covers every type");
}

#[test]
fn block_geometry() {
    for t in QType::ALL {
        assert_eq!(QType::from_ggml_id(t.ggml_id()), Some(t));
        assert_eq!(t.row_bytes(t.block_size() * 3), Ok(t.block_bytes() * 3));
    }
    assert!(matches!(
        QType::Q4_K.row_bytes(576),
        Err(CpuError::BlockAlign { .. })
    ));
}

/// Activation-quantization error bound for `Σ w·x`: each activation moves by at most half its
/// block's step `amax/127`, plus f32 rounding.
fn act_bound(w: &[f32], x: &[f32], block: usize) -> f64 {
    let mut b = 0f64;
    for (wb, xb) in w.chunks(block).zip(x.chunks(block)) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        b += wb.iter().map(|v| v.abs() as f64).sum::<f64>() * amax / 127.0 * 0.5;
    }
    b * 1.01
        + 1e-5
            * w.iter()
                .zip(x)
                .map(|(a, b)| (a * b).abs() as f64)
                .sum::<f64>()
        + 1e-6
}

#[test]
fn vec_dot_matches_scalar_and_f32_reference() {
    let mut rng = Rng::new(7);
    for t in QType::ALL {
        let block = t.block_size().max(t.act_kind().block_size());
        for nblocks in [1, 3, 7] {
            let n = block * nblocks;
            let w = random_blocks(t, n, &mut rng);
            let mut wf = vec![0f32; n];
            dequantize_row(t, &w, &mut wf).expect("dequantize");
            let x = rng.vec(n, 2.0);
            let mut act = ActBuffer::new();
            act.quantize(&x, t).expect("quantize");
            let scalar = vec_dot(Isa::Scalar, t, &w, &act, 0).expect("scalar dot") as f64;
            let reference = dot64(&wf, &x);
            let bound = act_bound(&wf, &x, t.act_kind().block_size().max(1));
            assert!(
                (scalar - reference).abs() <= bound,
                "{t:?} n={n}: scalar {scalar} vs f32 reference {reference} (bound {bound})"
            );
            for isa in Isa::available() {
                let got = vec_dot(isa, t, &w, &act, 0).expect("simd dot") as f64;
                let tol = 1e-5
                    * (scalar.abs()
                        + wf.iter()
                            .zip(&x)
                            .map(|(a, b)| (a * b).abs() as f64)
                            .sum::<f64>())
                    + 1e-6;
                assert!(
                    (got - scalar).abs() <= tol,
                    "{t:?} {isa:?} n={n}: {got} vs scalar {scalar}"
                );
            }
        }
    }
}

#[test]
fn extreme_quants_do_not_overflow() {
    // All-max weights against all-max/min activations stress the i16 pair sums of maddubs.
    for t in [
        QType::Q4_0,
        QType::Q4_1,
        QType::Q5_0,
        QType::Q8_0,
        QType::Q4_K,
        QType::Q6_K,
    ] {
        let n = t.block_size().max(32) * 2;
        for fill in [0x00u8, 0xff, 0x80, 0x7f] {
            let mut w = vec![fill; t.row_bytes(n).expect("aligned")];
            let one = half::f16::from_f32(0.5).to_le_bytes();
            for b in w.chunks_exact_mut(t.block_bytes()) {
                let offs: &[usize] = match t {
                    QType::Q4_1 | QType::Q4_K => &[0, 2],
                    QType::Q6_K => &[208],
                    _ => &[0],
                };
                for &o in offs {
                    b[o..o + 2].copy_from_slice(&one);
                }
            }
            for sign in [1.0f32, -1.0] {
                let x = vec![sign; n];
                let mut act = ActBuffer::new();
                act.quantize(&x, t).expect("quantize");
                let scalar = vec_dot(Isa::Scalar, t, &w, &act, 0).expect("scalar");
                let mut wf = vec![0f32; n];
                dequantize_row(t, &w, &mut wf).expect("dequantize");
                let reference = dot64(&wf, &x) as f32;
                assert!(
                    (scalar - reference).abs() <= 1e-3 * reference.abs().max(1.0),
                    "{t:?} {fill:#x}: {scalar} vs {reference}"
                );
                for isa in Isa::available() {
                    let got = vec_dot(isa, t, &w, &act, 0).expect("dot");
                    assert!(
                        (got - scalar).abs() <= 1e-4 * scalar.abs().max(1.0),
                        "{t:?} {isa:?} fill {fill:#x}: {got} vs {scalar}"
                    );
                }
            }
        }
    }
}

#[test]
fn gemv_and_matmul_match_row_dots() {
    let mut rng = Rng::new(11);
    let pools = [ThreadPool::new(1), ThreadPool::new(2), ThreadPool::new(3)];
    for t in QType::ALL {
        let cols = t.block_size().max(t.act_kind().block_size()) * 3;
        let rows = 37;
        let w = random_blocks(t, rows * cols, &mut rng);
        let m = QMatrix::new(t, rows, cols, &w).expect("matrix");
        let x = rng.vec(5 * cols, 1.0);
        let mut act = ActBuffer::with_capacity(5, cols);
        act.quantize_rows(&x, 5, t).expect("quantize");
        let want: Vec<f32> = (0..5)
            .flat_map(|i| (0..rows).map(move |r| (i, r)))
            .map(|(i, r)| vec_dot(Isa::Scalar, t, m.row(r).expect("row"), &act, i).expect("dot"))
            .collect();
        for isa in Isa::available() {
            for pool in &pools {
                let mut y = vec![f32::NAN; 5 * rows];
                m.matmul_with(isa, &act, &mut y, pool).expect("matmul");
                assert_close(&format!("{t:?} {isa:?} matmul"), &y, &want, 1e-5, 1e-4);
            }
        }
        let mut one = ActBuffer::new();
        one.quantize(&x[..cols], t).expect("quantize");
        for pool in &pools {
            let mut y = vec![f32::NAN; rows];
            m.gemv(&one, &mut y, pool).expect("gemv");
            assert_close(&format!("{t:?} gemv"), &y, &want[..rows], 1e-5, 1e-4);
        }
    }
}

#[test]
fn bad_sizes_are_errors() {
    let w = vec![0u8; 18 * 4];
    assert!(matches!(
        QMatrix::new(QType::Q4_0, 2, 64, &w[1..]),
        Err(CpuError::Length { .. })
    ));
    assert!(matches!(
        QMatrix::new(QType::Q4_0, 2, 60, &w),
        Err(CpuError::BlockAlign { .. })
    ));
    assert!(QMatrix::new(QType::Q4_0, usize::MAX, 64, &w).is_err());
    let m = QMatrix::new(QType::Q4_0, 2, 64, &w).expect("matrix");
    assert!(m.row(1).is_some() && m.row(2).is_none());
    let pool = ThreadPool::new(1);
    let mut act = ActBuffer::new();
    let mut y = [0f32; 2];
    assert!(m.gemv(&act, &mut y, &pool).is_err(), "empty activations");
    act.quantize(&[0.5; 64], QType::Q4_1).expect("quantize");
    assert!(
        m.gemv(&act, &mut y, &pool).is_err(),
        "activations for another type"
    );
    act.quantize(&[0.5; 96], QType::Q4_0).expect("quantize");
    assert!(matches!(
        m.gemv(&act, &mut y, &pool),
        Err(CpuError::Length { .. })
    ));
    act.quantize(&[0.5; 64], QType::Q4_0).expect("quantize");
    assert!(matches!(
        m.gemv(&act, &mut y[..1], &pool),
        Err(CpuError::Length { .. })
    ));
    assert!(act.quantize(&[0.5; 63], QType::Q4_0).is_err());
    assert!(
        act.quantize(&[0.5; 64], QType::Q4_K).is_err(),
        "K-quants need 256-element rows"
    );
    assert!(act.quantize_rows(&[0.5; 64], 0, QType::Q4_0).is_err());
    let mut out = [0f32; 32];
    assert!(dequantize_row(QType::Q8_0, &[0u8; 33], &mut out).is_err());
    assert!(
        vec_dot(Isa::Scalar, QType::Q4_0, &w[..18], &act, 0).is_err(),
        "row bytes"
    );
    assert!(
        vec_dot(Isa::Scalar, QType::Q4_0, &w[..36], &act, 1).is_err(),
        "row index"
    );
}

/// `first_non_finite` looks where a non-finite value can hide, judged by the dequantizer itself:
/// a NaN (or an infinity) written at each byte offset of a block of zeros makes some
/// dequantized value non-finite exactly when `first_non_finite` finds the block.
#[test]
fn non_finite_blocks_are_found_where_dequantization_sees_them() {
    // Two blocks of the largest formats.
    const N: usize = 512;
    for t in QType::ALL {
        let row = t.row_bytes(N).unwrap();
        let block = t.block_bytes();
        let mut found_any = false;
        for poison in [[0x00, 0x7e], [0x00, 0x7c], [0x00, 0xfc]] {
            for at in block..2 * block - 1 {
                let mut bytes = vec![0u8; row];
                bytes[at..at + 2].copy_from_slice(&poison);
                if t == QType::F32 {
                    // An f32 NaN/infinity: its top two bytes.
                    let start = at / 4 * 4;
                    bytes[start..start + 4].copy_from_slice(&[
                        0,
                        0,
                        poison[0] | 0x80,
                        poison[1] | 0x7f,
                    ]);
                }
                let mut out = vec![0f32; N];
                dequantize_row(t, &bytes, &mut out).unwrap();
                let bad = out.iter().position(|v| !v.is_finite());
                let found = t.first_non_finite(&bytes);
                assert_eq!(
                    found.is_some(),
                    bad.is_some(),
                    "{t:?}: bytes {poison:02x?} at {at}: dequantized {bad:?}, found {found:?}"
                );
                if let Some(first) = found {
                    // The block it names (the second) holds the first bad value.
                    assert_eq!(first, t.block_size(), "{t:?} at {at}");
                    assert!(bad.unwrap() / t.block_size() == 1, "{t:?} at {at}");
                    found_any = true;
                }
            }
        }
        assert!(found_any, "{t:?}: no offset was found");
    }
}
