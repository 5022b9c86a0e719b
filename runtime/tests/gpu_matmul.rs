//! The shared-memory-tiled matmul (`matmul_tiled`, f32 and f16 storage), the quantized prefill
//! matmul and the fused gated FFN GEMV, against plain CPU references on a real adapter.

mod common;

use common::{Rng, gpu, guarded_output, read_guarded};
use half::f16;
use kiln::Error;
use kiln::gpu::{DType, View};
use kiln::ops::matmul::{BatchStrides, MatmulShape, matmul_tiled, matmul_tiled_key};

fn as_f32(words: &[u32]) -> Vec<f32> {
    words.iter().map(|&w| f32::from_bits(w)).collect()
}

/// `values` as `dtype`, padded to whole 4-byte words (bindings are sized in words).
fn storage_bytes(values: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F32 => bytemuck::cast_slice(values).to_vec(),
        DType::F16 => {
            let mut h: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
            if h.len() % 2 == 1 {
                h.push(f16::ZERO);
            }
            bytemuck::cast_slice(&h).to_vec()
        }
    }
}

/// What the GPU sees of `values` stored as `dtype`.
fn stored(values: &[f32], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F32 => values.to_vec(),
        DType::F16 => values.iter().map(|&v| f16::from_f32(v).to_f32()).collect(),
    }
}

/// `c[z] = a[z] op(b[z])` in f64 with the given batch strides, and next to it Σ|a||b| per
/// element (the scale of the rounding error).
fn cpu_matmul(a: &[f32], b: &[f32], s: MatmulShape, st: BatchStrides) -> (Vec<f64>, Vec<f64>) {
    let (m, n, k) = (s.m as usize, s.n as usize, s.k as usize);
    let mut c = vec![0.0; m * n * s.batch as usize];
    let mut mag = c.clone();
    for z in 0..s.batch as usize {
        let a = &a[z * st.a as usize..];
        let b = &b[z * st.b as usize..];
        for i in 0..m {
            for j in 0..n {
                let (mut acc, mut abs) = (0.0f64, 0.0f64);
                for p in 0..k {
                    let bv = if s.trans_b {
                        b[j * k + p]
                    } else {
                        b[p * n + j]
                    };
                    let prod = f64::from(a[i * k + p]) * f64::from(bv);
                    acc += prod;
                    abs += prod.abs();
                }
                c[(z * m + i) * n + j] = acc;
                mag[(z * m + i) * n + j] = abs;
            }
        }
    }
    (c, mag)
}

/// Runs `matmul_tiled` on random inputs; returns the inputs as f32 and the output batches
/// (m, n) each, read out of the strided, guarded output (whose gaps must stay zero).
fn run_tiled(
    gpu: &kiln::Gpu,
    rng: &mut Rng,
    dtype: DType,
    s: MatmulShape,
    st: BatchStrides,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let span = |stride: u32, len: u32| ((s.batch - 1) * stride + len) as usize;
    let a = rng.vec(span(st.a, s.m * s.k));
    let b = rng.vec(span(st.b, s.k * s.n));
    let ab = gpu.upload("a", &storage_bytes(&a, dtype)).unwrap();
    let bb = gpu.upload("b", &storage_bytes(&b, dtype)).unwrap();
    let words = span(st.c, s.m * s.n);
    let (out, offset) = guarded_output(gpu, words);
    let mut rec = gpu.recorder();
    matmul_tiled(
        &mut rec,
        dtype,
        (&ab).into(),
        (&bb).into(),
        View::new(&out, offset, words as u64 * 4),
        s,
        st,
    )
    .unwrap();
    rec.submit().unwrap();
    let all = as_f32(&read_guarded(gpu, &out, words));
    let plane = (s.m * s.n) as usize;
    let mut got = Vec::with_capacity(plane * s.batch as usize);
    for z in 0..s.batch as usize {
        let start = z * st.c as usize;
        got.extend_from_slice(&all[start..start + plane]);
        let gap_end = (start + st.c as usize).min(all.len());
        if z + 1 < s.batch as usize {
            assert!(
                all[start + plane..gap_end].iter().all(|&v| v == 0.0),
                "{s:?}: a write between batches {z} and {}",
                z + 1
            );
        }
    }
    (a, b, got)
}

