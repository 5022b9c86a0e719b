//! The activation, residual, LayerNorm and softmax kernels on a real adapter against kiln-cpu's
//! twins: seeded inputs plus large magnitudes (±42, ±100, ±1e4) that must give finite outputs,
//! sizes that are not multiples of 4 or of a workgroup, guard words around every output, f32
//! and f16 storage, and both the subgroup and the shared-memory reductions.

mod common;

use common::{Rng, assert_close, gpu, guarded_output, read_guarded};
use half::f16;
use kiln::gpu::{DType, View};
use kiln::ops::norm::layer_norm;
use kiln::ops::reduce::Combine;
use kiln::ops::softmax::softmax;
use kiln::ops::unary::{UnaryOp, axpy, unary, unary_key};
use kiln::{Error, Gpu};
use kiln_cpu::ops::math;

fn upload_f32(gpu: &Gpu, data: &[f32]) -> wgpu::Buffer {
    gpu.upload("test input", bytemuck::cast_slice(data))
        .expect("upload")
}

fn as_f32(words: &[u32]) -> Vec<f32> {
    words.iter().map(|&w| f32::from_bits(w)).collect()
}

fn combines(gpu: &Gpu) -> Vec<Combine> {
    let mut c = vec![Combine::SharedMemory];
    if gpu.capabilities().subgroup {
        c.push(Combine::Subgroup);
    } else {
        eprintln!("adapter has no subgroups: only the shared-memory variants are tested");
    }
    c
}

/// The storage types to test: f16 only where the adapter has SHADER_F16 (elsewhere the refusal
/// is checked instead).
fn dtypes(gpu: &Gpu) -> Vec<DType> {
    if gpu.capabilities().f16 {
        vec![DType::F32, DType::F16]
    } else {
        let err = gpu
            .kernel(&unary_key(UnaryOp::Silu, DType::F16, false))
            .expect_err("an f16 kernel on a device without SHADER_F16");
        assert!(matches!(err, Error::MissingFeature { .. }), "{err}");
        eprintln!("adapter has no SHADER_F16: only f32 storage is tested");
        vec![DType::F32]
    }
}

/// `n` values: uniform in [-4, 4), with large magnitudes of both signs spread through them.
fn inputs(rng: &mut Rng, n: usize) -> Vec<f32> {
    const LARGE: [f32; 10] = [42.0, -42.0, 100.0, -100.0, 1e4, -1e4, 50.0, -50.0, 0.0, 9.5];
    let mut x: Vec<f32> = rng.vec(n).into_iter().map(|v| 4.0 * v).collect();
    for (i, v) in LARGE.iter().enumerate() {
        let at = i * 37 % n.max(1);
        if at < n {
            x[at] = *v;
        }
    }
    x
}

/// Uploads `x` in `dtype`; returns the buffer and the values the GPU sees (f16-rounded).
fn upload_as(gpu: &Gpu, dtype: DType, x: &[f32]) -> (wgpu::Buffer, Vec<f32>) {
    match dtype {
        DType::F32 => (upload_f32(gpu, x), x.to_vec()),
        DType::F16 => {
            let h: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
            let seen = h.iter().map(|v| v.to_f32()).collect();
            let b = gpu
                .upload("test input", bytemuck::cast_slice(&h))
                .expect("upload");
            (b, seen)
        }
    }
}

/// A guarded output for `n` elements of `dtype`; returns it with its view size in bytes.
fn output_for(gpu: &Gpu, dtype: DType, n: usize) -> (wgpu::Buffer, u64, usize) {
    let words = (n * dtype.size() as usize).div_ceil(4);
    let (buf, off) = guarded_output(gpu, words);
    (buf, off, words)
}

/// Reads `n` elements of `dtype` back as f32 (guards checked).
fn read_as(gpu: &Gpu, dtype: DType, buf: &wgpu::Buffer, words: usize, n: usize) -> Vec<f32> {
    let got = read_guarded(gpu, buf, words);
    match dtype {
        DType::F32 => as_f32(&got),
        DType::F16 => bytemuck::cast_slice::<u32, f16>(&got)[..n]
            .iter()
            .map(|h| h.to_f32())
            .collect(),
    }
}

