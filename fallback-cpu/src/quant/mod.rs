//! GGUF block formats (byte-exact with ggml), activation quantization and the integer dot
//! products the quantized GEMV is built on.
//!
//! Block layouts (little-endian, `d`/`m` are f16):
//!
//! | type | elems | bytes | layout | value |
//! |---|---|---|---|---|
//! | Q4_0 | 32 | 18 | `d, qs[16]` | `(nib - 8)·d`; element `j` is the low nibble of `qs[j]`, `j+16` the high |
//! | Q4_1 | 32 | 20 | `d, m, qs[16]` | `nib·d + m` |
//! | Q5_0 | 32 | 22 | `d, qh: u32, qs[16]` | `((nib | bit_j(qh)<<4) - 16)·d` |
//! | Q8_0 | 32 | 34 | `d, qs: i8[32]` | `q·d` |
//! | Q4_K | 256 | 144 | `d, dmin, scales[12], qs[128]` | 8 sub-blocks of 32 with 6-bit scale `sc` and min `m`: `d·sc·nib - dmin·m` |
//! | Q6_K | 256 | 210 | `ql[128], qh[64], scales: i8[16], d` | 16 groups of 16: `d·sc·(q6 - 32)` |
//!
//! Activations are quantized the way fast CPU runtimes do it ([`ActBuffer`]): to Q8_0-style
//! blocks of 32 (`d = amax/127`) for Q4_0/Q5_0/Q8_0 weights, Q8_1 (plus `d·Σq` per block, which
//! folds Q4_1's `m` in) for Q4_1, and Q8_K (256 per block, `d` in f32, sums per 16) for K-quants.
//! The dot products then run in integers and scale once per block.

/// Walks a row of `nb` 32-element blocks four at a time, then the 1-3 left, calling
/// `$group::<.., CNT>(.., i, ..)` with the step's first block `i` (the x86 kernels' loop; defined
/// before their modules so both can use it).
#[cfg(target_arch = "x86_64")]
macro_rules! by_four {
    ($nb:expr, |$i:ident| $group:ident::<$($g:ty),*>($($arg:expr),*)) => {{
        let nb = $nb;
        let mut $i = 0;
        while $i + 4 <= nb {
            $group::<$($g,)* 4>($($arg),*);
            $i += 4;
        }
        match nb - $i {
            1 => $group::<$($g,)* 1>($($arg),*),
            2 => $group::<$($g,)* 2>($($arg),*),
            3 => $group::<$($g,)* 3>($($arg),*),
            _ => {}
        }
    }};
}

mod act;
#[cfg(target_arch = "aarch64")]
mod neon;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod vnni;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm;
#[cfg(target_arch = "x86_64")]
mod x86;

use half::f16;

pub use act::{ActBuffer, ActKind, ActRow};

use crate::{CpuError, Isa, check_len};

/// A weight storage type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types, reason = "ggml's names")]
pub enum QType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
    Q4_K,
    Q6_K,
}

impl QType {
    /// Every supported type.
    pub const ALL: [QType; 8] = [
        QType::F32,
        QType::F16,
        QType::Q4_0,
        QType::Q4_1,
        QType::Q5_0,
        QType::Q8_0,
        QType::Q4_K,
        QType::Q6_K,
    ];

    /// Elements per block (1 for F32/F16).
    pub const fn block_size(self) -> usize {
        match self {
            QType::F32 | QType::F16 => 1,
            QType::Q4_0 | QType::Q4_1 | QType::Q5_0 | QType::Q8_0 => 32,
            QType::Q4_K | QType::Q6_K => 256,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            QType::F32 => 4,
            QType::F16 => 2,
            QType::Q4_0 => 18,
            QType::Q4_1 => 20,
            QType::Q5_0 => 22,
            QType::Q8_0 => 34,
            QType::Q4_K => 144,
            QType::Q6_K => 210,
        }
    }

