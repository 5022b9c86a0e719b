//! WebAssembly SIMD128 versions of the primitives (compiled only with `+simd128`, so no run-time
//! check is needed). WebAssembly has no f16 conversion instruction: [`f16x8_to_f32`] converts 8
//! halves exactly with integer shifts and one multiply by 2^112.

use std::arch::wasm32::*;

use half::f16;

/// The sum of the four f32 lanes.
#[inline]
pub(crate) fn hsum(v: v128) -> f32 {
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

/// 8 f16 bit patterns (u16 lanes) as two f32x4 (elements 0-3, 4-7), exactly: the magnitude's
/// bits shifted into an f32's place read as 2^-112 times the value (subnormal halves become f32
/// subnormals, which WebAssembly keeps), so one multiply by 2^112 rescales it; exponent 31
/// (infinity, NaN) maps to 255 with the mantissa kept; the sign is copied.
#[inline]
fn f16x8_to_f32(h: v128) -> (v128, v128) {
    let one = |x: v128| {
        let mag = i32x4_shl(v128_and(x, u32x4_splat(0x7fff)), 13);
        let scaled = f32x4_mul(mag, f32x4_splat(f32::from_bits(0x7780_0000))); // 2^112
        let special = u32x4_ge(mag, u32x4_splat(0x0f80_0000)); // exponent 31
        let inf_nan = v128_or(mag, u32x4_splat(0x7f80_0000));
        let sign = i32x4_shl(v128_and(x, u32x4_splat(0x8000)), 16);
        v128_or(sign, v128_bitselect(inf_nan, scaled, special))
    };
    (
        one(u32x4_extend_low_u16x8(h)),
        one(u32x4_extend_high_u16x8(h)),
    )
}

#[inline]
fn load_f16(s: &[f16], i: usize) -> v128 {
    debug_assert!(i + 8 <= s.len());
    // SAFETY: callers keep `i + 8 <= s.len()`; v128_load allows unaligned addresses.
    unsafe { v128_load(s.as_ptr().add(i).cast()) }
}

pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i + 8 <= n {
        let (lo, hi) = f16x8_to_f32(load_f16(src, i));
        store(dst, i, lo);
        store(dst, i + 4, hi);
        i += 8;
    }
    for j in i..n {
        dst[j] = src[j].to_f32();
    }
}

pub fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [f32x4_splat(0.0); 2];
    let mut i = 0;
    while i + 8 <= n {
        let (lo, hi) = f16x8_to_f32(load_f16(b, i));
        acc[0] = f32x4_add(acc[0], f32x4_mul(load(a, i), lo));
        acc[1] = f32x4_add(acc[1], f32x4_mul(load(a, i + 4), hi));
        i += 8;
    }
    let mut s = hsum(f32x4_add(acc[0], acc[1]));
    for j in i..n {
        s += a[j] * b[j].to_f32();
    }
    s
}

pub fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let va = f32x4_splat(alpha);
    let mut i = 0;
    while i + 8 <= n {
        let (lo, hi) = f16x8_to_f32(load_f16(x, i));
        store(y, i, f32x4_add(load(y, i), f32x4_mul(va, lo)));
        store(y, i + 4, f32x4_add(load(y, i + 4), f32x4_mul(va, hi)));
        i += 8;
    }
    for j in i..n {
        y[j] += alpha * x[j].to_f32();
    }
}
