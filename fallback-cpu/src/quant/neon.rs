//! NEON integer dot products: `vmull_s8` (i8×i8 → i16) and pairwise widening adds into i32.
//! Every unpacked weight fits `i8` (Q4_K/Q6_K values are ≤ 63), so one 16-byte helper serves
//! all types.

use std::arch::aarch64::*;

use super::{ActRow, QType, f16_at, q4k_scale_min};

/// Σ w·a over 16 signed bytes, as 4 i32 partial sums.
#[inline]
#[target_feature(enable = "neon")]
fn dot16(w: int8x16_t, a: int8x16_t) -> int32x4_t {
    let s = vpaddlq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(a)));
    vpadalq_s16(s, vmull_high_s8(w, a))
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn ld(p: *const i8) -> int8x16_t {
    // SAFETY: the caller guarantees 16 readable bytes.
    unsafe { vld1q_s8(p) }
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn ldu(p: *const u8) -> uint8x16_t {
    // SAFETY: the caller guarantees 16 readable bytes.
    unsafe { vld1q_u8(p) }
}

#[inline]
#[target_feature(enable = "neon")]
fn s8(v: uint8x16_t) -> int8x16_t {
    vreinterpretq_s8_u8(v)
}

/// # Safety
/// NEON must be available; `w` holds exactly the blocks for `a`'s length and `a` is in
/// `wtype.act_kind()`'s format.
#[target_feature(enable = "neon")]
pub(super) unsafe fn vec_dot(wtype: QType, w: &[u8], a: &ActRow<'_>) -> f32 {
    let ap = a.qs.as_ptr();
    let m4 = vdupq_n_u8(15);
    let mut acc = 0f32;
    // SAFETY: block `i` of each type lies inside `w`, and its activations inside `a.qs`.
    unsafe {
        match wtype {
            QType::Q4_0 | QType::Q4_1 | QType::Q5_0 | QType::Q8_0 => {
                let bb = wtype.block_bytes();
                let bits: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
                let (bits, idx_lo, idx_hi) = (
                    ldu(bits.as_ptr()),
                    ldu([0u8, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1].as_ptr()),
                    ldu([2u8, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3].as_ptr()),
                );
                for (i, b) in w.chunks_exact(bb).enumerate() {
                    let (a0, a1) = (ld(ap.add(32 * i)), ld(ap.add(32 * i + 16)));
                    let (w0, w1) = match wtype {
                        QType::Q8_0 => {
                            (ld(b.as_ptr().add(2).cast()), ld(b.as_ptr().add(18).cast()))
                        }
                        QType::Q4_0 => {
                            let q = ldu(b.as_ptr().add(2));
                            let e = vdupq_n_s8(8);
                            (
                                vsubq_s8(s8(vandq_u8(q, m4)), e),
                                vsubq_s8(s8(vshrq_n_u8(q, 4)), e),
                            )
                        }
                        QType::Q4_1 => {
                            let q = ldu(b.as_ptr().add(4));
                            (s8(vandq_u8(q, m4)), s8(vshrq_n_u8(q, 4)))
                        }
                        _ => {
                            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                            let v = vreinterpretq_u8_u32(vdupq_n_u32(qh));
                            let x10 = vdupq_n_u8(0x10);
                            let h0 = vandq_u8(vtstq_u8(vqtbl1q_u8(v, idx_lo), bits), x10);
                            let h1 = vandq_u8(vtstq_u8(vqtbl1q_u8(v, idx_hi), bits), x10);
                            let q = ldu(b.as_ptr().add(6));
                            let e = vdupq_n_s8(16);
                            (
                                vsubq_s8(s8(vorrq_u8(vandq_u8(q, m4), h0)), e),
                                vsubq_s8(s8(vorrq_u8(vshrq_n_u8(q, 4), h1)), e),
                            )
                        }
                    };
                    let s = vaddvq_s32(vaddq_s32(dot16(w0, a0), dot16(w1, a1)));
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
                        let q0 = ldu(b.as_ptr().add(16 + 32 * k));
                        let q1 = ldu(b.as_ptr().add(32 + 32 * k));
                        let x = ap.add(256 * i + 64 * k);
                        let lo = vaddq_s32(
                            dot16(s8(vandq_u8(q0, m4)), ld(x)),
                            dot16(s8(vandq_u8(q1, m4)), ld(x.add(16))),
                        );
                        let hi = vaddq_s32(
                            dot16(s8(vshrq_n_u8(q0, 4)), ld(x.add(32))),
                            dot16(s8(vshrq_n_u8(q1, 4)), ld(x.add(48))),
                        );
                        sumi += s0 as i32 * vaddvq_s32(lo) + s1 as i32 * vaddvq_s32(hi);
                    }
                    acc += a.d[i] * (f16_at(b, 0) * sumi as f32 - f16_at(b, 2) * summ as f32);
                }
            }
            QType::Q6_K => {
                let (m3, mc, m30, mc0, e) = (
                    vdupq_n_u8(3),
                    vdupq_n_u8(0x0c),
                    vdupq_n_u8(0x30),
                    vdupq_n_u8(0xc0),
                    vdupq_n_s8(32),
                );
                for (i, b) in w.chunks_exact(210).enumerate() {
                    let mut sumi = 0i32;
                    for c in 0..2 {
                        for h in 0..2 {
                            let ql0 = ldu(b.as_ptr().add(64 * c + 16 * h));
                            let ql1 = ldu(b.as_ptr().add(64 * c + 32 + 16 * h));
                            let qh = ldu(b.as_ptr().add(128 + 32 * c + 16 * h));
                            let q = [
                                vorrq_u8(vandq_u8(ql0, m4), vshlq_n_u8(vandq_u8(qh, m3), 4)),
                                vorrq_u8(vandq_u8(ql1, m4), vshlq_n_u8(vandq_u8(qh, mc), 2)),
                                vorrq_u8(vshrq_n_u8(ql0, 4), vandq_u8(qh, m30)),
                                vorrq_u8(vshrq_n_u8(ql1, 4), vshrq_n_u8(vandq_u8(qh, mc0), 2)),
                            ];
                            for (j, q) in q.into_iter().enumerate() {
                                let e0 = 128 * c + 32 * j + 16 * h;
                                let sc = b[192 + e0 / 16] as i8 as i32;
                                let d = dot16(vsubq_s8(s8(q), e), ld(ap.add(256 * i + e0)));
                                sumi += sc * vaddvq_s32(d);
                            }
                        }
                    }
                    acc += f16_at(b, 208) * a.d[i] * sumi as f32;
                }
            }
            QType::F32 | QType::F16 => unreachable!("float weights are handled by dot_row"),
        }
    }
    acc
}