    /// Byte offsets within a block of its f16 scales and minimums: the only fields of a
    /// quantized block that can hold a NaN or an infinity (its quants are integers). For F16
    /// the element itself; F32 is checked as a whole.
    const fn f16_fields(self) -> &'static [usize] {
        match self {
            QType::F32 => &[],
            QType::F16 | QType::Q4_0 | QType::Q5_0 | QType::Q8_0 => &[0],
            QType::Q4_1 | QType::Q4_K => &[0, 2],
            QType::Q6_K => &[208],
        }
    }

    /// The first block of `blocks` (whole blocks of this type) that holds a NaN or an infinity
    /// (as an element index: the block's first element), if any. A quantized block with finite
    /// scales dequantizes to finite values.
    pub fn first_non_finite(self, blocks: &[u8]) -> Option<usize> {
        let bytes = self.block_bytes();
        let fields = self.f16_fields();
        blocks
            .chunks_exact(bytes)
            .position(|b| {
                if self == QType::F32 {
                    return !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite();
                }
                // An f16 whose exponent bits are all ones is an infinity or a NaN.
                fields
                    .iter()
                    .any(|&at| u16::from_le_bytes([b[at], b[at + 1]]) & 0x7c00 == 0x7c00)
            })
            .map(|block| block * self.block_size())
    }

    /// ggml's numeric type id (as stored in GGUF tensor infos).
    pub const fn ggml_id(self) -> u32 {
        match self {
            QType::F32 => 0,
            QType::F16 => 1,
            QType::Q4_0 => 2,
            QType::Q4_1 => 3,
            QType::Q5_0 => 6,
            QType::Q8_0 => 8,
            QType::Q4_K => 12,
            QType::Q6_K => 14,
        }
    }

    /// The type with ggml id `id`, if supported.
    pub fn from_ggml_id(id: u32) -> Option<QType> {
        QType::ALL.into_iter().find(|t| t.ggml_id() == id)
    }

    /// The activation format this weight type's dot product consumes.
    pub const fn act_kind(self) -> ActKind {
        match self {
            QType::F32 | QType::F16 => ActKind::F32,
            QType::Q4_0 | QType::Q5_0 | QType::Q8_0 => ActKind::Q8_0,
            QType::Q4_1 => ActKind::Q8_1,
            QType::Q4_K | QType::Q6_K => ActKind::Q8K,
        }
    }

    /// Bytes of a row of `n` elements; an error unless `n` is a whole number of blocks.
    pub fn row_bytes(self, n: usize) -> Result<usize, CpuError> {
        if !n.is_multiple_of(self.block_size()) {
            return Err(CpuError::BlockAlign {
                what: "row length",
                qtype: self,
                len: n,
                block: self.block_size(),
            });
        }
        Ok(n / self.block_size() * self.block_bytes())
    }
}

#[inline]
pub(crate) fn f16_at(b: &[u8], o: usize) -> f32 {
    f16::from_le_bytes([b[o], b[o + 1]]).to_f32()
}

/// The 6-bit (scale, min) pair `j` of a Q4_K block's 12 packed scale bytes.
#[inline]
pub(crate) fn q4k_scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Decodes a row of `out.len()` elements stored as `qtype` blocks in `bytes`.
pub fn dequantize_row(qtype: QType, bytes: &[u8], out: &mut [f32]) -> Result<(), CpuError> {
    let nbytes = qtype.row_bytes(out.len())?;
    check_len("dequantize_row: bytes", nbytes, bytes.len())?;
    let bs = qtype.block_size();
    let bb = qtype.block_bytes();
    match qtype {
        QType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        QType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        _ => {
            for (y, b) in out.chunks_exact_mut(bs).zip(bytes.chunks_exact(bb)) {
                dequantize_block(qtype, b, y);
            }
        }
    }
    Ok(())
}

