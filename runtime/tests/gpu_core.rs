//! The first kernels through the whole chain (template -> shadergen -> pipeline -> recorder ->
//! readback), checked against CPU references on a real adapter, and the runtime's promises:
//! one submit per step, no buffer or pipeline creation on a repeated step, clear errors.

mod common;

use common::{Rng, assert_close, gpu, guarded_output, read_guarded};
use half::f16;
use kiln::gpu::{DType, KernelFeatures, KernelKey, KernelSpec, View};
use kiln::ops::elementwise::{BinaryOp, binary, binary_key};
use kiln::ops::matmul::{MatmulShape, matmul, matmul_key};
use kiln::ops::reduce::{Combine, ReduceOp, reduce_key, rows};
use kiln::{Error, Gpu};

fn upload_f32(gpu: &Gpu, data: &[f32]) -> wgpu::Buffer {
    gpu.upload("test input", bytemuck::cast_slice(data))
        .expect("upload")
}

fn as_f32(words: &[u32]) -> Vec<f32> {
    words.iter().map(|&w| f32::from_bits(w)).collect()
}

#[test]
fn elementwise_f32_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(1);
    // Sizes not a multiple of 4 take the scalar variant, the others the vec4 one.
    for n in [1usize, 7, 8, 255, 257, 4096, 4099] {
        let a = rng.vec(n);
        let b = rng.vec(n);
        let (ab, bb) = (upload_f32(&gpu, &a), upload_f32(&gpu, &b));
        for op in [BinaryOp::Add, BinaryOp::Mul] {
            let (out, offset) = guarded_output(&gpu, n);
            let mut rec = gpu.recorder();
            binary(
                &mut rec,
                op,
                DType::F32,
                (&ab).into(),
                (&bb).into(),
                View::new(&out, offset, n as u64 * 4),
                n as u32,
            )
            .expect("record");
            rec.submit().expect("submit");
            let got = as_f32(&read_guarded(&gpu, &out, n));
            let want: Vec<f32> = a
                .iter()
                .zip(&b)
                .map(|(x, y)| match op {
                    BinaryOp::Add => x + y,
                    BinaryOp::Mul => x * y,
                })
                .collect();
            assert_close(&format!("{op:?} n={n}"), &got, &want, 0.0, 0.0);
        }
    }
}

#[test]
fn elementwise_f16_matches_cpu_or_is_refused() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(2);
    // 1001 values take the scalar variant, 1000 the vec4 one.
    for n in [1001usize, 1000] {
        let a: Vec<f16> = rng.vec(n).into_iter().map(f16::from_f32).collect();
        let b: Vec<f16> = rng.vec(n).into_iter().map(f16::from_f32).collect();
        if !gpu.capabilities().f16 {
            let err = gpu
                .kernel(&binary_key(BinaryOp::Add, DType::F16, false))
                .expect_err("an f16 kernel on a device without SHADER_F16");
            assert!(matches!(err, Error::MissingFeature { .. }), "{err}");
            eprintln!("f16 path not available on this adapter: checked the refusal instead");
            return;
        }
        let ab = gpu.upload("a", bytemuck::cast_slice(&a)).unwrap();
        let bb = gpu.upload("b", bytemuck::cast_slice(&b)).unwrap();
        // n f16 values take n/2 words (rounded up); the last half word of an odd n is padding.
        let words = n.div_ceil(2);
        let (out, offset) = guarded_output(&gpu, words);
        let mut rec = gpu.recorder();
        binary(
            &mut rec,
            BinaryOp::Add,
            DType::F16,
            (&ab).into(),
            (&bb).into(),
            View::new(&out, offset, words as u64 * 4),
            n as u32,
        )
        .unwrap();
        rec.submit().unwrap();
        let got_words = read_guarded(&gpu, &out, words);
        let got: Vec<f32> = bytemuck::cast_slice::<u32, f16>(&got_words)[..n]
            .iter()
            .map(|h| h.to_f32())
            .collect();
        let want: Vec<f32> = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f16::from_f32(x.to_f32() + y.to_f32()).to_f32())
            .collect();
        // f16 addition rounds once: within one f16 ulp of the correctly rounded result.
        assert_close(&format!("f16 add n={n}"), &got, &want, 1e-3, 1e-3);
    }
}

