//! The shared-memory-tiled matmul (`matmul_tiled`, f32 and f16 storage), the quantized prefill
//! matmul and the fused gated FFN GEMV, against plain CPU references on a real adapter.

mod common;

use common::quant::{random_weights, test_k};
use common::{Rng, as_f32, assert_close, gpu, guarded_output, read_guarded, splits};
use half::f16;
use kiln::gpu::{DType, View};
use kiln::ops::activation::{Act, gated};
use kiln::ops::gemv::{ActInput, ActQuant, GemvShape, QAct, Split, WType, gemv, gemv_q8, quantize};
use kiln::ops::gemv_gated::{GatedShape, gemv_gated};
use kiln::ops::matmul::{BatchStrides, MatmulShape, matmul_tiled, matmul_tiled_key};
use kiln::ops::matmul_q::{Prefill, matmul_q};
use kiln::{Error, Gpu};

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

/// Activation scratch for `m` rows of `k`, in the format `w`'s unfused GEMV reads.
struct ActBufs {
    x: wgpu::Buffer,
    q: Option<(ActQuant, [wgpu::Buffer; 3])>,
}

impl ActBufs {
    fn new(gpu: &Gpu, w: WType, x: &[f32], m: u32, k: u32) -> ActBufs {
        let x = gpu.upload("x", bytemuck::cast_slice(x)).unwrap();
        let q = ActQuant::for_weights(w).map(|quant| {
            let (bq, bd, bs) = QAct::sizes(m, k);
            let usage = wgpu::BufferUsages::STORAGE;
            let mk = |label, n| gpu.create_buffer(label, n, usage).unwrap();
            (quant, [mk("xq", bq), mk("xd", bd), mk("xs", bs)])
        });
        ActBufs { x, q }
    }

    fn qact(&self) -> Option<QAct<'_>> {
        self.q.as_ref().map(|(quant, [xq, xd, xs])| QAct {
            quant: *quant,
            xq: xq.into(),
            xd: xd.into(),
            xs: xs.into(),
        })
    }
}

