//! Reusable quantized-activation buffer.

use crate::ops::multiversion;
use crate::{CpuError, Isa, QType};

/// The activation formats weight dot products consume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActKind {
    /// Plain f32 (for F32/F16 weights).
    F32,
    /// Blocks of 32 `i8` with an f32 scale `d = amax/127`. `d·Σq` per block is kept too (the
    /// AVX2 kernels use it to fold Q4_0/Q5_0's offset out of the integer loop).
    Q8_0,
    /// Q8_0 plus `d·Σq` per block.
    Q8_1,
    /// Blocks of 256 `i8` with an f32 scale and `Σq` per 16 (`bsums`).
    Q8K,
}

impl ActKind {
    /// Elements per block (1 for F32).
    pub const fn block_size(self) -> usize {
        match self {
            ActKind::F32 => 1,
            ActKind::Q8_0 | ActKind::Q8_1 => 32,
            ActKind::Q8K => 256,
        }
    }
}

/// Activations quantized for one weight type, `rows` rows of `cols` elements.
///
/// Allocate once and reuse: [`ActBuffer::quantize`] only reallocates when a call needs more room
/// than any earlier one (or than [`ActBuffer::with_capacity`] reserved).
#[derive(Debug, Clone)]
pub struct ActBuffer {
    kind: ActKind,
    rows: usize,
    cols: usize,
    /// (rows, cols) quantized values (Q8 kinds).
    qs: Vec<i8>,
    /// (rows, cols / block) scales (Q8 kinds).
    d: Vec<f32>,
    /// (rows, cols / 32) `d·Σq` (Q8_0, Q8_1).
    s: Vec<f32>,
    /// (rows, cols / 16) `Σq` per 16 (Q8K).
    bsums: Vec<i16>,
    /// (rows, cols) plain copy (F32).
    f: Vec<f32>,
}

/// One row of an [`ActBuffer`].
#[derive(Debug, Clone, Copy)]
pub struct ActRow<'a> {
    pub qs: &'a [i8],
    pub d: &'a [f32],
    pub s: &'a [f32],
    pub bsums: &'a [i16],
    pub f: &'a [f32],
}

impl ActRow<'_> {
    /// A row of no elements (a placeholder in fixed-size tiles).
    pub const EMPTY: ActRow<'static> = ActRow {
        qs: &[],
        d: &[],
        s: &[],
        bsums: &[],
        f: &[],
    };
}

impl Default for ActBuffer {
    fn default() -> Self {
        ActBuffer::new()
    }
}

impl ActBuffer {
    /// An empty buffer (it grows on first use).
    pub fn new() -> ActBuffer {
        ActBuffer {
            kind: ActKind::F32,
            rows: 0,
            cols: 0,
            qs: Vec::new(),
            d: Vec::new(),
            s: Vec::new(),
            bsums: Vec::new(),
            f: Vec::new(),
        }
    }

    /// A buffer with room for `rows × cols` activations of any kind, so later calls up to that
    /// size never allocate.
    pub fn with_capacity(rows: usize, cols: usize) -> ActBuffer {
        let n = rows * cols;
        ActBuffer {
            qs: Vec::with_capacity(n),
            d: Vec::with_capacity(n / 32),
            s: Vec::with_capacity(n / 32),
            bsums: Vec::with_capacity(n / 16),
            f: Vec::with_capacity(n),
            ..ActBuffer::new()
        }
    }

    /// The format held.
    pub fn kind(&self) -> ActKind {
        self.kind
    }
    /// Rows held.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Elements per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Quantizes one row `x` for weights of type `wtype`.
    pub fn quantize(&mut self, x: &[f32], wtype: QType) -> Result<(), CpuError> {
        self.quantize_rows(x, 1, wtype)
    }

