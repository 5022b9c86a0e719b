//! AVX-512 VNNI integer dot products: `vpdpbusd` (u8×i8, four products summed into each i32
//! lane, no i16 saturation) on 512-bit vectors, so one instruction covers two 32-element blocks.
//!
//! Each kernel takes `N` activation rows and returns `N` dot products with the same weight row:
//! the weight blocks are unpacked (nibbles, high bits, scales) once and used for every activation
//! row, which is how the batched matmul (prefill) reuses them from registers. `N = 1` is the GEMV.
//!
//! The 32-element types walk four blocks per step: their four weight scales are widened with one
//! `vcvtph2ps` and multiplied with four activation scales at once, then spread over the two
//! 512-bit block pairs with a permute. A tail of 1-3 blocks uses masked loads that read nothing
//! past the row. K-quants unpack a 256-element super-block, form u8×i8 pairs with `vpmaddubsw`
//! (their products fit i16) and apply the per-group scales with `vpdpwssd`.
//!
//! Requires AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C ([`crate::Isa::Avx512Vnni`]).

use std::arch::x86_64::*;

use super::{ActRow, QType};

/// # Safety
/// AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C must be available; `w` holds exactly the blocks for
/// each `a[k]`'s length (all the same) and every `a[k]` is in `wtype.act_kind()`'s format.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_n<const N: usize>(
    wtype: QType,
    w: &[u8],
    a: &[ActRow<'_>; N],
) -> [f32; N] {
    // SAFETY: the caller's guarantees make every block read below in bounds.
    unsafe {
        match wtype {
            QType::Q4_0 => q4_family::<0, N>(w, a),
            QType::Q4_1 => q4_family::<1, N>(w, a),
            QType::Q5_0 => q4_family::<2, N>(w, a),
            QType::Q8_0 => q8_0::<N>(w, a),
            QType::Q4_K => q4_k::<N>(w, a),
            QType::Q6_K => q6_k::<N>(w, a),
            QType::F32 | QType::F16 => unreachable!("float weights are handled by dot_row"),
        }
    }
}

/// The f16 at `p + stride·j` for `j < CNT` (0.0 beyond), widened: `[v0, v1, v2, v3]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn f16x4<const CNT: usize>(p: *const u8, stride: usize) -> __m128 {
    // SAFETY: the caller guarantees 2 readable bytes at `p + stride·j` for `j < CNT`.
    let h = |j: usize| unsafe { u16::from_le(p.add(stride * j).cast::<u16>().read_unaligned()) };
    let mut v = _mm_cvtsi32_si128(h(0) as i32);
    if CNT > 1 {
        v = _mm_insert_epi16::<1>(v, h(1) as i32);
    }
    if CNT > 2 {
        v = _mm_insert_epi16::<2>(v, h(2) as i32);
    }
    if CNT > 3 {
        v = _mm_insert_epi16::<3>(v, h(3) as i32);
    }
    _mm_cvtph_ps(v)
}

/// `p[0..CNT]` (0.0 beyond, nothing read past `CNT`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn f32x4<const CNT: usize>(p: *const f32) -> __m128 {
    // SAFETY: the masked load reads only the `CNT` lanes the caller guarantees.
    unsafe { _mm_maskz_loadu_ps(((1u32 << CNT) - 1) as u8, p) }
}

/// The activation bytes of block pair `h` (blocks `2h`, `2h+1` of a group starting at `p`), of
/// which `CNT` blocks exist from `p` on; bytes of missing blocks are 0 and not read.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn act_pair<const CNT: usize>(p: *const i8, h: usize) -> __m512i {
    let k = if CNT >= 2 * h + 2 {
        u64::MAX
    } else {
        0xffff_ffff
    };
    // SAFETY: the mask covers only the blocks below `CNT`, which the caller guarantees.
    unsafe { _mm512_maskz_loadu_epi8(k, p.add(64 * h)) }
}

/// Lane indices spreading `[s0, s1, s2, s3]` (f32) over a block pair: `s(2h)` in lanes 0..8,
/// `s(2h+1)` in 8..16.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn pair_idx(h: i32) -> __m512i {
    let (a, b) = (2 * h, 2 * h + 1);
    _mm512_setr_epi32(a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b)
}

/// Q8_0: signed weights, so each pair uses `|w|` as the unsigned operand and moves `w`'s sign
/// onto the activations (`-x` where `w < 0`; exact, since activations lie in -127..=127).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q8_0<const N: usize>(w: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
    let mut acc = [_mm512_setzero_ps(); N];
    // SAFETY: block j spans w[34j..34j+34], qs[32j..32j+32] and d[j] for j < nb.
    unsafe {
        by_four!(w.len() / 34, |i| q8_0_group::<N>(
            w.as_ptr(),
            i,
            a,
            &mut acc
        ))
    };
    acc.map(|v| _mm512_reduce_add_ps(v))
}

