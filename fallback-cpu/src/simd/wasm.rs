//! WebAssembly SIMD128 versions of the primitives (compiled only with `+simd128`, so no run-time
//! check is needed). f16 conversion goes through `half`.

use std::arch::wasm32::*;

use half::f16;
use half::slice::HalfFloatSliceExt;

#[inline]
fn hsum(v: v128) -> f32 {
    f32x4_extract_lane::<0>(v)
        + f32x4_extract_lane::<1>(v)
        + f32x4_extract_lane::<2>(v)
        + f32x4_extract_lane::<3>(v)
}

#[inline]
fn load(s: &[f32], i: usize) -> v128 {
    debug_assert!(i + 4 <= s.len());
    // SAFETY: callers keep `i + 4 <= s.len()`; v128_load allows unaligned addresses.
    unsafe { v128_load(s.as_ptr().add(i).cast()) }
}

#[inline]
fn store(s: &mut [f32], i: usize, v: v128) {
    debug_assert!(i + 4 <= s.len());
    // SAFETY: callers keep `i + 4 <= s.len()`.
    unsafe { v128_store(s.as_mut_ptr().add(i).cast(), v) }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [f32x4_splat(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            *acc = f32x4_add(*acc, f32x4_mul(load(a, i + 4 * k), load(b, i + 4 * k)));
        }
        i += 16;
    }
    while i + 4 <= n {
        acc[0] = f32x4_add(acc[0], f32x4_mul(load(a, i), load(b, i)));
        i += 4;
    }
    let mut s = hsum(f32x4_add(
        f32x4_add(acc[0], acc[1]),
        f32x4_add(acc[2], acc[3]),
    ));
    for j in i..n {
        s += a[j] * b[j];
    }
    s
}

pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let va = f32x4_splat(alpha);
    let mut i = 0;
    while i + 4 <= n {
        let v = f32x4_add(load(y, i), f32x4_mul(va, load(x, i)));
        store(y, i, v);
        i += 4;
    }
    for j in i..n {
        y[j] += alpha * x[j];
    }
}

pub fn scale(alpha: f32, x: &mut [f32]) {
    let va = f32x4_splat(alpha);
    let mut i = 0;
    while i + 4 <= x.len() {
        let v = f32x4_mul(va, load(x, i));
        store(x, i, v);
        i += 4;
    }
    for v in &mut x[i..] {
        *v *= alpha;
    }
}

pub fn sum(x: &[f32]) -> f32 {
    let mut a = f32x4_splat(0.0);
    let mut i = 0;
    while i + 4 <= x.len() {
        a = f32x4_add(a, load(x, i));
        i += 4;
    }
    let mut s = hsum(a);
    for v in &x[i..] {
        s += v;
    }
    s
}

pub fn max(x: &[f32]) -> f32 {
    let mut m = f32x4_splat(f32::NEG_INFINITY);
    let mut i = 0;
    while i + 4 <= x.len() {
        let v = load(x, i);
        // pmax(a, b) = a < b ? b : a, so a NaN in `v` keeps `m`.
        m = f32x4_pmax(m, v);
        i += 4;
    }
    let mut r = f32x4_extract_lane::<0>(m)
        .max(f32x4_extract_lane::<1>(m))
        .max(f32x4_extract_lane::<2>(m))
        .max(f32x4_extract_lane::<3>(m));
    for &v in &x[i..] {
        r = r.max(v);
    }
    r
}

pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    src[..n].convert_to_f32_slice(&mut dst[..n]);
}

pub fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
    let mut buf = [0f32; 64];
    let mut s = 0.0;
    for (ca, cb) in a.chunks(64).zip(b.chunks(64)) {
        let t = &mut buf[..cb.len()];
        cb.convert_to_f32_slice(t);
        s += dot(ca, t);
    }
    s
}

pub fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    let mut buf = [0f32; 64];
    for (cx, cy) in x.chunks(64).zip(y.chunks_mut(64)) {
        let t = &mut buf[..cx.len()];
        cx.convert_to_f32_slice(t);
        axpy(alpha, t, cy);
    }
}
