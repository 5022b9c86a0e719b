//! AVX2 integer dot products with f32 accumulation per block scale. The 32-element types take
//! `N` activation rows per call and unpack each weight block once for all of them (the batched
//! matmul's token tile); `N = 1` is the GEMV. They walk four blocks per step: the four f16
//! weight scales are widened with one `vcvtph2ps` and multiplied with four activation scales at
//! once, then each block's scale is spread over a vector with a permute (a tail of 1-3 blocks
//! takes the same path with fewer lanes).
//!
//! Each kernel is written once over `VNNI`, which picks how bytes are multiplied and summed:
//! `false` ([`vec_dot`], AVX2+FMA+F16C) uses `vpmaddubsw` (u8×i8 → i16 pairs) and `vpmaddwd`
//! (→ i32); `true` ([`vec_dot_n_vnni`], the same plus AVX-VNNI) uses the VEX-encoded `vpdpbusd`
//! (u8×i8, four products summed into each i32 lane) and `vpdpwssd` (i16 pairs multiplied and
//! added to an i32 accumulator). The kernels are `#[inline(always)]` with no target features of
//! their own, so each entry point compiles them for its instruction set.

use std::arch::x86_64::*;

use super::{ActRow, QType, q4k_scale_min};
use crate::simd::x86::hsum;

/// Reads an f16 at `p` and widens it (F16C).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_ptr(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees 2 readable bytes at `p`.
    let h = unsafe { p.cast::<u16>().read_unaligned() };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

/// Σ x·y over 32 bytes, `x` unsigned (≤ 128 so `vpmaddubsw`'s pairs fit i16), `y` signed, as 8
/// f32 partial sums.
///
/// # Safety
/// AVX2 (and AVX-VNNI if `VNNI`) must be available.
#[inline(always)]
unsafe fn mul_sum_u8<const VNNI: bool>(x: __m256i, y: __m256i) -> __m256 {
    // SAFETY: the caller guarantees the instruction sets.
    unsafe {
        let s = if VNNI {
            _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), x, y)
        } else {
            _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1))
        };
        _mm256_cvtepi32_ps(s)
    }
}

/// `acc` plus the sums of adjacent i16 products `p·s` (one per i32 lane).
///
/// # Safety
/// AVX2 (and AVX-VNNI if `VNNI`) must be available.
#[inline(always)]
unsafe fn madd_acc<const VNNI: bool>(acc: __m256i, p: __m256i, s: __m256i) -> __m256i {
    // SAFETY: the caller guarantees the instruction sets.
    unsafe {
        if VNNI {
            _mm256_dpwssd_avx_epi32(acc, p, s)
        } else {
            _mm256_add_epi32(acc, _mm256_madd_epi16(p, s))
        }
    }
}

/// 16 bytes of nibbles → 32 bytes: low nibbles in bytes 0..16, high nibbles in 16..32.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes at `p`.
    let b = unsafe { _mm_loadu_si128(p.cast()) };
    let m = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(b, m);
    let hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
    _mm256_set_m128i(hi, lo)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load(p: *const i8) -> __m256i {
    // SAFETY: the caller guarantees 32 readable bytes at `p`.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// # Safety
/// AVX2+FMA+F16C must be available; `w` holds exactly the blocks for `a`'s length and `a` is in
/// `wtype.act_kind()`'s format.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot(wtype: QType, w: &[u8], a: &ActRow<'_>) -> f32 {
    // SAFETY: the caller's guarantees.
    unsafe { vec_dot_any::<false, 1>(wtype, w, &[*a])[0] }
}

/// The dot products of one weight row with `N` activation rows, on AVX-VNNI's
/// `vpdpbusd`/`vpdpwssd`. The 32-element types unpack each weight block once for all `N` rows;
/// K-quants take the rows one at a time.
///
/// # Safety
/// As [`vec_dot`] for every `a[k]` (all the same length), and AVX-VNNI must be available.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub(super) unsafe fn vec_dot_n_vnni<const N: usize>(
    wtype: QType,
    w: &[u8],
    a: &[ActRow<'_>; N],
) -> [f32; N] {
    // SAFETY: the caller's guarantees.
    unsafe { vec_dot_any::<true, N>(wtype, w, a) }
}