fn dequantize_block(qtype: QType, b: &[u8], y: &mut [f32]) {
    match qtype {
        QType::Q4_0 => {
            let d = f16_at(b, 0);
            for j in 0..16 {
                y[j] = ((b[2 + j] & 15) as i32 - 8) as f32 * d;
                y[j + 16] = ((b[2 + j] >> 4) as i32 - 8) as f32 * d;
            }
        }
        QType::Q4_1 => {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            for j in 0..16 {
                y[j] = (b[4 + j] & 15) as f32 * d + m;
                y[j + 16] = (b[4 + j] >> 4) as f32 * d + m;
            }
        }
        QType::Q5_0 => {
            let d = f16_at(b, 0);
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            for j in 0..16 {
                let h0 = ((qh >> j) & 1) << 4;
                let h1 = ((qh >> (j + 16)) & 1) << 4;
                y[j] = (((b[6 + j] & 15) as u32 | h0) as i32 - 16) as f32 * d;
                y[j + 16] = (((b[6 + j] >> 4) as u32 | h1) as i32 - 16) as f32 * d;
            }
        }
        QType::Q8_0 => {
            let d = f16_at(b, 0);
            for j in 0..32 {
                y[j] = b[2 + j] as i8 as f32 * d;
            }
        }
        QType::Q4_K => {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let (scales, qs) = (&b[4..16], &b[16..144]);
            for k in 0..4 {
                let (s0, m0) = q4k_scale_min(2 * k, scales);
                let (s1, m1) = q4k_scale_min(2 * k + 1, scales);
                let (d0, mm0) = (d * s0 as f32, dmin * m0 as f32);
                let (d1, mm1) = (d * s1 as f32, dmin * m1 as f32);
                for l in 0..32 {
                    let q = qs[32 * k + l];
                    y[64 * k + l] = d0 * (q & 15) as f32 - mm0;
                    y[64 * k + 32 + l] = d1 * (q >> 4) as f32 - mm1;
                }
            }
        }
        QType::Q6_K => {
            let d = f16_at(b, 208);
            for c in 0..2 {
                let ql = &b[64 * c..64 * c + 64];
                let qh = &b[128 + 32 * c..128 + 32 * c + 32];
                let sc = &b[192 + 8 * c..192 + 8 * c + 8];
                for l in 0..32 {
                    let is = l / 16;
                    let q = q6k_quad(ql, qh, l);
                    for (j, q) in q.into_iter().enumerate() {
                        let s = sc[is + 2 * j] as i8 as f32;
                        y[128 * c + 32 * j + l] = d * s * (q as i32 - 32) as f32;
                    }
                }
            }
        }
        QType::F32 | QType::F16 => unreachable!("handled by dequantize_row"),
    }
}

