//! The W8A8 path with per-row scales (`quantize_rows`, `gemv_w8a8`) on a real adapter against
//! exact integer references written here, for every work split and both int8 dot products
//! (`dot4I8Packed` where the adapter has it, the unpacking fallback everywhere), with guard
//! words around every output and sizes that are not multiples of any tile.

mod common;

use common::{
    Rng, as_f32, assert_close, combines, gpu, guarded_output, read_guarded, splits, upload_f32,
};
use kiln::gpu::View;
use kiln::ops::gemv::{IntDot, Split};
use kiln::ops::int8::{I8Rows, MAX_K, W8A8Shape, gemv_w8a8, gemv_w8a8_key, quantize_rows};
use kiln::ops::reduce::Combine;
use kiln::{Error, Gpu};

fn upload_i8(gpu: &Gpu, data: &[i8]) -> wgpu::Buffer {
    gpu.upload("test input", bytemuck::cast_slice(data))
        .expect("upload")
}

/// Both int8 dot products where the adapter has `dot4I8Packed`; elsewhere the unpacking one,
/// after checking that the packed one is refused.
fn int_dots(gpu: &Gpu) -> Vec<IntDot> {
    if gpu.capabilities().dot4 {
        vec![IntDot::Unpacked, IntDot::Packed]
    } else {
        let err = gpu
            .kernel(&gemv_w8a8_key(Split::Thread, IntDot::Packed))
            .expect_err("dot4I8Packed on an adapter without it");
        assert!(matches!(err, Error::MissingFeature { .. }), "{err}");
        eprintln!("no dot4I8Packed here: only the unpacked int8 dot is tested");
        vec![IntDot::Unpacked]
    }
}

/// Per-row symmetric quantization as the kernel documents it.
fn reference_quantize(x: &[f32], k: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = vec![0i8; x.len()];
    let mut d = Vec::new();
    for (r, row) in x.chunks(k).enumerate() {
        let amax = row.iter().fold(0f32, |a, v| a.max(v.abs()));
        let dr = amax / 127.0;
        let id = if dr > 0.0 { 1.0 / dr } else { 0.0 };
        for (i, &v) in row.iter().enumerate() {
            q[r * k + i] = (v * id).round_ties_even() as i8;
        }
        d.push(dr);
    }
    (q, d)
}

#[test]
fn quantize_rows_matches_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(41);
    for (m, k) in [(1usize, 4usize), (3, 1000), (2, 4100)] {
        let mut x: Vec<f32> = rng.vec(m * k).into_iter().map(|v| 7.0 * v).collect();
        // A row with one large value, and an all-zero row where there are three rows.
        x[3] = -1e4;
        if m == 3 {
            x[2 * k..].fill(0.0);
        }
        let (wq, wd) = reference_quantize(&x, k);
        let xb = upload_f32(&gpu, &x);
        for combine in combines(&gpu) {
            let (q, oq) = guarded_output(&gpu, m * k / 4);
            let (d, od) = guarded_output(&gpu, m);
            let mut rec = gpu.recorder();
            let out = I8Rows {
                q: View::new(&q, oq, (m * k) as u64),
                d: View::new(&d, od, m as u64 * 4),
            };
            quantize_rows(&mut rec, combine, (&xb).into(), out, m as u32, k as u32).unwrap();
            rec.submit().unwrap();
            let gq = read_guarded(&gpu, &q, m * k / 4);
            let gq: &[i8] = bytemuck::cast_slice(&gq);
            let gd = as_f32(&read_guarded(&gpu, &d, m));
            assert_close(&format!("d {combine:?} {m}x{k}"), &gd, &wd, 0.0, 1e-6);
            // Exact, except that the shader's division may be an ulp off and move a value on
            // a .5 boundary by one step: at most one step, and rarely.
            let mut differ = 0;
            for i in 0..m * k {
                let diff = (i32::from(gq[i]) - i32::from(wq[i])).abs();
                assert!(
                    diff <= 1,
                    "q[{i}] {combine:?}: got {}, want {} (x = {})",
                    gq[i],
                    wq[i],
                    x[i]
                );
                differ += usize::from(diff != 0);
            }
            assert!(differ <= m * k / 500, "{differ} quants differ");
        }
    }
}

/// Runs one gemv_w8a8 into a guarded (m, y_stride) output that starts as `init`.
#[allow(
    clippy::too_many_arguments,
    reason = "the weights, activations and shape of one case"
)]
fn run_gemv(
    gpu: &Gpu,
    split: Split,
    dot: IntDot,
    wq: &wgpu::Buffer,
    wd: &wgpu::Buffer,
    xq: &wgpu::Buffer,
    xd: &wgpu::Buffer,
    init: &[f32],
    s: W8A8Shape,
) -> Vec<f32> {
    let (y, off) = guarded_output(gpu, init.len());
    gpu.write(&y, off, bytemuck::cast_slice(init));
    let mut rec = gpu.recorder();
    gemv_w8a8(
        &mut rec,
        split,
        dot,
        I8Rows {
            q: wq.into(),
            d: wd.into(),
        },
        I8Rows {
            q: xq.into(),
            d: xd.into(),
        },
        View::new(&y, off, init.len() as u64 * 4),
        s,
    )
    .unwrap();
    rec.submit().unwrap();
    as_f32(&read_guarded(gpu, &y, init.len()))
}