/// Blocks `i..i+CNT` of a Q8_0 row into `acc`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q8_0_group<const N: usize, const CNT: usize>(
    wp: *const u8,
    i: usize,
    a: &[ActRow<'_>; N],
    acc: &mut [__m512; N],
) {
    let zero = _mm512_setzero_si512();
    let idx = [pair_idx(0), pair_idx(1)];
    let pairs = CNT.div_ceil(2);
    // SAFETY: the caller guarantees blocks i..i+CNT exist in `w` and in every `a[k]`.
    unsafe {
        let b = wp.add(34 * i);
        let dw = f16x4::<CNT>(b, 34);
        let mut wq = [(zero, 0u64); 2];
        for (h, wq) in wq.iter_mut().enumerate().take(pairs) {
            let lo = _mm256_loadu_si256(b.add(68 * h + 2).cast());
            let hi = if CNT >= 2 * h + 2 {
                _mm256_loadu_si256(b.add(68 * h + 36).cast())
            } else {
                _mm256_setzero_si256()
            };
            let v = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            *wq = (_mm512_abs_epi8(v), _mm512_movepi8_mask(v));
        }
        for (acc, a) in acc.iter_mut().zip(a) {
            let ds = _mm_mul_ps(dw, f32x4::<CNT>(a.d.as_ptr().add(i)));
            let ds = _mm512_castps128_ps512(ds);
            let x0 = a.qs.as_ptr().add(32 * i);
            for (h, &(aw, neg)) in wq.iter().enumerate().take(pairs) {
                let x = act_pair::<CNT>(x0, h);
                let sx = _mm512_mask_sub_epi8(x, neg, zero, x);
                let p = _mm512_dpbusd_epi32(zero, aw, sx);
                let s = _mm512_permutexvar_ps(idx[h], ds);
                *acc = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(p), *acc);
            }
        }
    }
}

/// Q4_0 (`K = 0`), Q4_1 (`K = 1`) and Q5_0 (`K = 2`): unsigned `q` with `w = d·q + m` (`m =
/// -8d`, stored `m`, `-16d`), so `Σ w·x = d·dₐ·Σ q·qₐ + m·(dₐ·Σqₐ)` and `q` feeds `vpdpbusd`
/// directly; the `m` terms come from the activation block sums.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_family<const K: u8, const N: usize>(w: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
    let bb = q4_block_bytes(K);
    let mut acc = [_mm512_setzero_ps(); N];
    let mut macc = [_mm_setzero_ps(); N];
    // SAFETY: block j spans w[bb·j..bb·(j+1)], qs[32j..32j+32], d[j], s[j] for j < nb.
    unsafe {
        by_four!(w.len() / bb, |i| q4_group::<K, N>(
            w.as_ptr(),
            i,
            a,
            &mut acc,
            &mut macc
        ))
    };
    let mut out = [0f32; N];
    for ((o, acc), macc) in out.iter_mut().zip(acc).zip(macc) {
        let m = _mm_add_ps(macc, _mm_movehl_ps(macc, macc));
        *o = _mm512_reduce_add_ps(acc) + _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)));
    }
    out
}

/// Bytes per block of Q4_0 (`K = 0`), Q4_1 (`K = 1`), Q5_0 (`K = 2`).
const fn q4_block_bytes(k: u8) -> usize {
    match k {
        0 => 18,
        1 => 20,
        _ => 22,
    }
}

