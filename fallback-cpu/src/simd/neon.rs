//! AArch64 NEON versions of the primitives. f16 conversion goes through `half` (which uses the
//! FP16 instructions where the build enables them).

use std::arch::aarch64::*;

use half::f16;
use half::slice::HalfFloatSliceExt;

/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    // SAFETY: loads stay below `n`.
    unsafe {
        while i + 16 <= n {
            for (k, acc) in acc.iter_mut().enumerate() {
                let o = i + 4 * k;
                *acc = vfmaq_f32(
                    *acc,
                    vld1q_f32(a.as_ptr().add(o)),
                    vld1q_f32(b.as_ptr().add(o)),
                );
            }
            i += 16;
        }
        while i + 4 <= n {
            acc[0] = vfmaq_f32(
                acc[0],
                vld1q_f32(a.as_ptr().add(i)),
                vld1q_f32(b.as_ptr().add(i)),
            );
            i += 4;
        }
    }
    let v = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    let mut s = vaddvq_f32(v);
    for j in i..n {
        s += a[j] * b[j];
    }
    s
}

/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let mut i = 0;
    // SAFETY: loads and stores stay below `n`.
    unsafe {
        while i + 4 <= n {
            let p = y.as_mut_ptr().add(i);
            vst1q_f32(
                p,
                vfmaq_n_f32(vld1q_f32(p), vld1q_f32(x.as_ptr().add(i)), alpha),
            );
            i += 4;
        }
    }
    for j in i..n {
        y[j] += alpha * x[j];
    }
}

/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub unsafe fn scale(alpha: f32, x: &mut [f32]) {
    let n = x.len();
    let mut i = 0;
    // SAFETY: loads and stores stay below `n`.
    unsafe {
        while i + 4 <= n {
            let p = x.as_mut_ptr().add(i);
            vst1q_f32(p, vmulq_n_f32(vld1q_f32(p), alpha));
            i += 4;
        }
    }
    for v in &mut x[i..] {
        *v *= alpha;
    }
}

/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub unsafe fn sum(x: &[f32]) -> f32 {
    let n = x.len();
    let (mut a0, mut a1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let mut i = 0;
    // SAFETY: loads stay below `n`.
    unsafe {
        while i + 8 <= n {
            a0 = vaddq_f32(a0, vld1q_f32(x.as_ptr().add(i)));
            a1 = vaddq_f32(a1, vld1q_f32(x.as_ptr().add(i + 4)));
            i += 8;
        }
    }
    let mut s = vaddvq_f32(vaddq_f32(a0, a1));
    for v in &x[i..] {
        s += v;
    }
    s
}

/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub unsafe fn max(x: &[f32]) -> f32 {
    let n = x.len();
    let mut m = vdupq_n_f32(f32::NEG_INFINITY);
    let mut i = 0;
    // SAFETY: loads stay below `n`. `vmaxnmq` ignores a NaN operand.
    unsafe {
        while i + 4 <= n {
            m = vmaxnmq_f32(m, vld1q_f32(x.as_ptr().add(i)));
            i += 4;
        }
    }
    let mut r = vmaxnmvq_f32(m);
    for &v in &x[i..] {
        r = r.max(v);
    }
    r
}

/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub unsafe fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    src[..n].convert_to_f32_slice(&mut dst[..n]);
}

/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub unsafe fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
    let mut buf = [0f32; 64];
    let mut s = 0.0;
    for (ca, cb) in a.chunks(64).zip(b.chunks(64)) {
        let t = &mut buf[..cb.len()];
        cb.convert_to_f32_slice(t);
        // SAFETY: NEON is available (this function's precondition).
        s += unsafe { dot(ca, t) };
    }
    s
}

/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub unsafe fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    let mut buf = [0f32; 64];
    for (cx, cy) in x.chunks(64).zip(y.chunks_mut(64)) {
        let t = &mut buf[..cx.len()];
        cx.convert_to_f32_slice(t);
        // SAFETY: NEON is available (this function's precondition).
        unsafe { axpy(alpha, t, cy) };
    }
}