/// The reference of one op on one value, in f32 (kiln-cpu's twins).
fn reference(op: UnaryOp, v: f32) -> f32 {
    match op {
        UnaryOp::Silu => math::silu(v),
        UnaryOp::GeluTanh => math::gelu_tanh(v),
        UnaryOp::GeluErf => math::gelu_erf(v),
        UnaryOp::Sigmoid => math::sigmoid(v),
        UnaryOp::Tanh => math::tanh(v),
        UnaryOp::Scale(s) => v * s,
    }
}

/// Rounds to what `dtype` stores.
fn stored(dtype: DType, v: f32) -> f32 {
    match dtype {
        DType::F32 => v,
        DType::F16 => f16::from_f32(v).to_f32(),
    }
}

/// Tolerance (atol, rtol) of a result stored in `dtype`: the f32 math differs from kiln-cpu's
/// by a few ulps of exp (WGSL allows 3 + 2|x| ulps) and by the cancellation in (1 - e) near 0;
/// f16 adds one rounding of the result (2^-11 relative), which the two sides may round apart
/// by one f16 ulp.
fn tolerance(dtype: DType) -> (f32, f32) {
    match dtype {
        DType::F32 => (1e-6, 1e-5),
        DType::F16 => (1e-6, 1e-3),
    }
}

#[test]
fn unary_ops_match_cpu_and_stay_finite() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(31);
    let ops = [
        UnaryOp::Silu,
        UnaryOp::GeluTanh,
        UnaryOp::GeluErf,
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
        UnaryOp::Scale(-0.375),
    ];
    for dtype in dtypes(&gpu) {
        // Sizes not a multiple of 4 take the scalar variant, the others the vec4 one.
        for n in [1usize, 7, 257, 1000, 4099] {
            let x = inputs(&mut rng, n);
            let (xb, seen) = upload_as(&gpu, dtype, &x);
            for op in ops {
                let (out, off, words) = output_for(&gpu, dtype, n);
                let mut rec = gpu.recorder();
                unary(
                    &mut rec,
                    op,
                    dtype,
                    (&xb).into(),
                    View::new(&out, off, words as u64 * 4),
                    n as u32,
                )
                .unwrap();
                rec.submit().unwrap();
                let got = read_as(&gpu, dtype, &out, words, n);
                let want: Vec<f32> = seen
                    .iter()
                    .map(|&v| stored(dtype, reference(op, v)))
                    .collect();
                let (atol, rtol) = tolerance(dtype);
                assert_close(&format!("{op:?} {dtype:?} n={n}"), &got, &want, atol, rtol);
            }
        }
    }
}

/// The saturated ends exactly: the limits must be reached, not approached through NaN or inf.
#[test]
fn unary_ops_saturate_exactly_at_large_magnitudes() {
    let Some(gpu) = gpu() else { return };
    let x = [1e4f32, -1e4, 100.0, -100.0, 60.0, -60.0, 42.5, -42.5];
    let xb = upload_f32(&gpu, &x);
    let cases: [(UnaryOp, [f32; 8]); 5] = [
        (UnaryOp::Tanh, [1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0]),
        (UnaryOp::Sigmoid, [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]),
        (UnaryOp::Silu, [1e4, 0.0, 100.0, 0.0, 60.0, 0.0, 42.5, 0.0]),
        (
            UnaryOp::GeluTanh,
            [1e4, 0.0, 100.0, 0.0, 60.0, 0.0, 42.5, 0.0],
        ),
        (
            UnaryOp::GeluErf,
            [1e4, 0.0, 100.0, 0.0, 60.0, 0.0, 42.5, 0.0],
        ),
    ];
    for (op, want) in cases {
        let (out, off) = guarded_output(&gpu, x.len());
        let mut rec = gpu.recorder();
        unary(
            &mut rec,
            op,
            DType::F32,
            (&xb).into(),
            View::new(&out, off, 32),
            8,
        )
        .unwrap();
        rec.submit().unwrap();
        let got = as_f32(&read_guarded(&gpu, &out, x.len()));
        // At -42.5 the results are 0 up to 2e-17 (sigmoid(-42.5) = 3.5e-19, silu(-42.5) =
        // -1.5e-17); beyond, 0 up to denormals; the positive side is exact.
        assert_close(&format!("{op:?} saturation"), &got, &want, 2e-17, 0.0);
    }
}

