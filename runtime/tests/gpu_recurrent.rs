//! The recurrent kernels (Mamba conv1d and selective scan, RWKV-6/7 WKV, token shift and channel
//! mix) on a real adapter against their kiln-cpu twins. Every case runs the same sequence three
//! ways: the whole prefill in one call, one token per call (decode, one submit each) and two
//! uneven chunks, with the state living in a GPU buffer between calls. All three must match the
//! CPU twin fed token by token, and each other bit for bit (chunking does not change the
//! arithmetic), including the final state. Sizes are not multiples of any tile, inputs come
//! from fixed seeds, every output and state sits between guard words, and every value is
//! checked finite.

mod common;

use common::{Rng, assert_close, gpu, guarded_output, read_guarded};
use kiln::Gpu;
use kiln::gpu::{Recorder, View};
use kiln::ops::gemv::{ActQuant, QAct, Split, WType};
use kiln::ops::reduce::Combine;
use kiln::ops::rwkv::{
    ChannelMix, ChannelMixScratch, Linear, QScratch, Wkv6Io, Wkv7Io, WkvShape, channel_mix,
    mix_stride_bytes, token_shift, wkv6, wkv7,
};
use kiln::ops::ssm::{ConvIo, ScanIo, causal_conv1d, selective_scan};
use kiln_cpu::ops::{self as cpu, Wkv7};
use kiln_cpu::{QMatrix, QType, ThreadPool};

fn upload_f32(gpu: &Gpu, data: &[f32]) -> wgpu::Buffer {
    gpu.upload("test input", bytemuck::cast_slice(data))
        .expect("upload")
}

fn as_f32(words: &[u32]) -> Vec<f32> {
    words.iter().map(|&w| f32::from_bits(w)).collect()
}

/// A guarded output holding `init`.
fn guarded_with(gpu: &Gpu, init: &[f32]) -> (wgpu::Buffer, u64) {
    let (buf, off) = guarded_output(gpu, init.len());
    gpu.write(&buf, off, bytemuck::cast_slice(init));
    (buf, off)
}

fn out_view(buf: &wgpu::Buffer, off: u64, words: usize) -> View<'_> {
    View::new(buf, off, words as u64 * 4)
}

/// The three ways each case splits `t` tokens into calls: one prefill, one token per call, and
/// two uneven chunks (the first not a multiple of the kernels' 8-token chunk).
fn splits(t: usize) -> Vec<Vec<usize>> {
    let first = (t * 5 / 9).max(1);
    vec![vec![t], vec![1; t], vec![first, t - first]]
}