#[test]
fn gemv_w8a8_matches_exact_reference_for_every_split_and_dot() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(42);
    for (rows, k, m) in [(1u32, 4u32, 1u32), (37, 1000, 1), (70, 4100, 3)] {
        let (ku, ru, mu) = (k as usize, rows as usize, m as usize);
        // Weights over the whole int8 range, -128 included; activations in -127..=127.
        let w: Vec<i8> = (0..ru * ku)
            .map(|_| (rng.next_u64() >> 56) as u8 as i8)
            .collect();
        let x: Vec<i8> = (0..mu * ku)
            .map(|_| (((rng.next_u64() >> 32) % 255) as i32 - 127) as i8)
            .collect();
        let ws: Vec<f32> = rng.vec(ru).iter().map(|v| 0.01 + 0.02 * v.abs()).collect();
        let xd: Vec<f32> = rng.vec(mu).iter().map(|v| 0.05 * (1.0 + v.abs())).collect();
        // Columns y_offset..y_offset + rows of rows y_stride apart; the rest must stay `init`.
        let (y_stride, y_offset) = (rows + 5, 3u32);
        let init = rng.vec(mu * y_stride as usize);
        let mut want = init.clone();
        let mut tol = vec![0f32; init.len()];
        for j in 0..mu {
            for r in 0..ru {
                let (mut acc, mut mag) = (0i64, 0i64);
                for i in 0..ku {
                    let t = i64::from(w[r * ku + i]) * i64::from(x[j * ku + i]);
                    acc += t;
                    mag += t.abs();
                }
                let scale = f64::from(ws[r]) * f64::from(xd[j]);
                let o = j * y_stride as usize + y_offset as usize + r;
                want[o] = (scale * acc as f64) as f32;
                // The integer sum is exact (f32 partials of a group split may round at 2^-24);
                // the two scale multiplications round twice.
                tol[o] = (scale * mag as f64 * 1e-6) as f32 + 4.0 * f32::EPSILON * want[o].abs();
            }
        }
        let (wqb, wdb) = (upload_i8(&gpu, &w), upload_f32(&gpu, &ws));
        let (xqb, xdb) = (upload_i8(&gpu, &x), upload_f32(&gpu, &xd));
        let s = W8A8Shape {
            k,
            rows,
            m,
            y_stride,
            y_offset,
        };
        for split in splits(&gpu) {
            let mut by_dot = Vec::new();
            for dot in int_dots(&gpu) {
                let got = run_gemv(&gpu, split, dot, &wqb, &wdb, &xqb, &xdb, &init, s);
                for (i, (&g, &e)) in got.iter().zip(&want).enumerate() {
                    assert!(g.is_finite(), "{split:?} {dot:?} y[{i}] = {g}");
                    assert!(
                        (g - e).abs() <= tol[i],
                        "{split:?} {dot:?} {rows}x{k} m={m} y[{i}]: got {g}, want {e} \
                         (tolerance {})",
                        tol[i]
                    );
                }
                by_dot.push(got);
            }
            // The same integers, scaled the same way: the two dots agree bit for bit.
            if let [a, b] = &by_dot[..] {
                assert_eq!(a, b, "{split:?}: packed and unpacked dots differ");
            }
        }
    }
}

#[test]
fn w8a8_refuses_bad_shapes() {
    let Some(gpu) = gpu() else { return };
    let buf = upload_f32(&gpu, &[0.0; 64]);
    let rows = |q| I8Rows {
        q: View::from(q),
        d: View::from(q),
    };
    let mut rec = gpu.recorder();
    let shape = W8A8Shape {
        k: 16,
        rows: 4,
        m: 1,
        y_stride: 4,
        y_offset: 0,
    };
    for (bad, why) in [
        (W8A8Shape { k: 18, ..shape }, "k not a multiple of 4"),
        (
            W8A8Shape {
                k: MAX_K + 4,
                ..shape
            },
            "k past exact i32 sums",
        ),
        (
            W8A8Shape {
                y_offset: 1,
                ..shape
            },
            "columns past y_stride",
        ),
        (W8A8Shape { rows: 0, ..shape }, "no rows"),
    ] {
        let err = gemv_w8a8(
            &mut rec,
            Split::Thread,
            IntDot::Unpacked,
            rows(&buf),
            rows(&buf),
            (&buf).into(),
            bad,
        )
        .expect_err(why);
        assert!(
            matches!(
                err,
                Error::Shape {
                    op: "gemv_w8a8",
                    ..
                }
            ),
            "{why}: {err}"
        );
    }
    let err = gemv_w8a8(
        &mut rec,
        Split::Thread,
        IntDot::Unpacked,
        I8Rows {
            q: View::new(&buf, 0, 32),
            d: (&buf).into(),
        },
        rows(&buf),
        (&buf).into(),
        shape,
    )
    .expect_err("4 rows of 16 int8 in 32 bytes");
    assert!(err.to_string().contains("w.q"), "{err}");
    let err = quantize_rows(
        &mut rec,
        Combine::SharedMemory,
        (&buf).into(),
        rows(&buf),
        1,
        6,
    )
    .expect_err("rows of 6");
    assert!(
        matches!(
            err,
            Error::Shape {
                op: "quantize_row",
                ..
            }
        ),
        "{err}"
    );
    assert!(rec.is_empty(), "a refused op recorded a dispatch");
}