#[test]
fn axpy_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(32);
    let s = -0.75f32;
    for dtype in dtypes(&gpu) {
        for n in [1usize, 7, 1000, 4099] {
            let (xb, xs) = upload_as(&gpu, dtype, &rng.vec(n));
            let (bb, bs) = upload_as(&gpu, dtype, &inputs(&mut rng, n));
            let (out, off, words) = output_for(&gpu, dtype, n);
            let mut rec = gpu.recorder();
            axpy(
                &mut rec,
                dtype,
                (&xb).into(),
                s,
                (&bb).into(),
                View::new(&out, off, words as u64 * 4),
                n as u32,
            )
            .unwrap();
            rec.submit().unwrap();
            let got = read_as(&gpu, dtype, &out, words, n);
            let want: Vec<f32> = xs
                .iter()
                .zip(&bs)
                .map(|(&x, &b)| stored(dtype, (f64::from(x) + f64::from(s) * f64::from(b)) as f32))
                .collect();
            // One rounding of s * b and one of the sum (or one, fused): 2 f32 ulps.
            let (atol, rtol) = match dtype {
                DType::F32 => (2.0 * f32::EPSILON, 2.0 * f32::EPSILON),
                DType::F16 => (1e-6, 1e-3),
            };
            assert_close(&format!("axpy {dtype:?} n={n}"), &got, &want, atol, rtol);
        }
    }
}

#[test]
fn unary_and_axpy_refuse_short_buffers() {
    let Some(gpu) = gpu() else { return };
    let x = upload_f32(&gpu, &[0.0; 8]);
    let (out, off) = guarded_output(&gpu, 4);
    let mut rec = gpu.recorder();
    let err = unary(
        &mut rec,
        UnaryOp::Silu,
        DType::F32,
        (&x).into(),
        View::new(&out, off, 16),
        8,
    )
    .expect_err("8 outputs into 4 words");
    assert!(matches!(err, Error::Shape { op: "unary", .. }), "{err}");
    let err = axpy(
        &mut rec,
        DType::F32,
        View::new(&x, 0, 16),
        1.0,
        (&x).into(),
        View::new(&out, off, 16),
        8,
    )
    .expect_err("8 inputs from 4 words");
    assert!(matches!(err, Error::Shape { op: "axpy", .. }), "{err}");
    assert!(rec.is_empty(), "a refused op recorded a dispatch");
}

fn run_layer_norm(
    gpu: &Gpu,
    combine: Combine,
    x: &[f32],
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    rows: usize,
) -> Vec<f32> {
    let n = x.len() / rows;
    let xb = upload_f32(gpu, x);
    let wb = w.map(|w| upload_f32(gpu, w));
    let bb = b.map(|b| upload_f32(gpu, b));
    let (out, off) = guarded_output(gpu, x.len());
    let mut rec = gpu.recorder();
    layer_norm(
        &mut rec,
        combine,
        (&xb).into(),
        wb.as_ref().map(View::from),
        bb.as_ref().map(View::from),
        View::new(&out, off, x.len() as u64 * 4),
        rows as u32,
        n as u32,
        1e-5,
    )
    .unwrap();
    rec.submit().unwrap();
    as_f32(&read_guarded(gpu, &out, x.len()))
}