    /// Quantizes `rows` rows (`x` is `(rows, cols)` row-major) for weights of type `wtype`.
    pub fn quantize_rows(&mut self, x: &[f32], rows: usize, wtype: QType) -> Result<(), CpuError> {
        let kind = wtype.act_kind();
        if rows == 0 || !x.len().is_multiple_of(rows) {
            return Err(CpuError::Invalid {
                what: "ActBuffer::quantize_rows",
                why: format!("{} values do not split into {rows} rows", x.len()),
            });
        }
        let cols = x.len() / rows;
        // K-quant and 32-blocks are checked against the weight type's block (K-quants need 256).
        let block = wtype.block_size().max(kind.block_size());
        if !cols.is_multiple_of(block) {
            return Err(CpuError::BlockAlign {
                what: "activation row length",
                qtype: wtype,
                len: cols,
                block,
            });
        }
        self.kind = kind;
        self.rows = rows;
        self.cols = cols;
        let n = x.len();
        match kind {
            ActKind::F32 => {
                self.f.clear();
                self.f.extend_from_slice(x);
            }
            ActKind::Q8_0 | ActKind::Q8_1 => {
                self.qs.resize(n, 0);
                self.d.resize(n / 32, 0.0);
                self.s.resize(n / 32, 0.0);
                let q8_1 = kind == ActKind::Q8_1;
                multiversion!(
                    Isa::active(),
                    |x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32], q8_1: bool| {
                        for (((xb, qb), d), s) in x
                            .chunks_exact(32)
                            .zip(qs.chunks_exact_mut(32))
                            .zip(d.iter_mut())
                            .zip(s.iter_mut())
                        {
                            let (bd, sum) = quantize_block(xb, qb);
                            // llama.cpp stores the scale (and Q8_1's scaled sum) as f16: round them
                            // the same way so both runtimes form the same products.
                            let d16 = round_f16(bd);
                            *d = d16;
                            *s = if q8_1 {
                                round_f16(bd * sum as f32)
                            } else {
                                d16 * sum as f32
                            };
                        }
                    }(
                        x,
                        &mut self.qs,
                        &mut self.d,
                        &mut self.s,
                        q8_1
                    )
                );
            }
            ActKind::Q8K => {
                self.qs.resize(n, 0);
                self.d.resize(n / 256, 0.0);
                self.bsums.resize(n / 16, 0);
                multiversion!(
                    Isa::active(),
                    |x: &[f32], qs: &mut [i8], d: &mut [f32], bsums: &mut [i16]| {
                        for (((xb, qb), d), bs) in x
                            .chunks_exact(256)
                            .zip(qs.chunks_exact_mut(256))
                            .zip(d.iter_mut())
                            .zip(bsums.chunks_exact_mut(16))
                        {
                            *d = quantize_block_k(xb, qb);
                            for (b, q) in bs.iter_mut().zip(qb.chunks_exact(16)) {
                                *b = q.iter().map(|&v| v as i16).sum();
                            }
                        }
                    }(
                        x,
                        &mut self.qs,
                        &mut self.d,
                        &mut self.bsums
                    )
                );
            }
        }
        Ok(())
    }

    /// Row `r`, if held.
    pub fn row(&self, r: usize) -> Option<ActRow<'_>> {
        if r >= self.rows {
            return None;
        }
        let c = self.cols;
        Some(match self.kind {
            ActKind::F32 => ActRow {
                qs: &[],
                d: &[],
                s: &[],
                bsums: &[],
                f: &self.f[r * c..(r + 1) * c],
            },
            ActKind::Q8_0 | ActKind::Q8_1 => {
                let nb = c / 32;
                ActRow {
                    qs: &self.qs[r * c..(r + 1) * c],
                    d: &self.d[r * nb..(r + 1) * nb],
                    s: &self.s[r * nb..(r + 1) * nb],
                    bsums: &[],
                    f: &[],
                }
            }
            ActKind::Q8K => {
                let nb = c / 256;
                ActRow {
                    qs: &self.qs[r * c..(r + 1) * c],
                    d: &self.d[r * nb..(r + 1) * nb],
                    s: &[],
                    bsums: &self.bsums[r * c / 16..(r + 1) * c / 16],
                    f: &[],
                }
            }
        })
    }

    /// An error unless this buffer holds activations for `wtype`.
    pub(crate) fn check_for(&self, wtype: QType) -> Result<(), CpuError> {
        if self.rows == 0 {
            return Err(CpuError::Invalid {
                what: "ActBuffer",
                why: "nothing quantized yet; call quantize first".into(),
            });
        }
        if self.kind != wtype.act_kind() || !self.cols.is_multiple_of(wtype.block_size()) {
            return Err(CpuError::Invalid {
                what: "ActBuffer",
                why: format!(
                    "holds {:?} activations, but {wtype:?} weights need {:?}; quantize for the weight type",
                    self.kind,
                    wtype.act_kind()
                ),
            });
        }
        Ok(())
    }
}

#[inline(always)]
fn round_f16(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

/// `max |x[i]|` (0 for an empty slice; NaNs are skipped), in 8 independent lanes so it
/// vectorizes (a running `f32::max` does not: its NaN rule makes the order matter to LLVM).
#[inline(always)]
fn abs_max(x: &[f32]) -> f32 {
    let mut m = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (m, &v) in m.iter_mut().zip(c) {
            let a = v.abs();
            *m = if a > *m { a } else { *m };
        }
    }
    for (m, &v) in m.iter_mut().zip(rest) {
        let a = v.abs();
        *m = if a > *m { a } else { *m };
    }
    m.into_iter().fold(0f32, |a, b| if b > a { b } else { a })
}

/// Quantizes a block of 32 to `i8` with `d = amax/127` as llama.cpp's SIMD quantizers do it
/// (`127/amax` as the inverse, ties to even); returns `(d, Σq)`. Inlined into the
/// instruction-set copies of the callers (ties-to-even rounding is one instruction with SSE4.1).
#[inline(always)]
fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let amax = abs_max(x);
    let d = amax / 127.0;
    let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in q.iter_mut().zip(x) {
        let r = (v * id).round_ties_even().clamp(-127.0, 127.0) as i8;
        *q = r;
        sum += r as i32;
    }
    (d, sum)
}

/// Quantizes a Q8_K block of 256 as ggml does: the element of largest magnitude, with its sign,
/// maps to -127 (`iscale = -127/max`, ties to even, capped at 127); returns `d = 1/iscale`.
#[inline(always)]
fn quantize_block_k(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = abs_max(x);
    // The first element of that magnitude, with its sign.
    let Some(&max) = x.iter().find(|v| amax > 0.0 && v.abs() == amax) else {
        q.fill(0);
        return 0.0;
    };
    let iscale = -127.0 / max;
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (iscale * v).round_ties_even().min(127.0) as i8;
    }
    1.0 / iscale
}
