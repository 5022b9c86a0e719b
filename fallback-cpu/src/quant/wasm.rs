//! WebAssembly SIMD128 integer dot products: i8 → i16 widening and `i32x4.dot_i16x8_s`. Every
//! unpacked weight fits `i8` (Q4_K/Q6_K values are ≤ 63), so one 16-byte helper serves all types.

use std::arch::wasm32::*;

use super::{ActRow, QType, f16_at, q4k_scale_min};

/// Σ w·a over 16 signed bytes, as 4 i32 partial sums.
#[inline]
fn dot16(w: v128, a: v128) -> v128 {
    let lo = i32x4_dot_i16x8(i16x8_extend_low_i8x16(w), i16x8_extend_low_i8x16(a));
    let hi = i32x4_dot_i16x8(i16x8_extend_high_i8x16(w), i16x8_extend_high_i8x16(a));
    i32x4_add(lo, hi)
}

#[inline]
fn hsum(v: v128) -> i32 {
    i32x4_extract_lane::<0>(v)
        + i32x4_extract_lane::<1>(v)
        + i32x4_extract_lane::<2>(v)
        + i32x4_extract_lane::<3>(v)
}

#[inline]
fn ld<T>(s: &[T], i: usize) -> v128 {
    assert!(
        (i + 16 / size_of::<T>()) <= s.len(),
        "16-byte load in bounds"
    );
    // SAFETY: checked above; v128_load accepts unaligned addresses.
    unsafe { v128_load(s.as_ptr().add(i).cast()) }
}

/// Dot product of one weight row with an activation row (see `quant::scalar::vec_dot`).
pub(super) fn vec_dot(wtype: QType, w: &[u8], a: &ActRow<'_>) -> f32 {
    let qs = a.qs;
    let m4 = u8x16_splat(15);
    let mut acc = 0f32;
    match wtype {
        QType::Q4_0 | QType::Q4_1 | QType::Q5_0 | QType::Q8_0 => {
            let bb = wtype.block_bytes();
            let bits = u8x16(1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
            let idx_lo = u8x16(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
            let idx_hi = u8x16(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
            for (i, b) in w.chunks_exact(bb).enumerate() {
                let (a0, a1) = (ld(qs, 32 * i), ld(qs, 32 * i + 16));
                let (w0, w1) = match wtype {
                    QType::Q8_0 => (ld(b, 2), ld(b, 18)),
                    QType::Q4_0 => {
                        let q = ld(b, 2);
                        let e = i8x16_splat(8);
                        (i8x16_sub(v128_and(q, m4), e), i8x16_sub(u8x16_shr(q, 4), e))
                    }
                    QType::Q4_1 => {
                        let q = ld(b, 4);
                        (v128_and(q, m4), u8x16_shr(q, 4))
                    }
                    _ => {
                        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                        let v = u32x4_splat(qh);
                        let x10 = u8x16_splat(0x10);
                        let h0 = v128_and(
                            u8x16_eq(v128_and(u8x16_swizzle(v, idx_lo), bits), bits),
                            x10,
                        );
                        let h1 = v128_and(
                            u8x16_eq(v128_and(u8x16_swizzle(v, idx_hi), bits), bits),
                            x10,
                        );
                        let q = ld(b, 6);
                        let e = i8x16_splat(16);
                        (
                            i8x16_sub(v128_or(v128_and(q, m4), h0), e),
                            i8x16_sub(v128_or(u8x16_shr(q, 4), h1), e),
                        )
                    }
                };
                let s = hsum(i32x4_add(dot16(w0, a0), dot16(w1, a1)));
                acc += f16_at(b, 0) * a.d[i] * s as f32;
                if wtype == QType::Q4_1 {
                    acc += f16_at(b, 2) * a.s[i];
                }
            }
        }
        QType::Q4_K => {
            for (i, b) in w.chunks_exact(144).enumerate() {
                let bs = &a.bsums[16 * i..16 * i + 16];
                let (mut sumi, mut summ) = (0i32, 0i32);
                for k in 0..4 {
                    let (s0, m0) = q4k_scale_min(2 * k, &b[4..16]);
                    let (s1, m1) = q4k_scale_min(2 * k + 1, &b[4..16]);
                    summ += m0 as i32 * (bs[4 * k] as i32 + bs[4 * k + 1] as i32);
                    summ += m1 as i32 * (bs[4 * k + 2] as i32 + bs[4 * k + 3] as i32);
                    let (q0, q1) = (ld(b, 16 + 32 * k), ld(b, 32 + 32 * k));
                    let x = 256 * i + 64 * k;
                    let lo = i32x4_add(
                        dot16(v128_and(q0, m4), ld(qs, x)),
                        dot16(v128_and(q1, m4), ld(qs, x + 16)),
                    );
                    let hi = i32x4_add(
                        dot16(u8x16_shr(q0, 4), ld(qs, x + 32)),
                        dot16(u8x16_shr(q1, 4), ld(qs, x + 48)),
                    );
                    sumi += s0 as i32 * hsum(lo) + s1 as i32 * hsum(hi);
                }
                acc += a.d[i] * (f16_at(b, 0) * sumi as f32 - f16_at(b, 2) * summ as f32);
            }
        }
        QType::Q6_K => {
            let (m3, mc, m30, mc0, e) = (
                u8x16_splat(3),
                u8x16_splat(0x0c),
                u8x16_splat(0x30),
                u8x16_splat(0xc0),
                i8x16_splat(32),
            );
            for (i, b) in w.chunks_exact(210).enumerate() {
                let mut sumi = 0i32;
                for c in 0..2 {
                    for h in 0..2 {
                        let ql0 = ld(b, 64 * c + 16 * h);
                        let ql1 = ld(b, 64 * c + 32 + 16 * h);
                        let qh = ld(b, 128 + 32 * c + 16 * h);
                        let q = [
                            v128_or(v128_and(ql0, m4), u8x16_shl(v128_and(qh, m3), 4)),
                            v128_or(v128_and(ql1, m4), u8x16_shl(v128_and(qh, mc), 2)),
                            v128_or(u8x16_shr(ql0, 4), v128_and(qh, m30)),
                            v128_or(u8x16_shr(ql1, 4), u8x16_shr(v128_and(qh, mc0), 2)),
                        ];
                        for (j, q) in q.into_iter().enumerate() {
                            let e0 = 128 * c + 32 * j + 16 * h;
                            let sc = b[192 + e0 / 16] as i8 as i32;
                            sumi += sc * hsum(dot16(i8x16_sub(q, e), ld(qs, 256 * i + e0)));
                        }
                    }
                }
                acc += f16_at(b, 208) * a.d[i] * sumi as f32;
            }
        }
        QType::F32 | QType::F16 => unreachable!("float weights are handled by dot_row"),
    }
    acc
}