#[test]
fn layer_norm_matches_cpu_with_and_without_affine() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(33);
    for (rows, n) in [(1usize, 1usize), (3, 255), (5, 1000), (2, 4099)] {
        // An offset mean and a spread that is not 1 catch a one-pass or a missing centring.
        let x: Vec<f32> = rng.vec(rows * n).iter().map(|v| 3.0 + 2.5 * v).collect();
        let w: Vec<f32> = rng.vec(n).iter().map(|v| 1.0 + 0.5 * v).collect();
        let b = rng.vec(n);
        for (wo, bo) in [
            (None, None),
            (Some(&w[..]), None),
            (None, Some(&b[..])),
            (Some(&w[..]), Some(&b[..])),
        ] {
            let mut want = vec![0f32; rows * n];
            for (xr, or) in x.chunks(n).zip(want.chunks_mut(n)) {
                kiln_cpu::ops::layer_norm(xr, wo, bo, 1e-5, or).unwrap();
            }
            let mut results = Vec::new();
            for combine in combines(&gpu) {
                let got = run_layer_norm(&gpu, combine, &x, wo, bo, rows);
                // Normalized values are O(1); the sums differ in order from the CPU's.
                let what = format!(
                    "layer_norm {combine:?} {rows}x{n} w={} b={}",
                    wo.is_some(),
                    bo.is_some()
                );
                assert_close(&what, &got, &want, 2e-5, 1e-5);
                results.push(got);
            }
            if let [a, s] = &results[..] {
                assert_close("layer_norm subgroup vs shared", a, s, 2e-5, 1e-5);
            }
        }
    }
}

fn run_softmax(gpu: &Gpu, combine: Combine, x: &[f32], rows: usize, scale: f32) -> Vec<f32> {
    let n = x.len() / rows;
    let xb = upload_f32(gpu, x);
    let (out, off) = guarded_output(gpu, x.len());
    let mut rec = gpu.recorder();
    softmax(
        &mut rec,
        combine,
        (&xb).into(),
        View::new(&out, off, x.len() as u64 * 4),
        rows as u32,
        n as u32,
        scale,
    )
    .unwrap();
    rec.submit().unwrap();
    as_f32(&read_guarded(gpu, &out, x.len()))
}

#[test]
fn softmax_matches_cpu_and_survives_large_logits() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(34);
    for (rows, n) in [(1usize, 1usize), (3, 255), (7, 1000), (2, 4099)] {
        for scale in [1.0f32, 0.125] {
            // Logits up to ±1e4: exp without the max subtraction overflows.
            let x = inputs(&mut rng, rows * n)
                .iter()
                .map(|v| 5.0 * v)
                .collect::<Vec<f32>>();
            let mut want: Vec<f32> = x.iter().map(|v| v * scale).collect();
            for row in want.chunks_mut(n) {
                kiln_cpu::ops::softmax(row);
            }
            let mut results = Vec::new();
            for combine in combines(&gpu) {
                let got = run_softmax(&gpu, combine, &x, rows, scale);
                // exp's ulps (WGSL allows 3 + 2|x|) relative to each probability, plus the
                // f32 sum in another order.
                let what = format!("softmax {combine:?} {rows}x{n} scale={scale}");
                assert_close(&what, &got, &want, 1e-6, 1e-4);
                for (r, row) in got.chunks(n).enumerate() {
                    let total: f64 = row.iter().map(|&p| f64::from(p)).sum();
                    assert!((total - 1.0).abs() < 1e-5, "{what} row {r} sums to {total}");
                }
                results.push(got);
            }
            if let [a, s] = &results[..] {
                assert_close("softmax subgroup vs shared", a, s, 1e-6, 1e-5);
            }
        }
    }
}

#[test]
fn norms_refuse_short_buffers() {
    let Some(gpu) = gpu() else { return };
    let x = upload_f32(&gpu, &[1.0; 12]);
    let (out, off) = guarded_output(&gpu, 12);
    let mut rec = gpu.recorder();
    let err = layer_norm(
        &mut rec,
        Combine::SharedMemory,
        (&x).into(),
        Some(View::new(&x, 0, 8)),
        None,
        View::new(&out, off, 48),
        3,
        4,
        1e-5,
    )
    .expect_err("a 2-element weight for rows of 4");
    assert!(
        matches!(
            err,
            Error::Shape {
                op: "layer_norm",
                ..
            }
        ),
        "{err}"
    );
    let err = softmax(
        &mut rec,
        Combine::SharedMemory,
        (&x).into(),
        View::new(&out, off, 32),
        3,
        4,
        1.0,
    )
    .expect_err("12 outputs into 8 words");
    assert!(matches!(err, Error::Shape { op: "softmax", .. }), "{err}");
    assert!(rec.is_empty(), "a refused op recorded a dispatch");
}