/// # Safety
/// As [`vec_dot`] (`VNNI = false`) or [`vec_dot_n_vnni`] (`VNNI = true`).
#[inline(always)]
unsafe fn vec_dot_any<const VNNI: bool, const N: usize>(
    wtype: QType,
    w: &[u8],
    a: &[ActRow<'_>; N],
) -> [f32; N] {
    // No closures here or below: a closure has no target features, so the intrinsics in it
    // would not be inlined.
    let mut out = [0f32; N];
    // SAFETY: the caller's guarantees make every block read below in bounds.
    unsafe {
        match wtype {
            QType::Q4_0 => out = q4_family::<0, VNNI, N>(w, a),
            QType::Q4_1 => out = q4_family::<1, VNNI, N>(w, a),
            QType::Q5_0 => out = q4_family::<2, VNNI, N>(w, a),
            QType::Q8_0 => out = q8_0::<VNNI, N>(w, a),
            QType::Q4_K => {
                for (o, a) in out.iter_mut().zip(a) {
                    *o = q4_k::<VNNI>(w, a);
                }
            }
            QType::Q6_K => {
                for (o, a) in out.iter_mut().zip(a) {
                    *o = q6_k::<VNNI>(w, a);
                }
            }
            QType::F32 | QType::F16 => unreachable!("float weights are handled by dot_row"),
        }
    }
    out
}

/// The f16s at `p + stride·j` for `j < CNT` as halves 0..CNT of a vector (0 beyond).
///
/// # Safety
/// AVX2 must be available; 2 bytes are readable at `p + stride·j` for `j < CNT`.
#[inline(always)]
unsafe fn f16s<const CNT: usize>(p: *const u8, stride: usize) -> __m128i {
    // SAFETY: the caller's guarantees.
    unsafe {
        let mut v = _mm_cvtsi32_si128(u16_at(p) as i32);
        if CNT > 1 {
            v = _mm_insert_epi16::<1>(v, u16_at(p.add(stride)) as i32);
        }
        if CNT > 2 {
            v = _mm_insert_epi16::<2>(v, u16_at(p.add(2 * stride)) as i32);
        }
        if CNT > 3 {
            v = _mm_insert_epi16::<3>(v, u16_at(p.add(3 * stride)) as i32);
        }
        v
    }
}

/// The little-endian u16 at `p`.
///
/// # Safety
/// 2 bytes are readable at `p`.
#[inline(always)]
unsafe fn u16_at(p: *const u8) -> u16 {
    // SAFETY: the caller's guarantee.
    u16::from_le(unsafe { p.cast::<u16>().read_unaligned() })
}

/// `p[0..CNT]` (0.0 beyond, nothing read past `CNT`).
///
/// # Safety
/// AVX2 must be available; `p[0..CNT]` is readable.
#[inline(always)]
unsafe fn f32s<const CNT: usize>(p: *const f32) -> __m128 {
    // SAFETY: the caller's guarantees.
    unsafe {
        match CNT {
            4 => _mm_loadu_ps(p),
            1 => _mm_load_ss(p),
            2 => _mm_castpd_ps(_mm_load_sd(p.cast())),
            _ => _mm_movelh_ps(_mm_castpd_ps(_mm_load_sd(p.cast())), _mm_load_ss(p.add(2))),
        }
    }
}

/// Lane `j` of `v` in all 8 lanes.
///
/// # Safety
/// AVX2 must be available.
#[inline(always)]
unsafe fn spread(v: __m128, j: usize) -> __m256 {
    // SAFETY: the caller guarantees AVX2.
    unsafe { _mm256_permutevar8x32_ps(_mm256_castps128_ps256(v), _mm256_set1_epi32(j as i32)) }
}

/// Q8_0: signed weights, so `|w|` is the unsigned operand and `w`'s sign moves onto each
/// activation row.
///
/// # Safety
/// As [`vec_dot_any`].
#[inline(always)]
unsafe fn q8_0<const VNNI: bool, const N: usize>(w: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
    // SAFETY: block j spans w[34j..34j+34], qs[32j..32j+32] and d[j] for j < nb.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; N];
        by_four!(w.len() / 34, |i| q8_0_group::<VNNI, N>(
            w.as_ptr(),
            i,
            a,
            &mut acc
        ));
        let mut out = [0f32; N];
        for (o, [a0, a1]) in out.iter_mut().zip(acc) {
            *o = hsum(_mm256_add_ps(a0, a1));
        }
        out
    }
}