/// Blocks `i..i+CNT` of a Q4_0/Q4_1/Q5_0 row into `acc` (scaled `Σ q·qₐ`) and `macc` (`m`
/// terms).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_group<const K: u8, const N: usize, const CNT: usize>(
    wp: *const u8,
    i: usize,
    a: &[ActRow<'_>; N],
    acc: &mut [__m512; N],
    macc: &mut [__m128; N],
) {
    let bb = q4_block_bytes(K);
    let qoff = bb - 16;
    let zero = _mm512_setzero_si512();
    let idx = [pair_idx(0), pair_idx(1)];
    let m4 = _mm512_set1_epi8(0x0f);
    let x10 = _mm512_set1_epi8(0x10);
    // Shift counts per 16-bit lane: 0 in the low 128 bits of each 256-bit half, 4 in the high,
    // so a block's 16 bytes broadcast to both give its low nibbles, then its high nibbles.
    let four = 0x0004_0004_0004_0004;
    let shift = _mm512_setr_epi64(0, 0, four, four, 0, 0, four, four);
    let pairs = CNT.div_ceil(2);
    // SAFETY: the caller guarantees blocks i..i+CNT exist in `w` and in every `a[k]`.
    unsafe {
        let b = wp.add(bb * i);
        let dw = f16x4::<CNT>(b, bb);
        let mw = if K == 1 {
            f16x4::<CNT>(b.add(2), bb)
        } else {
            _mm_mul_ps(dw, _mm_set1_ps(if K == 0 { -8.0 } else { -16.0 }))
        };
        let mut wq = [zero; 2];
        for (h, wq) in wq.iter_mut().enumerate().take(pairs) {
            let b0 = b.add(2 * bb * h);
            let two = CNT >= 2 * h + 2;
            let lo = _mm256_broadcastsi128_si256(_mm_loadu_si128(b0.add(qoff).cast()));
            let hi = if two {
                _mm256_broadcastsi128_si256(_mm_loadu_si128(b0.add(bb + qoff).cast()))
            } else {
                _mm256_setzero_si256()
            };
            let t = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            let mut q = _mm512_and_si512(_mm512_srlv_epi16(t, shift), m4);
            if K == 2 {
                let qh0 = u32::from_le(b0.add(2).cast::<u32>().read_unaligned());
                let qh1 = if two {
                    u32::from_le(b0.add(bb + 2).cast::<u32>().read_unaligned())
                } else {
                    0
                };
                q = _mm512_mask_add_epi8(q, qh0 as u64 | (qh1 as u64) << 32, q, x10);
            }
            *wq = q;
        }
        for ((acc, macc), a) in acc.iter_mut().zip(macc.iter_mut()).zip(a) {
            let ds = _mm_mul_ps(dw, f32x4::<CNT>(a.d.as_ptr().add(i)));
            let ds = _mm512_castps128_ps512(ds);
            *macc = _mm_fmadd_ps(mw, f32x4::<CNT>(a.s.as_ptr().add(i)), *macc);
            let x0 = a.qs.as_ptr().add(32 * i);
            for (h, &q) in wq.iter().enumerate().take(pairs) {
                let p = _mm512_dpbusd_epi32(zero, q, act_pair::<CNT>(x0, h));
                let s = _mm512_permutexvar_ps(idx[h], ds);
                *acc = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(p), *acc);
            }
        }
    }
}

/// i16 lane indices repeating 16-bit element `first + L/width` for lane `L` of 32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn spread_i16(first: i16, width: usize) -> __m512i {
    let mut v = [0i16; 32];
    for (l, v) in v.iter_mut().enumerate() {
        *v = first + (l / width) as i16;
    }
    // SAFETY: `v` is 64 readable bytes.
    unsafe { _mm512_loadu_si512(v.as_ptr().cast()) }
}

/// Q4_K: per super-block the 8 six-bit scales and mins are unpacked with 32-bit masks, a
/// 32-byte run of nibbles becomes one 512-bit vector (low nibbles = sub-block `2k`, high =
/// `2k+1`, matching 64 consecutive activations), and `vpdpwssd` applies the scales.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_k<const N: usize>(w: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
    let nb = w.len() / 144;
    let wp = w.as_ptr();
    let m4 = _mm512_set1_epi8(0x0f);
    // 0 for 16-bit lanes of the low 256 bits, 4 for the high.
    let shift = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
    let idx: [__m512i; 4] = std::array::from_fn(|k| spread_i16(2 * k as i16, 16));
    let mut out = [0f32; N];
    // SAFETY: super-block i spans w[144i..144i+144], qs[256i..256i+256], bsums[16i..16i+16].
    unsafe {
        for i in 0..nb {
            let b = wp.add(144 * i);
            let u = [0, 4, 8].map(|o| u32::from_le(b.add(4 + o).cast::<u32>().read_unaligned()));
            const LOW6: u32 = 0x3f3f_3f3f;
            const LOW4: u32 = 0x0f0f_0f0f;
            const TOP2: u32 = 0x0303_0303;
            // Bytes j of [sc03, sc47] are the scales of sub-blocks j, 4+j; same for the mins.
            let sc03 = u[0] & LOW6;
            let sc47 = (u[2] & LOW4) | (((u[0] >> 6) & TOP2) << 4);
            let mn03 = u[1] & LOW6;
            let mn47 = ((u[2] >> 4) & LOW4) | (((u[1] >> 6) & TOP2) << 4);
            let sc = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, sc47 as i32, sc03 as i32));
            let mins = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, mn47 as i32, mn03 as i32));
            let sc = _mm512_castsi128_si512(sc);
            let scales = idx.map(|ix| _mm512_permutexvar_epi16(ix, sc));
            let q: [__m512i; 4] = std::array::from_fn(|k| {
                let t = _mm512_broadcast_i64x4(_mm256_loadu_si256(b.add(16 + 32 * k).cast()));
                _mm512_and_si512(_mm512_srlv_epi16(t, shift), m4)
            });
            let (d, dmin) = {
                let v = f16x4::<2>(b, 2);
                (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
            };
            for (o, a) in out.iter_mut().zip(a) {
                let x = a.qs.as_ptr().add(256 * i);
                let mut sumi = _mm512_setzero_si512();
                for k in 0..4 {
                    let p = _mm512_maddubs_epi16(q[k], _mm512_loadu_si512(x.add(64 * k).cast()));
                    sumi = _mm512_dpwssd_epi32(sumi, p, scales[k]);
                }
                let bs = _mm256_loadu_si256(a.bsums.as_ptr().add(16 * i).cast());
                let pairs =
                    _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
                let summ = _mm_madd_epi16(pairs, mins);
                let summ = _mm_add_epi32(summ, _mm_unpackhi_epi64(summ, summ));
                let summ = _mm_cvtsi128_si32(_mm_add_epi32(summ, _mm_srli_epi64(summ, 32)));
                let sumi = _mm512_reduce_add_epi32(sumi);
                *o += *a.d.get_unchecked(i) * (d * sumi as f32 - dmin * summ as f32);
            }
        }
    }
    out
}