/// The fused gated GEMV equals the composition it replaces (quantize, gate GEMV, up GEMV,
/// gated) run on the same adapter with the same split, for every weight type, both
/// activations and every split, writing only its columns of a wider output.
#[test]
fn gemv_gated_equals_the_unfused_composition() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(13);
    let align = gpu.limits().min_storage_buffer_offset_alignment as usize;
    let (rows, y_stride, y_offset) = (37u32, 45u32, 5u32);
    for w in WType::ALL {
        let k = test_k(w) as u32;
        let rb = w.row_bytes(k).unwrap() as usize;
        let half = rows as usize * rb;
        let up_offset = half.div_ceil(align) * align;
        let mut both = random_weights(&mut rng, w, rows as usize, k as usize);
        both.resize(up_offset, 0);
        both.extend(random_weights(&mut rng, w, rows as usize, k as usize));
        let wb = gpu.upload("gate and up", &both).unwrap();
        // Bindings are whole words: the last row's bytes are padded to one.
        let bound = half.next_multiple_of(4) as u64;
        let gate_w = View::new(&wb, 0, bound);
        let up_w = View::new(&wb, up_offset as u64, bound);
        for m in [1u32, 3] {
            let x = rng.vec((m * k) as usize);
            let acts = ActBufs::new(&gpu, w, &x, m, k);
            let n = (m * rows) as usize;
            let tmp = |label| {
                gpu.create_buffer(label, n as u64 * 4, wgpu::BufferUsages::STORAGE)
                    .unwrap()
            };
            let (g, u) = (tmp("gate"), tmp("up"));
            for act in [Act::Silu, Act::Gelu] {
                for split in splits(&gpu) {
                    let (want_buf, want_off) = guarded_output(&gpu, n);
                    let out_words = (m * y_stride) as usize;
                    let (out, out_off) = guarded_output(&gpu, out_words);
                    let mut rec = gpu.recorder();
                    if let Some(qa) = acts.qact() {
                        quantize(&mut rec, (&acts.x).into(), qa, m, k).unwrap();
                    }
                    let shape = GemvShape {
                        wtype: w,
                        k,
                        rows,
                        m,
                        y_stride: rows,
                        y_offset: 0,
                        accumulate: false,
                    };
                    for (wv, y) in [(gate_w, &g), (up_w, &u)] {
                        match acts.qact() {
                            Some(qa) => gemv_q8(&mut rec, split, wv, qa, y.into(), shape),
                            None => gemv(&mut rec, split, wv, (&acts.x).into(), y.into(), shape),
                        }
                        .unwrap();
                    }
                    let want_view = View::new(&want_buf, want_off, n as u64 * 4);
                    gated(&mut rec, act, (&g).into(), (&u).into(), want_view, n as u32).unwrap();
                    let input = match acts.qact() {
                        Some(qa) => ActInput::Q8(qa),
                        None => ActInput::F32((&acts.x).into()),
                    };
                    let s = GatedShape {
                        wtype: w,
                        act,
                        k,
                        rows,
                        m,
                        up_offset: up_offset as u32,
                        y_stride,
                        y_offset,
                    };
                    let out_view = View::new(&out, out_off, out_words as u64 * 4);
                    gemv_gated(&mut rec, split, (&wb).into(), input, out_view, s).unwrap();
                    rec.submit().unwrap();
                    let want = as_f32(&read_guarded(&gpu, &want_buf, n));
                    let all = as_f32(&read_guarded(&gpu, &out, out_words));
                    let mut got = Vec::with_capacity(n);
                    for j in 0..m as usize {
                        let row = &all[j * y_stride as usize..(j + 1) * y_stride as usize];
                        let (lo, hi) = (y_offset as usize, (y_offset + rows) as usize);
                        got.extend_from_slice(&row[lo..hi]);
                        assert!(
                            row[..lo].iter().chain(&row[hi..]).all(|&v| v == 0.0),
                            "gemv_gated {w:?} wrote outside its columns"
                        );
                    }
                    assert!(want.iter().any(|&v| v != 0.0), "a non-trivial reference");
                    // The same dot products in the same order and the same activation code:
                    // equal up to the last bits a compiler may contract differently.
                    let what = format!("gemv_gated {w:?} {act:?} {split:?} m={m}");
                    assert_close(&what, &got, &want, 1e-6, 1e-5);
                }
            }
        }
    }
}

#[test]
fn gemv_gated_refuses_mismatched_inputs() {
    let Some(gpu) = gpu() else { return };
    let buf = gpu.upload("x", &[0u8; 4096]).unwrap();
    let v: View<'_> = (&buf).into();
    let s = GatedShape {
        wtype: WType::Q8_0,
        act: Act::Silu,
        k: 32,
        rows: 4,
        m: 1,
        up_offset: 4 * 34,
        y_stride: 4,
        y_offset: 0,
    };
    let q8_1 = QAct {
        quant: ActQuant::Q8_1,
        xq: v,
        xd: v,
        xs: v,
    };
    let mut rec = gpu.recorder();
    let cases = [
        (s, ActInput::F32(v), "cannot read"),
        (s, ActInput::Q8(q8_1), "cannot read"),
        (
            GatedShape { up_offset: 34, ..s },
            ActInput::F32(v),
            "overlap",
        ),
        (
            GatedShape { y_offset: 1, ..s },
            ActInput::F32(v),
            "bad shape",
        ),
        (
            GatedShape {
                rows: 100,
                up_offset: 100 * 34,
                y_stride: 100,
                ..s
            },
            ActInput::F32(v),
            "holds",
        ),
    ];
    for (shape, input, expect) in cases {
        let err = gemv_gated(&mut rec, Split::Thread, v, input, v, shape)
            .expect_err("a bad request is refused");
        assert!(matches!(err, Error::Shape { .. }), "{err}");
        assert!(err.to_string().contains(expect), "{err}");
    }
    assert!(rec.is_empty(), "nothing was recorded");
}