/// Rows `t0..t0 + len` of a `(t, width)` array.
fn rows(v: &[f32], width: usize, t0: usize, len: usize) -> &[f32] {
    &v[t0 * width..(t0 + len) * width]
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Runs `record(rec, t0, len)` once per chunk of `chunks`, one submit each, with an output of
/// `width` floats per token per chunk; returns the outputs concatenated.
fn run_chunks(
    gpu: &Gpu,
    chunks: &[usize],
    width: usize,
    record: &mut dyn FnMut(&mut Recorder, usize, usize, View<'_>),
) -> Vec<f32> {
    let mut got = Vec::new();
    let mut t0 = 0;
    for &len in chunks {
        let (ob, off) = guarded_output(gpu, len * width);
        let mut rec = gpu.recorder();
        record(&mut rec, t0, len, out_view(&ob, off, len * width));
        rec.submit().expect("submit");
        got.extend(as_f32(&read_guarded(gpu, &ob, len * width)));
        t0 += len;
    }
    got
}

/// Checks the runs of one case: each against the CPU twin (output within `atol`/`rtol`, final
/// state within `state_tol` absolute + relative) and against the first run bit for bit.
fn check_runs(
    what: &str,
    runs: &[(Vec<usize>, Vec<f32>, Vec<f32>)],
    want: &[f32],
    want_state: &[f32],
    atol: f32,
    rtol: f32,
    state_tol: f32,
) {
    for (chunks, out, state) in runs {
        let n_calls = chunks.len();
        assert_close(
            &format!("{what} out, {n_calls} calls"),
            out,
            want,
            atol,
            rtol,
        );
        assert_close(
            &format!("{what} state, {n_calls} calls"),
            state,
            want_state,
            state_tol,
            state_tol,
        );
        assert_eq!(
            bits(out),
            bits(&runs[0].1),
            "{what}: {n_calls} calls differ from one prefill call"
        );
        assert_eq!(
            bits(state),
            bits(&runs[0].2),
            "{what}: {n_calls} calls leave another state than one prefill call"
        );
    }
}

fn max_err(got: &[f32], want: &[f32]) -> f32 {
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f32::max)
}

fn mamba_conv_case(gpu: &Gpu, d: usize, k: usize, t: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = rng.vec(t * d);
    let w = rng.vec(d * k);
    let bias = rng.vec(d);
    let state0 = rng.vec(d * (k - 1));
    let mut want_state = state0.clone();
    let mut want = vec![0f32; t * d];
    for tt in 0..t {
        cpu::causal_conv1d_step(
            &x[tt * d..(tt + 1) * d],
            &mut want_state,
            &w,
            Some(&bias),
            &mut want[tt * d..(tt + 1) * d],
        )
        .expect("cpu conv");
    }
    let (wb, bb) = (upload_f32(gpu, &w), upload_f32(gpu, &bias));
    let mut runs = Vec::new();
    for chunks in splits(t) {
        let (sb, soff) = guarded_with(gpu, &state0);
        let out = run_chunks(gpu, &chunks, d, &mut |rec, t0, len, out| {
            let xb = upload_f32(gpu, rows(&x, d, t0, len));
            let io = ConvIo {
                x: (&xb).into(),
                state: out_view(&sb, soff, d * (k - 1)),
                w: (&wb).into(),
                bias: (&bb).into(),
                out,
            };
            causal_conv1d(rec, io, d as u32, k as u32, len as u32).expect("conv");
        });
        let state = as_f32(&read_guarded(gpu, &sb, d * (k - 1)));
        runs.push((chunks, out, state));
    }
    eprintln!(
        "conv d={d} k={k} t={t}: max |gpu - cpu| {:e}",
        max_err(&runs[0].1, &want)
    );
    // Same sums in the same order; only a fused multiply-add may differ. The state is copied.
    check_runs(
        &format!("conv d={d} k={k}"),
        &runs,
        &want,
        &want_state,
        1e-6,
        1e-6,
        0.0,
    );
}

#[test]
fn mamba_conv1d_chunks_steps_and_cpu_agree() {
    let Some(gpu) = gpu() else { return };
    mamba_conv_case(&gpu, 100, 4, 37, 1);
    mamba_conv_case(&gpu, 67, 2, 9, 2);
    mamba_conv_case(&gpu, 5, 7, 3, 3);
}

fn mamba_scan_case(gpu: &Gpu, d: usize, n: usize, t: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    // A = -exp(A_log) < 0; dt = softplus(..) > 0, as in a model.
    let a: Vec<f32> = rng.vec(d * n).iter().map(|v| -(v.abs() + 0.05)).collect();
    let dt: Vec<f32> = rng
        .vec(t * d)
        .iter()
        .map(|v| 0.5 * v.abs() + 0.01)
        .collect();
    let d_skip = rng.vec(d);
    let x = rng.vec(t * d);
    let b = rng.vec(t * n);
    let c = rng.vec(t * n);
    let h0: Vec<f32> = rng.vec(d * n).iter().map(|v| 0.5 * v).collect();
    let mut want_h = h0.clone();
    let mut want = vec![0f32; t * d];
    cpu::selective_scan(&mut want_h, &a, &d_skip, &x, &dt, &b, &c, &mut want).expect("cpu scan");
    let (ab, db) = (upload_f32(gpu, &a), upload_f32(gpu, &d_skip));
    let mut runs = Vec::new();
    for chunks in splits(t) {
        let (hb, hoff) = guarded_with(gpu, &h0);
        let out = run_chunks(gpu, &chunks, d, &mut |rec, t0, len, y| {
            let xb = upload_f32(gpu, rows(&x, d, t0, len));
            let dtb = upload_f32(gpu, rows(&dt, d, t0, len));
            let bb = upload_f32(gpu, rows(&b, n, t0, len));
            let cb = upload_f32(gpu, rows(&c, n, t0, len));
            let io = ScanIo {
                h: out_view(&hb, hoff, d * n),
                a: (&ab).into(),
                d_skip: (&db).into(),
                x: (&xb).into(),
                dt: (&dtb).into(),
                b: (&bb).into(),
                c: (&cb).into(),
                y,
            };
            selective_scan(rec, io, d as u32, n as u32, len as u32).expect("scan");
        });
        let h = as_f32(&read_guarded(gpu, &hb, d * n));
        runs.push((chunks, out, h));
    }
    eprintln!(
        "scan d={d} n={n} t={t}: max |gpu - cpu| y {:e}, h {:e}",
        max_err(&runs[0].1, &want),
        max_err(&runs[0].2, &want_h)
    );
    // The sums run in the CPU twin's order; exp differs by ulps (the shader's exp against
    // kiln-cpu's polynomial), which the decaying state does not amplify.
    check_runs(
        &format!("scan d={d} n={n}"),
        &runs,
        &want,
        &want_h,
        1e-5,
        1e-5,
        1e-5,
    );
}

#[test]
fn mamba_selective_scan_chunks_steps_and_cpu_agree() {
    let Some(gpu) = gpu() else { return };
    mamba_scan_case(&gpu, 100, 16, 37, 11);
    mamba_scan_case(&gpu, 37, 24, 19, 12);
    mamba_scan_case(&gpu, 5, 64, 10, 13);
    mamba_scan_case(&gpu, 9, 1, 4, 14);
}

#[test]
fn recurrent_ops_refuse_bad_shapes() {
    let Some(gpu) = gpu() else { return };
    let buf = upload_f32(&gpu, &[0.0; 4096]);
    let v: View<'_> = (&buf).into();
    let mut rec = gpu.recorder();
    let io = ScanIo {
        h: v,
        a: v,
        d_skip: v,
        x: v,
        dt: v,
        b: v,
        c: v,
        y: v,
    };
    let shape_err = |r: kiln::Result<()>| matches!(r, Err(kiln::Error::Shape { .. }));
    assert!(shape_err(selective_scan(&mut rec, io, 4, 65, 1)));
    assert!(shape_err(selective_scan(&mut rec, io, 4, 16, 0)));
    let small = View::new(&buf, 0, 60);
    assert!(shape_err(selective_scan(
        &mut rec,
        ScanIo { y: small, ..io },
        16,
        16,
        1
    )));
    let conv = ConvIo {
        x: v,
        state: v,
        w: v,
        bias: v,
        out: v,
    };
    assert!(shape_err(causal_conv1d(&mut rec, conv, 8, 1, 1)));
    assert!(shape_err(causal_conv1d(
        &mut rec,
        ConvIo {
            state: small,
            ..conv
        },
        8,
        4,
        1
    )));
    let w6 = Wkv6Io {
        state: v,
        r: v,
        k: v,
        v,
        w: v,
        u: v,
        y: v,
    };
    let s = WkvShape {
        n_head: 1,
        head_size: 65,
        n_tok: 1,
    };
    assert!(shape_err(wkv6(&mut rec, w6, s)));
    assert!(shape_err(wkv6(
        &mut rec,
        Wkv6Io { u: small, ..w6 },
        WkvShape {
            n_head: 1,
            head_size: 32,
            n_tok: 1
        }
    )));
    assert!(shape_err(token_shift(&mut rec, v, v, v, v, 8, 0, 1)));
    assert!(shape_err(token_shift(&mut rec, v, small, v, v, 16, 1, 1)));
    let lin = |rows: u32, k: u32| Linear {
        w: v,
        wtype: WType::F32,
        rows,
        k,
    };
    let cm = ChannelMix {
        mu: v,
        wk: lin(24, 16),
        wv: lin(16, 24),
        wr: Some(lin(16, 16)),
    };
    let scratch = ChannelMixScratch {
        shifted: v,
        k: v,
        r: None,
        q: None,
    };
    // RWKV-6 without its receptance scratch; a wv of the wrong shape.
    assert!(shape_err(channel_mix(
        &mut rec,
        Split::Thread,
        &cm,
        &scratch,
        v,
        v,
        v,
        2
    )));
    let bad_wv = ChannelMix {
        wv: lin(16, 20),
        wr: None,
        ..cm
    };
    assert!(shape_err(channel_mix(
        &mut rec,
        Split::Thread,
        &bad_wv,
        &scratch,
        v,
        v,
        v,
        2
    )));
    // Q8_0 weights without the quantized-activation scratch.
    let q8 = |rows: u32, k: u32| Linear {
        wtype: WType::Q8_0,
        ..lin(rows, k)
    };
    let cm_q8 = ChannelMix {
        mu: v,
        wk: q8(64, 32),
        wv: q8(32, 64),
        wr: None,
    };
    assert!(shape_err(channel_mix(
        &mut rec,
        Split::Thread,
        &cm_q8,
        &scratch,
        v,
        v,
        v,
        2
    )));
    assert!(rec.is_empty(), "a refused op recorded work");
}

/// Inputs of one WKV case, `(t, h·n)` per token.
struct WkvInputs {
    h: usize,
    n: usize,
    r: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    w: Vec<f32>,
    state0: Vec<f32>,
}

impl WkvInputs {
    fn new(rng: &mut Rng, h: usize, n: usize, t: usize) -> Self {
        let c = h * n;
        WkvInputs {
            h,
            n,
            r: rng.vec(t * c),
            k: rng.vec(t * c),
            v: rng.vec(t * c),
            // exp(-exp(w_raw)) with w_raw in [-1, 1): decays in (0.07, 0.69).
            w: rng.vec(t * c).iter().map(|x| (-(x.exp())).exp()).collect(),
            state0: rng.vec(h * n * n).iter().map(|x| 0.5 * x).collect(),
        }
    }

    fn c(&self) -> usize {
        self.h * self.n
    }

    fn shape(&self, len: usize) -> WkvShape {
        WkvShape {
            n_head: self.h as u32,
            head_size: self.n as u32,
            n_tok: len as u32,
        }
    }
}

fn wkv6_case(gpu: &Gpu, h: usize, n: usize, t: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = WkvInputs::new(&mut rng, h, n, t);
    let c = x.c();
    let u = rng.vec(c);
    let mut want_state = x.state0.clone();
    let mut want = vec![0f32; t * c];
    for tt in 0..t {
        let row = |v: &[f32]| rows(v, c, tt, 1).to_vec();
        cpu::wkv6_step(
            &mut want_state,
            &row(&x.r),
            &row(&x.k),
            &row(&x.v),
            &row(&x.w),
            &u,
            n,
            &mut want[tt * c..(tt + 1) * c],
        )
        .expect("cpu wkv6");
    }
    let ub = upload_f32(gpu, &u);
    let mut runs = Vec::new();
    for chunks in splits(t) {
        let (sb, soff) = guarded_with(gpu, &x.state0);
        let out = run_chunks(gpu, &chunks, c, &mut |rec, t0, len, y| {
            let up = |v: &[f32]| upload_f32(gpu, rows(v, c, t0, len));
            let (rb, kb, vb, wb) = (up(&x.r), up(&x.k), up(&x.v), up(&x.w));
            let io = Wkv6Io {
                state: out_view(&sb, soff, h * n * n),
                r: (&rb).into(),
                k: (&kb).into(),
                v: (&vb).into(),
                w: (&wb).into(),
                u: (&ub).into(),
                y,
            };
            wkv6(rec, io, x.shape(len)).expect("wkv6");
        });
        let state = as_f32(&read_guarded(gpu, &sb, h * n * n));
        runs.push((chunks, out, state));
    }
    eprintln!(
        "wkv6 h={h} n={n} t={t}: max |gpu - cpu| y {:e}, state {:e}",
        max_err(&runs[0].1, &want),
        max_err(&runs[0].2, &want_state)
    );
    // Same sums in the same order as the CPU twin: only fused multiply-adds differ.
    check_runs(
        &format!("wkv6 h={h} n={n}"),
        &runs,
        &want,
        &want_state,
        1e-5,
        1e-5,
        1e-5,
    );
}

#[test]
fn rwkv6_wkv_chunks_steps_and_cpu_agree() {
    let Some(gpu) = gpu() else { return };
    wkv6_case(&gpu, 3, 64, 37, 21);
    wkv6_case(&gpu, 5, 24, 37, 22);
    wkv6_case(&gpu, 1, 7, 3, 23);
}

fn wkv7_case(gpu: &Gpu, h: usize, n: usize, t: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = WkvInputs::new(&mut rng, h, n, t);
    let c = x.c();
    // As in RWKV-7: a = -κ̂ and b = κ̂·iclr with κ̂ a unit vector per head and iclr in (0, 1),
    // so the transition diag(w) + a·bᵀ does not blow the state up.
    let mut a = vec![0f32; t * c];
    let mut b = vec![0f32; t * c];
    for tt in 0..t {
        for hh in 0..h {
            let o = tt * c + hh * n;
            let kk = rng.vec(n);
            let norm = kk.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
            for j in 0..n {
                let iclr = 0.5 * rng.f32() + 0.5;
                a[o + j] = -kk[j] / norm;
                b[o + j] = kk[j] / norm * iclr;
            }
        }
    }
    let mut want_state = x.state0.clone();
    let mut want = vec![0f32; t * c];
    for tt in 0..t {
        let row = |v: &[f32]| rows(v, c, tt, 1).to_vec();
        let (r, w, k, v, aa, bb) = (row(&x.r), row(&x.w), row(&x.k), row(&x.v), row(&a), row(&b));
        let step = Wkv7 {
            r: &r,
            w: &w,
            k: &k,
            v: &v,
            a: &aa,
            b: &bb,
        };
        cpu::wkv7_step(&mut want_state, step, n, &mut want[tt * c..(tt + 1) * c])
            .expect("cpu wkv7");
    }
    let mut runs = Vec::new();
    for chunks in splits(t) {
        let (sb, soff) = guarded_with(gpu, &x.state0);
        let out = run_chunks(gpu, &chunks, c, &mut |rec, t0, len, y| {
            let up = |v: &[f32]| upload_f32(gpu, rows(v, c, t0, len));
            let (rb, wb, kb, vb) = (up(&x.r), up(&x.w), up(&x.k), up(&x.v));
            let (ab, bb) = (up(&a), up(&b));
            let io = Wkv7Io {
                state: out_view(&sb, soff, h * n * n),
                r: (&rb).into(),
                w: (&wb).into(),
                k: (&kb).into(),
                v: (&vb).into(),
                a: (&ab).into(),
                b: (&bb).into(),
                y,
            };
            wkv7(rec, io, x.shape(len)).expect("wkv7");
        });
        let state = as_f32(&read_guarded(gpu, &sb, h * n * n));
        runs.push((chunks, out, state));
    }
    eprintln!(
        "wkv7 h={h} n={n} t={t}: max |gpu - cpu| y {:e}, state {:e}",
        max_err(&runs[0].1, &want),
        max_err(&runs[0].2, &want_state)
    );
    // Same sums in the same order as the CPU twin: only fused multiply-adds differ.
    check_runs(
        &format!("wkv7 h={h} n={n}"),
        &runs,
        &want,
        &want_state,
        1e-5,
        1e-5,
        1e-5,
    );
}

#[test]
fn rwkv7_wkv_chunks_steps_and_cpu_agree() {
    let Some(gpu) = gpu() else { return };
    wkv7_case(&gpu, 3, 64, 37, 31);
    wkv7_case(&gpu, 5, 24, 37, 32);
    wkv7_case(&gpu, 1, 7, 3, 33);
}

#[test]
fn token_shift_chunks_steps_and_cpu_agree() {
    let Some(gpu) = gpu() else { return };
    let (d, t, n_mix) = (131, 37, 3);
    let mut rng = Rng::new(41);
    let x = rng.vec(t * d);
    let mu = rng.vec(n_mix * d);
    let prev0 = rng.vec(d);
    // want[m] (t, d)
    let mut want = vec![vec![0f32; t * d]; n_mix];
    for m in 0..n_mix {
        for tt in 0..t {
            let prev = if tt == 0 {
                &prev0[..]
            } else {
                rows(&x, d, tt - 1, 1)
            };
            cpu::token_shift(
                rows(&x, d, tt, 1),
                prev,
                &mu[m * d..(m + 1) * d],
                &mut want[m][tt * d..(tt + 1) * d],
            )
            .expect("cpu shift");
        }
    }
    let mub = upload_f32(&gpu, &mu);
    let mut runs: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
    for chunks in splits(t) {
        let (pb, poff) = guarded_with(&gpu, &prev0);
        let mut got = vec![Vec::new(); n_mix];
        let mut t0 = 0;
        for &len in &chunks {
            let xb = upload_f32(&gpu, rows(&x, d, t0, len));
            let mut rec = gpu.recorder();
            let stride = mix_stride_bytes(&rec, len as u32, d as u32) as usize / 4;
            assert!(stride >= len * d);
            let words = stride * (n_mix - 1) + len * d;
            let (ob, ooff) = guarded_output(&gpu, words);
            token_shift(
                &mut rec,
                (&xb).into(),
                out_view(&pb, poff, d),
                (&mub).into(),
                out_view(&ob, ooff, words),
                d as u32,
                len as u32,
                n_mix as u32,
            )
            .expect("shift");
            rec.submit().expect("submit");
            let out = as_f32(&read_guarded(&gpu, &ob, words));
            for (m, g) in got.iter_mut().enumerate() {
                g.extend_from_slice(&out[m * stride..m * stride + len * d]);
            }
            t0 += len;
        }
        let prev = as_f32(&read_guarded(&gpu, &pb, d));
        assert_eq!(bits(&prev), bits(rows(&x, d, t - 1, 1)), "shift state");
        for m in 0..n_mix {
            // One lerp, written exactly as the CPU twin's: only a fused multiply-add may differ.
            assert_close(&format!("shift mix {m}"), &got[m], &want[m], 1e-6, 1e-6);
        }
        runs.push((got.concat(), prev));
    }
    for r in &runs[1..] {
        assert_eq!(bits(&r.0), bits(&runs[0].0), "chunked shift differs");
    }
}

fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
}