/// Blocks `i..i+CNT` of a Q8_0 row into `acc` (two vectors per activation row, even and odd
/// blocks, so two FMA chains are in flight). The `CNT` weight scales are widened with one
/// `vcvtph2ps` and multiplied with the activation scales at once; each block's product is then
/// spread over a vector with a permute.
///
/// # Safety
/// As [`vec_dot_any`], and blocks `i..i+CNT` exist in `w` and every `a[k]`.
#[inline(always)]
unsafe fn q8_0_group<const VNNI: bool, const N: usize, const CNT: usize>(
    wp: *const u8,
    i: usize,
    a: &[ActRow<'_>; N],
    acc: &mut [[__m256; 2]; N],
) {
    // SAFETY: the caller guarantees the instruction sets and that the blocks are in bounds.
    unsafe {
        let b = wp.add(34 * i);
        let dw = _mm_cvtph_ps(f16s::<CNT>(b, 34));
        let mut wq = [_mm256_setzero_si256(); CNT];
        let mut aw = [_mm256_setzero_si256(); CNT];
        for (j, (wq, aw)) in wq.iter_mut().zip(aw.iter_mut()).enumerate() {
            *wq = load(b.add(34 * j + 2).cast());
            *aw = _mm256_sign_epi8(*wq, *wq);
        }
        for (acc, a) in acc.iter_mut().zip(a) {
            let ds = _mm_mul_ps(dw, f32s::<CNT>(a.d.as_ptr().add(i)));
            let x = a.qs.as_ptr().add(32 * i);
            for j in 0..CNT {
                let sx = _mm256_sign_epi8(load(x.add(32 * j)), wq[j]);
                let p = mul_sum_u8::<VNNI>(aw[j], sx);
                acc[j % 2] = _mm256_fmadd_ps(spread(ds, j), p, acc[j % 2]);
            }
        }
    }
}

/// Q4_0 (`K = 0`), Q4_1 (`K = 1`) and Q5_0 (`K = 2`): all are `d·q + m` with unsigned `q`
/// (`m = -8d` for Q4_0, `-16d` for Q5_0), so `Σ w·x = d·dₐ·Σ q·qₐ + m·(dₐ·Σqₐ)`: one u8×i8
/// product without sign fix-ups, and the `m` term from the activation block sums.
///
/// # Safety
/// As [`vec_dot_any`].
#[inline(always)]
unsafe fn q4_family<const K: u8, const VNNI: bool, const N: usize>(
    w: &[u8],
    a: &[ActRow<'_>; N],
) -> [f32; N] {
    let bb = match K {
        0 => 18,
        1 => 20,
        _ => 22,
    };
    // SAFETY: block j spans w[bb·j..bb·(j+1)], qs[32j..32j+32], d[j], s[j] for j < nb.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; N];
        let mut macc = [_mm_setzero_ps(); N];
        by_four!(w.len() / bb, |i| q4_group::<K, VNNI, N>(
            w.as_ptr(),
            i,
            a,
            &mut acc,
            &mut macc
        ));
        // Q4_0 and Q5_0 accumulate d·sₐ: their m is a fixed multiple of d.
        let moff = match K {
            0 => -8.0,
            1 => 1.0,
            _ => -16.0,
        };
        let mut out = [0f32; N];
        for ((o, [a0, a1]), m) in out.iter_mut().zip(acc).zip(macc) {
            let m = _mm_add_ps(m, _mm_movehl_ps(m, m));
            let m = _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)));
            *o = hsum(_mm256_add_ps(a0, a1)) + moff * m;
        }
        out
    }
}