/// Runs `record` on an output of rows `shape.y_stride` wide that start as `init`; returns its
/// columns `y_offset..y_offset + rows` (m, rows), having checked the others kept `init`.
fn run_into(
    gpu: &Gpu,
    shape: GemvShape,
    init: &[f32],
    record: &dyn Fn(&mut kiln::gpu::Recorder, View<'_>),
) -> Vec<f32> {
    let words = init.len();
    let (out, off) = guarded_output(gpu, words);
    gpu.write(&out, off, bytemuck::cast_slice(init));
    let mut rec = gpu.recorder();
    record(&mut rec, View::new(&out, off, words as u64 * 4));
    rec.submit().unwrap();
    let all = as_f32(&read_guarded(gpu, &out, words));
    let (lo, hi) = (
        shape.y_offset as usize,
        (shape.y_offset + shape.rows) as usize,
    );
    let mut got = Vec::new();
    for (row, before) in all
        .chunks(shape.y_stride as usize)
        .zip(init.chunks(shape.y_stride as usize))
    {
        assert_eq!(&row[..lo], &before[..lo], "a write left of the columns");
        assert_eq!(&row[hi..], &before[hi..], "a write right of the columns");
        got.extend_from_slice(&row[lo..hi]);
    }
    got
}

/// On int8 activations, matmul_q computes gemv_q8's sums (per unit, in unit order, thread
/// split) for every quantized type; on f32 activations every format matches an f64 dot of the
/// dequantized weights (kiln-cpu's `dequantize_row`) within 2e-5 of Σ|w·x|. Row and activation
/// counts are not multiples of the 32 x 32 tile; the output is a column range of wider rows,
/// overwritten or accumulated into.
#[test]
fn matmul_q_matches_gemv_q8_and_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(14);
    let (rows, y_stride, y_offset) = (45u32, 51u32, 4u32);
    for w in WType::ALL {
        let k = test_k(w) as u32;
        let weights = random_weights(&mut rng, w, rows as usize, k as usize);
        let wb = gpu.upload("w", &weights).unwrap();
        let wv: View<'_> = (&wb).into();
        let rb = w.row_bytes(k).unwrap() as usize;
        let mut wf = vec![0f32; (rows * k) as usize];
        for (r, out) in wf.chunks_mut(k as usize).enumerate() {
            kiln_cpu::quant::dequantize_row(w.qtype(), &weights[r * rb..(r + 1) * rb], out)
                .unwrap();
        }
        for m in [3u32, 37] {
            let x = rng.vec((m * k) as usize);
            let acts = ActBufs::new(&gpu, w, &x, m, k);
            if let Some(qa) = acts.qact() {
                let mut rec = gpu.recorder();
                quantize(&mut rec, (&acts.x).into(), qa, m, k).unwrap();
                rec.submit().unwrap();
            }
            let init = rng.vec((m * y_stride) as usize);
            for accumulate in [false, true] {
                let shape = GemvShape {
                    wtype: w,
                    k,
                    rows,
                    m,
                    y_stride,
                    y_offset,
                    accumulate,
                };
                let what = format!("matmul_q {w:?} m={m} acc={accumulate}");
                let base = |j: usize, r: usize| {
                    if accumulate {
                        f64::from(init[j * y_stride as usize + y_offset as usize + r])
                    } else {
                        0.0
                    }
                };
                // f32 activations: against the f64 reference.
                let got = run_into(&gpu, shape, &init, &|rec, y| {
                    matmul_q(rec, wv, ActInput::F32((&acts.x).into()), y, shape).unwrap()
                });
                let (mut want, mut mag) = (Vec::new(), Vec::new());
                for j in 0..m as usize {
                    for r in 0..rows as usize {
                        let (mut acc, mut abs) = (base(j, r), base(j, r).abs());
                        for i in 0..k as usize {
                            let t = f64::from(wf[r * k as usize + i])
                                * f64::from(x[j * k as usize + i]);
                            acc += t;
                            abs += t.abs();
                        }
                        want.push(acc);
                        mag.push(abs);
                    }
                }
                check(&format!("{what} f32"), &got, &want, &mag, 2e-5);
                // int8 activations: against gemv_q8 on the same quantized activations.
                if let Some(qa) = acts.qact() {
                    let got = run_into(&gpu, shape, &init, &|rec, y| {
                        matmul_q(rec, wv, ActInput::Q8(qa), y, shape).unwrap()
                    });
                    let want = run_into(&gpu, shape, &init, &|rec, y| {
                        gemv_q8(rec, Split::Thread, wv, qa, y, shape).unwrap()
                    });
                    assert_close(&format!("{what} q8"), &got, &want, 1e-6, 1e-5);
                }
            }
        }
    }
}