/// `rows x k` random weights as GGUF F32 or Q8_0 blocks of magnitude about `scale`.
fn random_weights(rng: &mut Rng, q: QType, n: usize, scale: f32) -> Vec<u8> {
    match q {
        QType::F32 => rng
            .vec(n)
            .iter()
            .flat_map(|v| (v * scale).to_le_bytes())
            .collect(),
        QType::Q8_0 => {
            let mut out = vec![0u8; n / 32 * 34];
            for b in out.chunks_exact_mut(34) {
                put_f16(b, 0, scale / 127.0 * (0.5 + 0.5 * rng.f32().abs()));
                for q in &mut b[2..] {
                    *q = rng.next_u64() as u8;
                }
            }
            out
        }
        _ => unreachable!("the channel mix test uses F32 and Q8_0"),
    }
}

fn channel_mix_case(gpu: &Gpu, split: Split, q: QType, v6: bool, seed: u64) {
    let (d, f, t) = (96, 160, 37);
    let mut rng = Rng::new(seed);
    let wk_b = random_weights(&mut rng, q, f * d, 0.2);
    let wv_b = random_weights(&mut rng, q, d * f, 0.2);
    let wr_b = random_weights(&mut rng, q, d * d, 0.2);
    let mu = rng.vec(2 * d);
    let x = rng.vec(t * d);
    let prev0 = rng.vec(d);
    let pool = ThreadPool::new(2);
    let m = cpu::ChannelMix {
        mu_k: &mu[..d],
        mu_r: v6.then_some(&mu[d..]),
        wk: QMatrix::new(q, f, d, &wk_b).expect("wk"),
        wv: QMatrix::new(q, d, f, &wv_b).expect("wv"),
        wr: v6.then(|| QMatrix::new(q, d, d, &wr_b).expect("wr")),
    };
    let mut scratch = cpu::ChannelMixScratch::default();
    let mut want_prev = prev0.clone();
    let mut want = vec![0f32; t * d];
    for tt in 0..t {
        cpu::channel_mix(
            rows(&x, d, tt, 1),
            &mut want_prev,
            &m,
            &mut scratch,
            &pool,
            &mut want[tt * d..(tt + 1) * d],
        )
        .expect("cpu channel mix");
    }
    let wtype = if q == QType::F32 {
        WType::F32
    } else {
        WType::Q8_0
    };
    let (wkb, wvb, wrb) = (
        gpu.upload("wk", &wk_b).unwrap(),
        gpu.upload("wv", &wv_b).unwrap(),
        gpu.upload("wr", &wr_b).unwrap(),
    );
    let mub = upload_f32(gpu, &mu);
    fn lin(w: &wgpu::Buffer, wtype: WType, rows: usize, k: usize) -> Linear<'_> {
        Linear {
            w: w.into(),
            wtype,
            rows: rows as u32,
            k: k as u32,
        }
    }
    let gm = ChannelMix {
        mu: (&mub).into(),
        wk: lin(&wkb, wtype, f, d),
        wv: lin(&wvb, wtype, d, f),
        wr: v6.then(|| lin(&wrb, wtype, d, d)),
    };
    let mut runs = Vec::new();
    for chunks in splits(t) {
        let (pb, poff) = guarded_with(gpu, &prev0);
        let out = run_chunks(gpu, &chunks, d, &mut |rec, t0, len, out| {
            let xb = upload_f32(gpu, rows(&x, d, t0, len));
            let stride = mix_stride_bytes(rec, len as u32, d as u32);
            let shifted = gpu.alloc_storage("shifted", 2 * stride).unwrap();
            let kb = gpu.alloc_storage("k", (len * f * 4) as u64).unwrap();
            let rb = gpu.alloc_storage("r", (len * d * 4) as u64).unwrap();
            let (bq, bd, bs) = QAct::sizes(len as u32, f as u32);
            let (xq, xd, xs) = (
                gpu.alloc_storage("xq", bq).unwrap(),
                gpu.alloc_storage("xd", bd).unwrap(),
                gpu.alloc_storage("xs", bs).unwrap(),
            );
            let s = ChannelMixScratch {
                shifted: (&shifted).into(),
                k: (&kb).into(),
                r: v6.then(|| (&rb).into()),
                q: ActQuant::for_weights(wtype).map(|_| QScratch {
                    xq: (&xq).into(),
                    xd: (&xd).into(),
                    xs: (&xs).into(),
                }),
            };
            channel_mix(
                rec,
                split,
                &gm,
                &s,
                (&xb).into(),
                out_view(&pb, poff, d),
                out,
                len as u32,
            )
            .expect("channel mix");
        });
        let prev = as_f32(&read_guarded(gpu, &pb, d));
        runs.push((chunks, out, prev));
    }
    let err = max_err(&runs[0].1, &want);
    eprintln!("channel mix {split:?} {q:?} v6={v6}: max |gpu - cpu| {err:e}");
    let (atol, rtol) = if q == QType::F32 {
        // f32 activations and weights: the GEMVs sum 96 or 160 products in another order.
        (2e-5, 2e-5)
    } else {
        // Q8_0: both sides quantize the activations by llama.cpp's rules and the integer block
        // dots are exact, but the shader's division may round a quant the other way at a .5
        // boundary (see `quantize` in docs/kernels.md); one flipped quant of the squared key
        // (step max|k|/127, times a weight of at most 0.2) moves an output by up to ~3e-3.
        (5e-3, 1e-3)
    };
    for (chunks, out, prev) in &runs {
        let n_calls = chunks.len();
        let what = format!("channel mix {split:?} {q:?} v6={v6}, {n_calls} calls");
        assert_close(&what, out, &want, atol, rtol);
        assert_eq!(bits(prev), bits(&want_prev), "{what}: shift state");
    }
}

