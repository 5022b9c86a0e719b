//! Scalar twins of the SIMD primitives: plain loops, any target.

use half::f16;

/// `Σ a[i]·b[i]` (lengths must match; the shorter one bounds the loop).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
/// `y[i] += alpha·x[i]`.
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}
/// `x[i] *= alpha`.
pub fn scale(alpha: f32, x: &mut [f32]) {
    for v in x {
        *v *= alpha;
    }
}
/// `Σ x[i]`.
pub fn sum(x: &[f32]) -> f32 {
    x.iter().sum()
}
/// `max x[i]`, `-inf` when empty.
pub fn max(x: &[f32]) -> f32 {
    x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}
/// f16 → f32, element by element.
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}
/// `Σ a[i]·b[i]` with `b` in f16.
pub fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y.to_f32()).sum()
}
/// `y[i] += alpha·x[i]` with `x` in f16.
pub fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x.to_f32();
    }
}