/// The four unsigned 6-bit values at `l`, `l+32`, `l+64`, `l+96` of a Q6_K half-block.
#[inline]
pub(crate) fn q6k_quad(ql: &[u8], qh: &[u8], l: usize) -> [u8; 4] {
    [
        (ql[l] & 15) | ((qh[l] & 3) << 4),
        (ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4),
        (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
        (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
    ]
}

/// Dot product of one weight row (raw `wtype` blocks) with activation row `row` of `act`, on
/// `isa`. `act` must have been quantized for `wtype` with the same row length.
pub fn vec_dot(
    isa: Isa,
    wtype: QType,
    w: &[u8],
    act: &ActBuffer,
    row: usize,
) -> Result<f32, CpuError> {
    isa.ensure()?;
    act.check_for(wtype)?;
    check_len(
        "vec_dot: weight row bytes",
        wtype.row_bytes(act.cols())?,
        w.len(),
    )?;
    let a = act.row(row).ok_or(CpuError::Invalid {
        what: "vec_dot: row",
        why: format!("row {row} >= {} quantized rows", act.rows()),
    })?;
    Ok(dot_row(isa, wtype, w, &a))
}

/// Unchecked dot product: `w` holds exactly one row's blocks for `a`'s length, `isa` is
/// available and `a` is in `wtype.act_kind()`'s format.
pub(crate) fn dot_row(isa: Isa, wtype: QType, w: &[u8], a: &ActRow<'_>) -> f32 {
    match wtype {
        QType::F32 => {
            let mut s = 0.0;
            let mut buf = [0f32; 64];
            for (c, x) in w.chunks(256).zip(a.f.chunks(64)) {
                let t = &mut buf[..x.len()];
                for (t, b) in t.iter_mut().zip(c.chunks_exact(4)) {
                    *t = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
                s += crate::simd::dot_isa(isa, x, t);
            }
            s
        }
        QType::F16 => {
            let mut s = 0.0;
            let mut buf = [f16::ZERO; 64];
            for (c, x) in w.chunks(128).zip(a.f.chunks(64)) {
                let t = &mut buf[..x.len()];
                for (t, b) in t.iter_mut().zip(c.chunks_exact(2)) {
                    *t = f16::from_le_bytes([b[0], b[1]]);
                }
                s += crate::simd::dot_f16_isa(isa, x, t);
            }
            s
        }
        _ => dispatch_q(isa, wtype, w, a),
    }
}

fn dispatch_q(isa: Isa, wtype: QType, w: &[u8], a: &ActRow<'_>) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the Isa was checked available (AVX-512 F/BW/VL/VNNI, AVX2+FMA+F16C).
        Isa::Avx512Vnni => unsafe { vnni::vec_dot_n::<1>(wtype, w, &[*a])[0] },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the Isa was checked available (AVX-VNNI, AVX2+FMA+F16C).
        Isa::AvxVnni => unsafe { x86::vec_dot_n_vnni::<1>(wtype, w, &[*a])[0] },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the Isa was checked available (AVX2+FMA+F16C).
        Isa::Avx2Fma => unsafe { x86::vec_dot(wtype, w, a) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON was checked available.
        Isa::Neon => unsafe { neon::vec_dot(wtype, w, a) },
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Isa::Simd128 => wasm::vec_dot(wtype, w, a),
        _ => scalar::vec_dot(wtype, w, a),
    }
}

/// Activation rows one call of [`dot_rows`]'s widest kernel takes (the matmul's token tile).
#[cfg(target_arch = "x86_64")]
pub(crate) const DOT_ROWS: usize = 4;

/// `out[k] = w·a[k]` for every activation row in `a` (unchecked as [`dot_row`]; `out` is as long
/// as `a`). Where the instruction set has a multi-row kernel (AVX-512 VNNI, AVX-VNNI) the weight
/// blocks are unpacked once per 4 activation rows; elsewhere this is one [`dot_row`] per row.
pub(crate) fn dot_rows(isa: Isa, wtype: QType, w: &[u8], a: &[ActRow<'_>], out: &mut [f32]) {
    debug_assert_eq!(a.len(), out.len());
    /// Runs the multi-row kernel `$f` over `a` in tiles of up to [`DOT_ROWS`] rows.
    #[cfg(target_arch = "x86_64")]
    macro_rules! by_tiles {
        ($f:path) => {{
            for (a, out) in a.chunks(DOT_ROWS).zip(out.chunks_mut(DOT_ROWS)) {
                // SAFETY: the Isa was checked available; the caller guarantees the row formats.
                unsafe {
                    match *a {
                        [a0, a1, a2, a3] => out.copy_from_slice(&$f(wtype, w, &[a0, a1, a2, a3])),
                        [a0, a1, a2] => out.copy_from_slice(&$f(wtype, w, &[a0, a1, a2])),
                        [a0, a1] => out.copy_from_slice(&$f(wtype, w, &[a0, a1])),
                        _ => out[0] = $f(wtype, w, &[a[0]])[0],
                    }
                }
            }
            return;
        }};
    }
    #[cfg(target_arch = "x86_64")]
    if !matches!(wtype, QType::F32 | QType::F16) {
        match isa {
            Isa::Avx512Vnni => by_tiles!(vnni::vec_dot_n),
            Isa::AvxVnni => by_tiles!(x86::vec_dot_n_vnni),
            _ => {}
        }
    }
    for (a, o) in a.iter().zip(out) {
        *o = dot_row(isa, wtype, w, a);
    }
}
