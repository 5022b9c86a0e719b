//! WebAssembly SIMD128 integer dot products on i16 lanes: 8 bytes at a time are widened as they
//! load (`i16x8.load8x8_s`/`_u`, one instruction on x86 and ARM, where widening the high half of a
//! 16-byte register takes two) and multiplied pairwise into i32 (`i32x4.dot_i16x8_s`). Block
//! scales are applied to whole i32x4 vectors, so each row ends in one horizontal sum. Every
//! unpacked weight fits `i8` (Q4_K/Q6_K values are ≤ 63), so no lane overflows.

use std::arch::wasm32::*;

use super::{ActRow, QType, q4k_scale_min};

/// The little-endian f16 at `b[o..]` as f32, exactly (a block's scale): the scalar form of
/// `simd::wasm::f16x8_to_f32`, branch-free for finite values, where `half`'s portable conversion
/// branches per call (wasm has no conversion instruction).
#[inline]
fn f16_at(b: &[u8], o: usize) -> f32 {
    let h = u32::from(u16::from_le_bytes([b[o], b[o + 1]]));
    let mag = (h & 0x7fff) << 13;
    let v = if mag >= 0x0f80_0000 {
        f32::from_bits(mag | 0x7f80_0000) // infinity or NaN
    } else {
        f32::from_bits(mag) * f32::from_bits(0x7780_0000) // 2^112
    };
    f32::from_bits(v.to_bits() | (h & 0x8000) << 16)
}

/// Σ w·a over 16 signed bytes, as 4 i32 partial sums (Q6_K, whose weights are built in bytes).
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

/// 8 signed bytes from `s[i..]` widened to i16 lanes.
#[inline]
fn ld8s<T>(s: &[T], i: usize) -> v128 {
    assert!((i + 8 / size_of::<T>()) <= s.len(), "8-byte load in bounds");
    // SAFETY: checked above; the load is unaligned-safe.
    unsafe { i16x8_load_extend_i8x8(s.as_ptr().add(i).cast()) }
}

/// 8 unsigned bytes from `s[i..]` widened to u16 lanes.
#[inline]
fn ld8u(s: &[u8], i: usize) -> v128 {
    assert!(i + 8 <= s.len(), "8-byte load in bounds");
    // SAFETY: checked above; the load is unaligned-safe.
    unsafe { u16x8_load_extend_u8x8(s.as_ptr().add(i)) }
}

/// Σ over four i16x8 pairs, as 4 i32 partial sums.
#[inline]
fn dot4x8(w: [v128; 4], a: [v128; 4]) -> v128 {
    i32x4_add(
        i32x4_add(i32x4_dot_i16x8(w[0], a[0]), i32x4_dot_i16x8(w[1], a[1])),
        i32x4_add(i32x4_dot_i16x8(w[2], a[2]), i32x4_dot_i16x8(w[3], a[3])),
    )
}

/// The 32 nibbles of a Q4_0/Q4_1 block's 16 bytes at `b[o..]` as i16 lanes: elements 0-7, 8-15
/// (low nibbles), 16-23, 24-31 (high nibbles).
#[inline]
fn nibbles32(b: &[u8], o: usize) -> [v128; 4] {
    let m4 = u16x8_splat(15);
    let (lo, hi) = (ld8u(b, o), ld8u(b, o + 8));
    [
        v128_and(lo, m4),
        v128_and(hi, m4),
        u16x8_shr(lo, 4),
        u16x8_shr(hi, 4),
    ]
}

/// Σ over a row of 32-element blocks of `BB` bytes (Q4_0, Q4_1, Q5_0, Q8_0: f16 scale at byte 0,
/// Q4_1's f16 min at byte 2): `unpack` gives a block's 32 weights as i16 lanes (elements 0-7,
/// 8-15, 16-23, 24-31). Blocks and activations are walked as fixed-size arrays, so every load's
/// bounds are known at compile time.
#[inline(always)]
fn blocks32<const BB: usize>(
    w: &[u8],
    a: &ActRow<'_>,
    unpack: impl Fn(&[u8; BB]) -> [v128; 4],
) -> f32 {
    let mut accv = f32x4_splat(0.0);
    let mut accm = 0f32;
    let (blocks, _) = w.as_chunks::<BB>();
    let (acts, _) = a.qs.as_chunks::<32>();
    debug_assert!(
        acts.len() == blocks.len() && a.d.len() == blocks.len() && a.s.len() == blocks.len()
    );
    for (((b, q), &d), &s) in blocks.iter().zip(acts).zip(a.d).zip(a.s) {
        let a4 = [ld8s(q, 0), ld8s(q, 8), ld8s(q, 16), ld8s(q, 24)];
        let sum = f32x4_convert_i32x4(dot4x8(unpack(b), a4));
        accv = f32x4_add(accv, f32x4_mul(sum, f32x4_splat(f16_at(b, 0) * d)));
        if BB == 20 {
            accm += f16_at(b, 2) * s;
        }
    }
    crate::simd::wasm::hsum(accv) + accm
}