/// Blocks `i..i+CNT` of a Q4_0/Q4_1/Q5_0 row (see [`q4_family`]) into `acc` (even and odd
/// blocks) and the `m` terms into `macc`. The `CNT` scales (and Q4_1's mins) are widened with
/// one `vcvtph2ps` and multiplied with the activation scales at once.
///
/// # Safety
/// As [`vec_dot_any`], and blocks `i..i+CNT` exist in `w` and every `a[k]`.
#[inline(always)]
unsafe fn q4_group<const K: u8, const VNNI: bool, const N: usize, const CNT: usize>(
    wp: *const u8,
    i: usize,
    a: &[ActRow<'_>; N],
    acc: &mut [[__m256; 2]; N],
    macc: &mut [__m128; N],
) {
    let (bb, qoff) = match K {
        0 => (18, 2),
        1 => (20, 4),
        _ => (22, 6),
    };
    // SAFETY: the caller guarantees the instruction sets and that the blocks are in bounds.
    unsafe {
        let b = wp.add(bb * i);
        // Q4_1: [d0..d3] and [m0..m3] from the (d, m) pairs; the others: [d0..d3] only.
        let (dw, mw) = if K == 1 {
            let mut v = _mm_cvtsi32_si128(b.cast::<i32>().read_unaligned());
            if CNT > 1 {
                v = _mm_insert_epi32::<1>(v, b.add(bb).cast::<i32>().read_unaligned());
            }
            if CNT > 2 {
                v = _mm_insert_epi32::<2>(v, b.add(2 * bb).cast::<i32>().read_unaligned());
            }
            if CNT > 3 {
                v = _mm_insert_epi32::<3>(v, b.add(3 * bb).cast::<i32>().read_unaligned());
            }
            let dm = _mm256_permutevar8x32_ps(
                _mm256_cvtph_ps(v),
                _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7),
            );
            (_mm256_castps256_ps128(dm), _mm256_extractf128_ps(dm, 1))
        } else {
            let d = _mm_cvtph_ps(f16s::<CNT>(b, bb));
            (d, d)
        };
        let x10 = _mm256_set1_epi8(0x10);
        let mut q = [_mm256_setzero_si256(); CNT];
        for (j, q) in q.iter_mut().enumerate() {
            let bj = b.add(bb * j);
            *q = nibbles(bj.add(qoff));
            if K == 2 {
                let qh = u32::from_le(bj.add(2).cast::<u32>().read_unaligned());
                *q = _mm256_or_si256(*q, _mm256_and_si256(bits_to_bytes(qh), x10));
            }
        }
        for ((acc, macc), a) in acc.iter_mut().zip(macc.iter_mut()).zip(a) {
            let ds = _mm_mul_ps(dw, f32s::<CNT>(a.d.as_ptr().add(i)));
            *macc = _mm_fmadd_ps(mw, f32s::<CNT>(a.s.as_ptr().add(i)), *macc);
            let x = a.qs.as_ptr().add(32 * i);
            for j in 0..CNT {
                let p = mul_sum_u8::<VNNI>(q[j], load(x.add(32 * j)));
                acc[j % 2] = _mm256_fmadd_ps(spread(ds, j), p, acc[j % 2]);
            }
        }
    }
}

/// Byte `i` of the result is 0xFF where bit `i` of `qh` is set.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn bits_to_bytes(qh: u32) -> __m256i {
    let v = _mm256_set1_epi32(qh as i32);
    let shuf = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(v, shuf);
    let mask = _mm256_set1_epi64x(0x8040201008040201u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(bytes, mask), mask)
}