/// Q6_K: each half super-block's `ql` (64 bytes) and `qh` (32 bytes, broadcast) give two
/// 512-bit vectors of 6-bit values matching 128 consecutive activations; the `-32` offset is
/// taken out once per super-block as `32·Σ sc·bsum`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q6_k<const N: usize>(w: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
    let nb = w.len() / 210;
    let wp = w.as_ptr();
    let m4 = _mm512_set1_epi8(0x0f);
    let m3 = _mm512_set1_epi8(0x03);
    let half = |lo: i16, hi: i16| {
        _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_set1_epi16(lo)),
            _mm256_set1_epi16(hi),
            1,
        )
    };
    // qh shifts: pair (j=0, j=1) takes bits 0-1 and 2-3, pair (j=2, j=3) bits 4-5 and 6-7.
    let sh01 = half(0, 2);
    let sh23 = half(4, 6);
    let idx: [__m512i; 4] = std::array::from_fn(|h| spread_i16(4 * h as i16, 8));
    let mut out = [0f32; N];
    // SAFETY: super-block i spans w[210i..210i+210], qs[256i..256i+256], bsums[16i..16i+16].
    unsafe {
        for i in 0..nb {
            let b = wp.add(210 * i);
            let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(192).cast()));
            let sc = _mm512_castsi256_si512(sc16);
            let scales = idx.map(|ix| _mm512_permutexvar_epi16(ix, sc));
            let mut q = [_mm512_setzero_si512(); 4];
            for c in 0..2 {
                let ql = _mm512_loadu_si512(b.add(64 * c).cast());
                let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(b.add(128 + 32 * c).cast()));
                let h01 = _mm512_and_si512(_mm512_srlv_epi16(qh, sh01), m3);
                let h23 = _mm512_and_si512(_mm512_srlv_epi16(qh, sh23), m3);
                q[2 * c] = _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_slli_epi16(h01, 4));
                q[2 * c + 1] = _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                    _mm512_slli_epi16(h23, 4),
                );
            }
            let d = _mm_cvtss_f32(f16x4::<1>(b.add(208), 0));
            for (o, a) in out.iter_mut().zip(a) {
                let x = a.qs.as_ptr().add(256 * i);
                let mut sumi = _mm512_setzero_si512();
                for h in 0..4 {
                    let p = _mm512_maddubs_epi16(q[h], _mm512_loadu_si512(x.add(64 * h).cast()));
                    sumi = _mm512_dpwssd_epi32(sumi, p, scales[h]);
                }
                let bs = _mm256_loadu_si256(a.bsums.as_ptr().add(16 * i).cast());
                let corr = _mm256_madd_epi16(sc16, bs);
                let corr = _mm_add_epi32(
                    _mm256_castsi256_si128(corr),
                    _mm256_extracti128_si256(corr, 1),
                );
                let corr = _mm_add_epi32(corr, _mm_unpackhi_epi64(corr, corr));
                let corr = _mm_cvtsi128_si32(_mm_add_epi32(corr, _mm_srli_epi64(corr, 32)));
                let total = _mm512_reduce_add_epi32(sumi) - 32 * corr;
                *o += d * *a.d.get_unchecked(i) * total as f32;
            }
        }
    }
    out
}