#[test]
fn matmul_q_refuses_bad_requests() {
    let Some(gpu) = gpu() else { return };
    let buf = gpu.upload("x", &[0u8; 4096]).unwrap();
    let v: View<'_> = (&buf).into();
    let s = GemvShape {
        wtype: WType::Q8_0,
        k: 32,
        rows: 4,
        m: 2,
        y_stride: 4,
        y_offset: 0,
        accumulate: false,
    };
    let q8_1 = QAct {
        quant: ActQuant::Q8_1,
        xq: v,
        xd: v,
        xs: v,
    };
    let mut rec = gpu.recorder();
    let cases = [
        (s, ActInput::Q8(q8_1), "cannot read"),
        (GemvShape { k: 48, ..s }, ActInput::F32(v), "whole number"),
        (
            GemvShape { y_offset: 1, ..s },
            ActInput::F32(v),
            "bad shape",
        ),
        (
            GemvShape {
                rows: 200,
                y_stride: 200,
                ..s
            },
            ActInput::F32(v),
            "holds",
        ),
    ];
    for (shape, input, expect) in cases {
        let err = matmul_q(&mut rec, v, input, v, shape).expect_err("a bad request is refused");
        assert!(matches!(err, Error::Shape { .. }), "{err}");
        assert!(err.to_string().contains(expect), "{err}");
    }
    assert!(rec.is_empty(), "nothing was recorded");
}

/// A real model's prompt logits are the same whether its chunks go through the tiled
/// `matmul_q` or through the GEMVs (and the fused gated GEMV): on int8 activations both sum the
/// same integer block dots in the same order. 37 tokens make a 32-token and a 5-token chunk.
#[test]
fn tiled_prefill_equals_gemv_prefill_on_real_models() {
    use kiln::gguf::GgufFile;
    use kiln::model::Config;
    use kiln::model::gpu::{Choice, GpuModel, StepOutput};
    let Some(gpu) = gpu() else { return };
    for (_, file) in &common::MODELS[..2] {
        let Some(path) = common::model_file(file, common::INSTALL_MODELS) else {
            return;
        };
        let gguf = GgufFile::open(&path).expect("open");
        let cfg = Config::from_gguf(&gguf).expect("config");
        let prompt: Vec<u32> = (0..37).map(|i| (i * 1013 + 7) % cfg.vocab).collect();
        let mut logits = Vec::new();
        for prefill in [Prefill::Gemv, Prefill::Tiled] {
            let mut model = GpuModel::load(&gpu, &gguf, &cfg, 64, &mut |_, _| {}).expect("load");
            model.set_prefill(prefill);
            let StepOutput::Logits(l) = model
                .step(&prompt, 0, prompt.len() as u32, &Choice::Logits)
                .expect("step")
            else {
                panic!("logits were asked for")
            };
            logits.push(l);
        }
        let scale = logits[0].iter().fold(0f32, |m, v| m.max(v.abs()));
        // Only a compiler's contraction choices (and f32 sums of F16/F32 weights, summed per
        // element rather than per vec4) differ; 1e-4 of the largest logit is far below any
        // difference a wrong tile would make.
        assert_close(
            &format!("{file}: tiled vs GEMV prefill logits"),
            &logits[1],
            &logits[0],
            1e-4 * scale,
            0.0,
        );
    }
}