fn run_reduce(gpu: &Gpu, op: ReduceOp, combine: Combine, x: &[f32], nrows: usize) -> Vec<f32> {
    let n = x.len() / nrows;
    let xb = upload_f32(gpu, x);
    let (out, offset) = guarded_output(gpu, nrows);
    let mut rec = gpu.recorder();
    rows(
        &mut rec,
        op,
        combine,
        (&xb).into(),
        View::new(&out, offset, nrows as u64 * 4),
        nrows as u32,
        n as u32,
    )
    .unwrap();
    rec.submit().unwrap();
    as_f32(&read_guarded(gpu, &out, nrows))
}

#[test]
fn reductions_match_cpu_and_variants_agree() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(3);
    let mut combines = vec![Combine::SharedMemory];
    if gpu.capabilities().subgroup {
        combines.push(Combine::Subgroup);
    } else {
        eprintln!("adapter has no subgroups: testing the shared-memory variant only");
    }
    for (nrows, n) in [(1usize, 1usize), (3, 255), (37, 1000), (5, 4097)] {
        // Negative values everywhere catch a max that starts from 0 instead of -inf.
        let x: Vec<f32> = rng.vec(nrows * n).iter().map(|v| v - 2.0).collect();
        let sums: Vec<f32> = x
            .chunks(n)
            .map(|r| r.iter().map(|&v| f64::from(v)).sum::<f64>() as f32)
            .collect();
        let maxes: Vec<f32> = x
            .chunks(n)
            .map(|r| r.iter().copied().fold(f32::NEG_INFINITY, f32::max))
            .collect();
        let mut results = Vec::new();
        for &combine in &combines {
            let sum = run_reduce(&gpu, ReduceOp::Sum, combine, &x, nrows);
            let max = run_reduce(&gpu, ReduceOp::Max, combine, &x, nrows);
            // f32 summation of n terms of magnitude <= 3 in a different order.
            let atol = 3.0 * n as f32 * f32::EPSILON * 4.0;
            assert_close(
                &format!("sum {combine:?} {nrows}x{n}"),
                &sum,
                &sums,
                atol,
                1e-5,
            );
            assert_close(
                &format!("max {combine:?} {nrows}x{n}"),
                &max,
                &maxes,
                0.0,
                0.0,
            );
            results.push(sum);
        }
        if let [a, b] = &results[..] {
            assert_close("subgroup vs shared sum", a, b, 3.0 * n as f32 * 1e-6, 1e-5);
        }
    }
}

fn cpu_matmul(a: &[f32], b: &[f32], s: MatmulShape) -> Vec<f32> {
    let (m, n, k) = (s.m as usize, s.n as usize, s.k as usize);
    let mut c = vec![0.0f32; m * n * s.batch as usize];
    for z in 0..s.batch as usize {
        let (a, b) = (&a[z * m * k..], &b[z * k * n..]);
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f64;
                for p in 0..k {
                    let bv = if s.trans_b {
                        b[j * k + p]
                    } else {
                        b[p * n + j]
                    };
                    acc += f64::from(a[i * k + p]) * f64::from(bv);
                }
                c[z * m * n + i * n + j] = acc as f32;
            }
        }
    }
    c
}

#[test]
fn matmul_matches_cpu_at_odd_sizes() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(4);
    for (m, n, k, batch) in [
        (1, 1, 1, 1),
        (67, 45, 129, 3),
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
            let a = rng.vec((m * k * batch) as usize);
            let b = rng.vec((k * n * batch) as usize);
            let (ab, bb) = (upload_f32(&gpu, &a), upload_f32(&gpu, &b));
            let words = (m * n * batch) as usize;
            let (out, offset) = guarded_output(&gpu, words);
            let mut rec = gpu.recorder();
            matmul(
                &mut rec,
                (&ab).into(),
                (&bb).into(),
                View::new(&out, offset, words as u64 * 4),
                s,
            )
            .unwrap();
            rec.submit().unwrap();
            let got = as_f32(&read_guarded(&gpu, &out, words));
            let want = cpu_matmul(&a, &b, s);
            let atol = k as f32 * f32::EPSILON * 4.0;
            assert_close(&format!("matmul {s:?}"), &got, &want, atol, 1e-5);
        }
    }
}