/// Dot product of one weight row with an activation row (see `quant::scalar::vec_dot`).
pub(super) fn vec_dot(wtype: QType, w: &[u8], a: &ActRow<'_>) -> f32 {
    let qs = a.qs;
    let m4 = u8x16_splat(15);
    let mut acc = 0f32;
    match wtype {
        QType::Q8_0 => acc = blocks32::<34>(w, a, |b| std::array::from_fn(|k| ld8s(b, 2 + 8 * k))),
        QType::Q4_0 => {
            acc = blocks32::<18>(w, a, |b| {
                nibbles32(b, 2).map(|v| i16x8_sub(v, i16x8_splat(8)))
            })
        }
        QType::Q4_1 => acc = blocks32::<20>(w, a, |b| nibbles32(b, 4)),
        QType::Q5_0 => {
            // Lane j of the low (high) mask tests bit j (j + 8) of a 16-bit half of qh.
            let bits_lo = u16x8(1, 2, 4, 8, 16, 32, 64, 128);
            let bits_hi = u16x8(256, 512, 1024, 2048, 4096, 8192, 16384, 32768);
            let fifth = |half: u16, bits: v128| {
                let v = u16x8_splat(half);
                v128_and(u16x8_eq(v128_and(v, bits), bits), u16x8_splat(16))
            };
            acc = blocks32::<22>(w, a, |b| {
                let (q0, q1) = (
                    u16::from_le_bytes([b[2], b[3]]),
                    u16::from_le_bytes([b[4], b[5]]),
                );
                let h = [
                    fifth(q0, bits_lo),
                    fifth(q0, bits_hi),
                    fifth(q1, bits_lo),
                    fifth(q1, bits_hi),
                ];
                let n = nibbles32(b, 6);
                std::array::from_fn(|k| i16x8_sub(v128_or(n[k], h[k]), i16x8_splat(16)))
            });
        }
        QType::Q4_K => {
            let m4 = u16x8_splat(15);
            let (blocks, _) = w.as_chunks::<144>();
            let (acts, _) = qs.as_chunks::<256>();
            let (sums, _) = a.bsums.as_chunks::<16>();
            for (((b, qa), bs), &da) in blocks.iter().zip(acts).zip(sums).zip(a.d) {
                let mut sumv = i32x4_splat(0);
                let mut summ = 0i32;
                for k in 0..4 {
                    let (s0, m0) = q4k_scale_min(2 * k, &b[4..16]);
                    let (s1, m1) = q4k_scale_min(2 * k + 1, &b[4..16]);
                    summ += m0 as i32 * (bs[4 * k] as i32 + bs[4 * k + 1] as i32);
                    summ += m1 as i32 * (bs[4 * k + 2] as i32 + bs[4 * k + 3] as i32);
                    // 32 bytes: low nibbles are elements x..x+32, high ones x+32..x+64.
                    let x = 64 * k;
                    let q: [v128; 4] = std::array::from_fn(|j| ld8u(b, 16 + 32 * k + 8 * j));
                    let lo = dot4x8(
                        q.map(|v| v128_and(v, m4)),
                        std::array::from_fn(|j| ld8s(qa, x + 8 * j)),
                    );
                    let hi = dot4x8(
                        q.map(|v| u16x8_shr(v, 4)),
                        std::array::from_fn(|j| ld8s(qa, x + 32 + 8 * j)),
                    );
                    sumv = i32x4_add(sumv, i32x4_mul(lo, i32x4_splat(s0 as i32)));
                    sumv = i32x4_add(sumv, i32x4_mul(hi, i32x4_splat(s1 as i32)));
                }
                let sumi = hsum(sumv);
                acc += da * (f16_at(b, 0) * sumi as f32 - f16_at(b, 2) * summ as f32);
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
            let (blocks, _) = w.as_chunks::<210>();
            let (acts, _) = qs.as_chunks::<256>();
            for ((b, qa), &da) in blocks.iter().zip(acts).zip(a.d) {
                let mut sumv = i32x4_splat(0);
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
                            let d = dot16(i8x16_sub(q, e), ld(qa, e0));
                            sumv = i32x4_add(sumv, i32x4_mul(d, i32x4_splat(sc)));
                        }
                    }
                }
                acc += f16_at(b, 208) * da * hsum(sumv) as f32;
            }
        }
        QType::F32 | QType::F16 => unreachable!("float weights are handled by dot_row"),
    }
    acc
}

#[cfg(test)]
mod tests {
    use half::f16;
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// The scalar scale conversion equals `half`'s for all 65536 patterns (NaN for NaN).
    #[test]
    fn f16_at_is_exact() {
        for h in 0..=u16::MAX {
            let got = super::f16_at(&h.to_le_bytes(), 0);
            let want = f16::from_bits(h).to_f32();
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{h:#06x}: {got} vs {want}"
            );
        }
    }
}