fn dtypes(gpu: &kiln::Gpu) -> Vec<DType> {
    if gpu.capabilities().f16 {
        vec![DType::F32, DType::F16]
    } else {
        let err = gpu
            .kernel(&matmul_tiled_key(DType::F16, true))
            .expect_err("an f16 kernel on a device without SHADER_F16");
        assert!(matches!(err, Error::MissingFeature { .. }), "{err}");
        eprintln!("f16 matmul not available on this adapter: checked the refusal instead");
        vec![DType::F32]
    }
}

/// f32: within 4 k f32 epsilons of Σ|a||b| of the f64 result (f32 sums in another order).
/// f16 storage: the same against the f64 product of the f16-rounded inputs (accumulation is
/// f32), and within 2^-10 Σ|a||b| of the product of the unrounded f32 inputs (each operand is
/// off by at most half an f16 ulp, 2^-11 relative).
#[test]
fn tiled_matmul_matches_cpu_at_odd_sizes() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(11);
    for dtype in dtypes(&gpu) {
        for (m, n, k, batch) in [
            (37, 53, 71, 3),
            (1, 1, 1, 1),
            (67, 45, 129, 2),
            (33, 70, 5, 1),
            (1, 577, 300, 2),
        ] {
            for trans_b in [false, true] {
                let s = MatmulShape {
                    m,
                    n,
                    k,
                    batch,
                    trans_b,
                };
                let st = s.contiguous();
                let (a, b, got) = run_tiled(&gpu, &mut rng, dtype, s, st);
                let what = format!("matmul_tiled {dtype:?} {s:?}");
                let (want, mag) = cpu_matmul(&stored(&a, dtype), &stored(&b, dtype), s, st);
                check(
                    &what,
                    &got,
                    &want,
                    &mag,
                    4.0 * k as f64 * f64::from(f32::EPSILON),
                );
                if dtype == DType::F16 {
                    let (exact, mag) = cpu_matmul(&a, &b, s, st);
                    check(
                        &format!("{what} vs f32 inputs"),
                        &got,
                        &exact,
                        &mag,
                        1.0 / 1024.0,
                    );
                }
            }
        }
    }
}

/// Batches that are views into larger tensors: strides longer than a batch, with gaps in the
/// output that must stay untouched.
#[test]
fn tiled_matmul_follows_batch_strides() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(12);
    for dtype in dtypes(&gpu) {
        for trans_b in [false, true] {
            let s = MatmulShape {
                m: 19,
                n: 41,
                k: 23,
                batch: 4,
                trans_b,
            };
            let st = BatchStrides {
                a: 19 * 23 + 7,
                b: 23 * 41 + 3,
                c: 19 * 41 + 13,
            };
            let (a, b, got) = run_tiled(&gpu, &mut rng, dtype, s, st);
            let (want, mag) = cpu_matmul(&stored(&a, dtype), &stored(&b, dtype), s, st);
            let what = format!("strided matmul_tiled {dtype:?} {s:?}");
            check(
                &what,
                &got,
                &want,
                &mag,
                4.0 * 23.0 * f64::from(f32::EPSILON),
            );
        }
    }
}

/// `|got - want| <= rel * Σ|a||b|` (plus a denormal floor), every value finite.
fn check(what: &str, got: &[f32], want: &[f64], mag: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(mag).enumerate() {
        assert!(g.is_finite(), "{what}[{i}] = {g} is not finite");
        let tol = rel * s + 1e-30;
        assert!(
            (f64::from(g) - w).abs() <= tol,
            "{what}[{i}]: got {g}, want {w} (tolerance {tol})"
        );
    }
}

#[test]
fn tiled_matmul_refuses_bad_shapes() {
    let Some(gpu) = gpu() else { return };
    let buf = gpu.upload("x", &[0u8; 1024]).unwrap();
    let v: View<'_> = (&buf).into();
    let s = MatmulShape {
        m: 4,
        n: 4,
        k: 4,
        batch: 2,
        trans_b: false,
    };
    let mut rec = gpu.recorder();
    let cases = [
        (MatmulShape { k: 0, ..s }, s.contiguous(), "empty"),
        (
            s,
            BatchStrides {
                c: 15,
                ..s.contiguous()
            },
            "overlap",
        ),
        (
            MatmulShape { m: 64, ..s },
            MatmulShape { m: 64, ..s }.contiguous(),
            "holds",
        ),
    ];
    for (shape, st, expect) in cases {
        let err = matmul_tiled(&mut rec, DType::F32, v, v, v, shape, st)
            .expect_err("a bad shape is refused");
        assert!(matches!(err, Error::Shape { .. }), "{err}");
        assert!(err.to_string().contains(expect), "{err}");
    }
    assert!(rec.is_empty(), "nothing was recorded");
}