#[test]
fn rwkv_channel_mix_chunks_steps_and_cpu_agree() {
    let Some(gpu) = gpu() else { return };
    // Every GEMV split the adapter has: the channel mix chains them with its own kernels.
    let mut gemv_splits = vec![Split::Thread, Split::Group(Combine::SharedMemory)];
    if gpu.capabilities().subgroup {
        gemv_splits.push(Split::Group(Combine::Subgroup));
    } else {
        eprintln!("adapter has no subgroups: the subgroup GEMVs are not tested here");
    }
    for split in gemv_splits {
        for (i, q) in [QType::F32, QType::Q8_0].into_iter().enumerate() {
            for v6 in [true, false] {
                channel_mix_case(&gpu, split, q, v6, 50 + i as u64 * 2 + u64::from(v6));
            }
        }
    }
}

/// Steady-state decode: with the state in GPU buffers, a step of Mamba (conv + scan) and of
/// RWKV-7 (token shift + WKV) is one submit that creates no buffer or pipeline, reads nothing
/// back and never waits; the states read once at the end equal the CPU twins' after as many
/// steps.
#[test]
fn recurrent_decode_steps_keep_state_on_the_gpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(61);
    let (d, k, n) = (100, 4, 16);
    let (h, hn) = (3, 64);
    let c = h * hn;
    let steps = 6;
    // One token's inputs, fed at every step (the model's projections would produce them).
    let conv_w = rng.vec(d * k);
    let conv_b = rng.vec(d);
    let xm = rng.vec(d);
    let a: Vec<f32> = rng.vec(d * n).iter().map(|v| -(v.abs() + 0.05)).collect();
    let dt: Vec<f32> = rng.vec(d).iter().map(|v| 0.5 * v.abs() + 0.01).collect();
    let (d_skip, bm, cm) = (rng.vec(d), rng.vec(n), rng.vec(n));
    let (kk, v) = (rng.vec(c), rng.vec(c));
    let w: Vec<f32> = rng.vec(c).iter().map(|x| (-(x.exp())).exp()).collect();
    let zeros = vec![0f32; c];
    let xr = rng.vec(c);
    let mu = rng.vec(c);

    let up = |v: &[f32]| upload_f32(&gpu, v);
    let (cw, cb, xb, ab, dtb, db, bb, cmb) = (
        up(&conv_w),
        up(&conv_b),
        up(&xm),
        up(&a),
        up(&dt),
        up(&d_skip),
        up(&bm),
        up(&cm),
    );
    let (kb, vb, wb, zb, xrb, mub) = (up(&kk), up(&v), up(&w), up(&zeros), up(&xr), up(&mu));
    let (conv_state, conv_off) = guarded_output(&gpu, d * (k - 1));
    let (h_state, h_off) = guarded_output(&gpu, d * n);
    let (wkv_state, wkv_off) = guarded_output(&gpu, h * hn * hn);
    let (prev, prev_off) = guarded_output(&gpu, c);
    let conv_out = gpu.alloc_storage("conv out", (d * 4) as u64).unwrap();
    let y = gpu.alloc_storage("y", (d * 4) as u64).unwrap();
    let shifted = gpu.alloc_storage("shifted", (c * 4) as u64).unwrap();
    let wkv_y = gpu.alloc_storage("wkv y", (c * 4) as u64).unwrap();

    let step = || {
        let mut rec = gpu.recorder();
        let conv = ConvIo {
            x: (&xb).into(),
            state: out_view(&conv_state, conv_off, d * (k - 1)),
            w: (&cw).into(),
            bias: (&cb).into(),
            out: (&conv_out).into(),
        };
        causal_conv1d(&mut rec, conv, d as u32, k as u32, 1).unwrap();
        let scan = ScanIo {
            h: out_view(&h_state, h_off, d * n),
            a: (&ab).into(),
            d_skip: (&db).into(),
            x: (&conv_out).into(),
            dt: (&dtb).into(),
            b: (&bb).into(),
            c: (&cmb).into(),
            y: (&y).into(),
        };
        selective_scan(&mut rec, scan, d as u32, n as u32, 1).unwrap();
        let pv = out_view(&prev, prev_off, c);
        token_shift(
            &mut rec,
            (&xrb).into(),
            pv,
            (&mub).into(),
            (&shifted).into(),
            c as u32,
            1,
            1,
        )
        .unwrap();
        // a = b = 0: a pure decay step; r comes out of the token shift.
        let io = Wkv7Io {
            state: out_view(&wkv_state, wkv_off, h * hn * hn),
            r: (&shifted).into(),
            w: (&wb).into(),
            k: (&kb).into(),
            v: (&vb).into(),
            a: (&zb).into(),
            b: (&zb).into(),
            y: (&wkv_y).into(),
        };
        let shape = WkvShape {
            n_head: h as u32,
            head_size: hn as u32,
            n_tok: 1,
        };
        wkv7(&mut rec, io, shape).unwrap();
        rec.submit().unwrap();
    };
    step();
    for _ in 1..steps {
        let before = gpu.counters();
        step();
        let delta = gpu.counters() - before;
        assert_eq!(delta.submits, 1, "{delta:?}");
        assert_eq!(delta.dispatches, 4, "{delta:?}");
        assert_eq!(delta.buffers_created, 0, "{delta:?}");
        assert_eq!(delta.pipelines_created, 0, "{delta:?}");
        assert_eq!(delta.bytes_read_back, 0, "{delta:?}");
        assert_eq!(delta.waits, 0, "{delta:?}");
    }

    let (mut cs, mut hs, mut ws) = (
        vec![0f32; d * (k - 1)],
        vec![0f32; d * n],
        vec![0f32; h * hn * hn],
    );
    let (mut co, mut yo, mut sh, mut wy) =
        (vec![0f32; d], vec![0f32; d], vec![0f32; c], vec![0f32; c]);
    let mut pv = vec![0f32; c];
    for _ in 0..steps {
        cpu::causal_conv1d_step(&xm, &mut cs, &conv_w, Some(&conv_b), &mut co).unwrap();
        cpu::selective_scan(&mut hs, &a, &d_skip, &co, &dt, &bm, &cm, &mut yo).unwrap();
        cpu::token_shift(&xr, &pv, &mu, &mut sh).unwrap();
        pv.copy_from_slice(&xr);
        let x7 = Wkv7 {
            r: &sh,
            w: &w,
            k: &kk,
            v: &v,
            a: &zeros,
            b: &zeros,
        };
        cpu::wkv7_step(&mut ws, x7, hn, &mut wy).unwrap();
    }
    let read = |b: &wgpu::Buffer, words: usize| as_f32(&read_guarded(&gpu, b, words));
    assert_close("conv state", &read(&conv_state, d * (k - 1)), &cs, 0.0, 0.0);
    assert_close("scan state", &read(&h_state, d * n), &hs, 1e-5, 1e-5);
    assert_close("shift state", &read(&prev, c), &pv, 0.0, 0.0);
    assert_close(
        "wkv7 state",
        &read(&wkv_state, h * hn * hn),
        &ws,
        1e-5,
        1e-5,
    );
}