/// A decode-like step: many dispatches, recorded once, submitted once; the second run of the
/// same step creates no buffer and no pipeline.
#[test]
fn a_step_is_one_submit_and_repeats_without_allocation() {
    let Some(gpu) = gpu() else { return };
    let n = 1000u32;
    let mut rng = Rng::new(5);
    let x = upload_f32(&gpu, &rng.vec(n as usize));
    let combine = Combine::best(&gpu);
    let keys = [
        binary_key(BinaryOp::Add, DType::F32, true),
        binary_key(BinaryOp::Mul, DType::F32, true),
        reduce_key(ReduceOp::Sum, combine),
        matmul_key(true),
    ];
    pollster::block_on(gpu.prewarm(&keys)).expect("prewarm");
    let step = || {
        let a = gpu.alloc_storage("step a", u64::from(n) * 4).unwrap();
        let b = gpu.alloc_storage("step b", u64::from(n) * 4).unwrap();
        let sum = gpu.alloc_storage("step sum", 4).unwrap();
        let mut rec = gpu.recorder();
        binary(
            &mut rec,
            BinaryOp::Add,
            DType::F32,
            (&x).into(),
            (&x).into(),
            (&a).into(),
            n,
        )
        .unwrap();
        for i in 0..10 {
            let (src, dst) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
            binary(
                &mut rec,
                BinaryOp::Mul,
                DType::F32,
                src.into(),
                (&x).into(),
                dst.into(),
                n,
            )
            .unwrap();
        }
        rows(
            &mut rec,
            ReduceOp::Sum,
            combine,
            (&a).into(),
            (&sum).into(),
            1,
            n,
        )
        .unwrap();
        let back = rec.read((&sum).into()).unwrap();
        rec.submit().unwrap();
        f32::from_le_bytes(back.wait().unwrap()[..4].try_into().unwrap())
    };
    let first = step();
    let before = gpu.counters();
    let second = step();
    let delta = gpu.counters() - before;
    assert_eq!(first, second, "the same step gave different results");
    assert!(first.is_finite());
    assert_eq!(delta.submits, 1, "{delta:?}");
    assert_eq!(delta.dispatches, 12, "{delta:?}");
    assert_eq!(delta.buffers_created, 0, "{delta:?}");
    assert_eq!(delta.pipelines_created, 0, "{delta:?}");
    assert_eq!(delta.bytes_read_back, 4, "{delta:?}");
    assert_eq!(delta.waits, 1, "{delta:?}");
}

#[test]
fn bad_requests_get_clear_errors() {
    let Some(gpu) = gpu() else { return };
    // An output too small for the shape.
    let small = gpu.alloc_storage("small", 16).unwrap();
    let big = gpu.alloc_storage("big", 4096).unwrap();
    let mut rec = gpu.recorder();
    let err = binary(
        &mut rec,
        BinaryOp::Add,
        DType::F32,
        (&big).into(),
        (&big).into(),
        (&small).into(),
        1000,
    )
    .expect_err("output too small");
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert!(err.to_string().contains("`out`"), "{err}");

    // A variant that was never generated.
    let err = gpu
        .kernel(&KernelKey::new("matmul_reg").uint("TILE_M", 3))
        .expect_err("missing variant");
    assert!(err.to_string().contains("shaders/manifest.txt"), "{err}");

    // A buffer over the adapter's limit.
    let limit = gpu.limits().max_buffer_size;
    let err = gpu
        .alloc_storage("huge", limit + 1)
        .expect_err("buffer over the limit");
    assert!(matches!(err, Error::BufferTooLarge { .. }), "{err}");

    // A kernel that needs more workgroup memory than the adapter has.
    let real = KernelSpec::find(&matmul_key(false)).unwrap();
    let greedy = KernelSpec {
        workgroup_storage_bytes: gpu.limits().max_compute_workgroup_storage_size + 4,
        features: KernelFeatures {
            f16: false,
            subgroup: false,
            dot4: false,
        },
        ..*real
    };
    let err = gpu.check_kernel(&greedy).expect_err("workgroup memory");
    assert!(matches!(err, Error::KernelExceedsLimits { .. }), "{err}");
    assert!(err.to_string().contains("workgroup"), "{err}");
}