/// # Safety
/// As [`vec_dot_any`].
#[inline(always)]
unsafe fn q4_k<const VNNI: bool>(w: &[u8], a: &ActRow<'_>) -> f32 {
    let nb = w.len() / 144;
    let (wp, ap) = (w.as_ptr(), a.qs.as_ptr());
    // SAFETY: super-block `i` spans w[144i..144i+144], qs[256i..256i+256], bsums[16i..16i+16].
    unsafe {
        let m4 = _mm256_set1_epi8(0x0f);
        let mut acc = _mm256_setzero_ps();
        let mut accm = 0f32;
        for i in 0..nb {
            let b = wp.add(144 * i);
            let scales = std::slice::from_raw_parts(b.add(4), 12);
            let bs = &a.bsums[16 * i..16 * i + 16];
            let mut summ = 0i32;
            // Two chains, so `vpdpwssd`'s latency overlaps.
            let (mut sumi0, mut sumi1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            for k in 0..4 {
                let (s0, m0) = q4k_scale_min(2 * k, scales);
                let (s1, m1) = q4k_scale_min(2 * k + 1, scales);
                summ += m0 as i32 * (bs[4 * k] as i32 + bs[4 * k + 1] as i32);
                summ += m1 as i32 * (bs[4 * k + 2] as i32 + bs[4 * k + 3] as i32);
                let q = _mm256_loadu_si256(b.add(16 + 32 * k).cast());
                let lo = _mm256_and_si256(q, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                let x = ap.add(256 * i + 64 * k);
                let p0 = _mm256_maddubs_epi16(lo, load(x));
                let p1 = _mm256_maddubs_epi16(hi, load(x.add(32)));
                sumi0 = madd_acc::<VNNI>(sumi0, p0, _mm256_set1_epi16(s0 as i16));
                sumi1 = madd_acc::<VNNI>(sumi1, p1, _mm256_set1_epi16(s1 as i16));
            }
            let sumi = _mm256_add_epi32(sumi0, sumi1);
            let d = f16_ptr(b) * a.d[i];
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            accm += f16_ptr(b.add(2)) * a.d[i] * summ as f32;
        }
        hsum(acc) - accm
    }
}

/// # Safety
/// As [`vec_dot_any`].
#[inline(always)]
unsafe fn q6_k<const VNNI: bool>(w: &[u8], a: &ActRow<'_>) -> f32 {
    let nb = w.len() / 210;
    let (wp, ap) = (w.as_ptr(), a.qs.as_ptr());
    let mut acc = 0f32;
    // SAFETY: super-block `i` spans w[210i..210i+210], qs[256i..256i+256], bsums[16i..16i+16].
    unsafe {
        let m4 = _mm256_set1_epi8(0x0f);
        let (m03, m0c, m30, mc0) = (
            _mm256_set1_epi8(0x03),
            _mm256_set1_epi8(0x0c),
            _mm256_set1_epi8(0x30),
            _mm256_set1_epi8(0xc0u8 as i8),
        );
        for i in 0..nb {
            let b = wp.add(210 * i);
            let sc = std::slice::from_raw_parts(b.add(192).cast::<i8>(), 16);
            // Σ sc·bsum over the 16 groups (the `-32` offset).
            let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(192).cast()));
            let bs = _mm256_loadu_si256(a.bsums.as_ptr().add(16 * i).cast());
            let corr = hsum_i32(_mm256_madd_epi16(sc16, bs));
            // Two chains (even and odd `j`), so `vpdpwssd`'s latency overlaps.
            let mut sumi = [_mm256_setzero_si256(); 2];
            for c in 0..2 {
                let ql0 = _mm256_loadu_si256(b.add(64 * c).cast());
                let ql1 = _mm256_loadu_si256(b.add(64 * c + 32).cast());
                let qh = _mm256_loadu_si256(b.add(128 + 32 * c).cast());
                let q = [
                    _mm256_or_si256(
                        _mm256_and_si256(ql0, m4),
                        _mm256_slli_epi16(_mm256_and_si256(qh, m03), 4),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(ql1, m4),
                        _mm256_slli_epi16(_mm256_and_si256(qh, m0c), 2),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                        _mm256_and_si256(qh, m30),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                        _mm256_srli_epi16(_mm256_and_si256(qh, mc0), 2),
                    ),
                ];
                for (j, q) in q.into_iter().enumerate() {
                    let g = 8 * c + 2 * j;
                    let s = _mm256_set_m128i(
                        _mm_set1_epi16(sc[g + 1] as i16),
                        _mm_set1_epi16(sc[g] as i16),
                    );
                    let p = _mm256_maddubs_epi16(q, load(ap.add(256 * i + 128 * c + 32 * j)));
                    sumi[j % 2] = madd_acc::<VNNI>(sumi[j % 2], p, s);
                }
            }
            let total = hsum_i32(_mm256_add_epi32(sumi[0], sumi[1])) - 32 * corr;
            acc += f16_ptr(b.add(208)) * a.d[i] * total as f32;
        }
    }
    acc
}
