//! AVX2 + FMA + F16C versions of the primitives. Every function requires those features; callers
//! check them with `Isa::Avx2Fma.ensure()` first.

use std::arch::x86_64::*;

use half::f16;

/// Horizontal sum of 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let sh = _mm_movehdup_ps(s);
    let s2 = _mm_add_ps(s, sh);
    let hi = _mm_movehl_ps(sh, s2);
    _mm_cvtss_f32(_mm_add_ss(s2, hi))
}

/// # Safety
/// AVX2+FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY: every load reads 8 floats below `n`.
    unsafe {
        while i + 32 <= n {
            for (k, acc) in acc.iter_mut().enumerate() {
                let o = i + 8 * k;
                *acc =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(o)), _mm256_loadu_ps(pb.add(o)), *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i)),
                _mm256_loadu_ps(pb.add(i)),
                acc[0],
            );
            i += 8;
        }
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum(v);
    for j in i..n {
        s += a[j] * b[j];
    }
    s
}

/// # Safety
/// AVX2+FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let va = _mm256_set1_ps(alpha);
    let mut i = 0;
    // SAFETY: loads and stores stay below `n`.
    unsafe {
        while i + 8 <= n {
            let p = y.as_mut_ptr().add(i);
            _mm256_storeu_ps(
                p,
                _mm256_fmadd_ps(va, _mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(p)),
            );
            i += 8;
        }
    }
    for j in i..n {
        y[j] += alpha * x[j];
    }
}

/// # Safety
/// AVX2+FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn scale(alpha: f32, x: &mut [f32]) {
    let n = x.len();
    let va = _mm256_set1_ps(alpha);
    let mut i = 0;
    // SAFETY: loads and stores stay below `n`.
    unsafe {
        while i + 8 <= n {
            let p = x.as_mut_ptr().add(i);
            _mm256_storeu_ps(p, _mm256_mul_ps(va, _mm256_loadu_ps(p)));
            i += 8;
        }
    }
    for v in &mut x[i..] {
        *v *= alpha;
    }
}

/// # Safety
/// AVX2+FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn sum(x: &[f32]) -> f32 {
    let n = x.len();
    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    // SAFETY: loads stay below `n`.
    unsafe {
        while i + 16 <= n {
            a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x.as_ptr().add(i)));
            a1 = _mm256_add_ps(a1, _mm256_loadu_ps(x.as_ptr().add(i + 8)));
            i += 16;
        }
        while i + 8 <= n {
            a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x.as_ptr().add(i)));
            i += 8;
        }
    }
    let mut s = hsum(_mm256_add_ps(a0, a1));
    for v in &x[i..] {
        s += v;
    }
    s
}

/// # Safety
/// AVX2+FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn max(x: &[f32]) -> f32 {
    let n = x.len();
    let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut i = 0;
    // SAFETY: loads stay below `n`. `max_ps(v, m)` returns `m` when `v` is NaN.
    unsafe {
        while i + 8 <= n {
            m = _mm256_max_ps(_mm256_loadu_ps(x.as_ptr().add(i)), m);
            i += 8;
        }
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), m) };
    let mut r = lanes.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for &v in &x[i..] {
        r = r.max(v);
    }
    r
}

/// # Safety
/// AVX2+FMA+F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let mut i = 0;
    // SAFETY: loads and stores stay below `n`; f16 is 2 bytes, so 8 of them are 16 bytes.
    unsafe {
        while i + 8 <= n {
            let h = _mm_loadu_si128(src.as_ptr().add(i).cast());
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            i += 8;
        }
    }
    for j in i..n {
        dst[j] = src[j].to_f32();
    }
}

/// # Safety
/// AVX2+FMA+F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
    let n = a.len().min(b.len());
    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    // SAFETY: loads stay below `n`.
    unsafe {
        while i + 16 <= n {
            let h0 = _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().add(i).cast()));
            let h1 = _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().add(i + 8).cast()));
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i)), h0, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i + 8)), h1, a1);
            i += 16;
        }
        while i + 8 <= n {
            let h0 = _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().add(i).cast()));
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i)), h0, a0);
            i += 8;
        }
    }
    let mut s = hsum(_mm256_add_ps(a0, a1));
    for j in i..n {
        s += a[j] * b[j].to_f32();
    }
    s
}

/// # Safety
/// AVX2+FMA+F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let va = _mm256_set1_ps(alpha);
    let mut i = 0;
    // SAFETY: loads and stores stay below `n`.
    unsafe {
        while i + 8 <= n {
            let p = y.as_mut_ptr().add(i);
            let h = _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(i).cast()));
            _mm256_storeu_ps(p, _mm256_fmadd_ps(va, h, _mm256_loadu_ps(p)));
            i += 8;
        }
    }
    for j in i..n {
        y[j] += alpha * x[j].to_f32();
    }
}
