//! Quantized GEMV / batched matmul over raw GGUF blocks, and f32 matmul.
//!
//! Both parallelize over output features (weight rows) with the [`ThreadPool`]. The batched
//! forms walk activation rows in tiles of [`ACT_TILE`] inside each weight row, so a weight row is
//! read from memory once per tile and then served from L1; where the instruction set has a
//! multi-row dot product (AVX-512 VNNI) each weight block is also unpacked once for 4 activation
//! rows and used from registers.

use crate::quant::{ActBuffer, ActRow, QType, dot_row, dot_rows};
use crate::simd::dot_isa;
use crate::{CpuError, Isa, ThreadPool, check_len};

/// Activation rows handled per pass over a weight row in the batched kernels.
pub const ACT_TILE: usize = 8;
/// Smallest row range handed to one thread.
const MIN_ROWS: usize = 16;

/// A borrowed weight matrix of `rows` output features, each `cols` elements stored as `qtype`
/// blocks (GGUF's layout for a `[cols, rows]` tensor).
#[derive(Debug, Clone, Copy)]
pub struct QMatrix<'a> {
    qtype: QType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    bytes: &'a [u8],
}

/// A pointer to an output buffer that threads write disjoint elements of.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: each parallel task writes a disjoint set of indices, and the pool joins before the
// borrow of the buffer ends.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}
impl OutPtr {
    /// # Safety
    /// `i` is in bounds and no other thread writes index `i` during the call.
    unsafe fn write(self, i: usize, v: f32) {
        // SAFETY: upheld by the caller.
        unsafe { *self.0.add(i) = v }
    }
}

impl<'a> QMatrix<'a> {
    /// Wraps `bytes`; an error unless it holds exactly `rows` rows of `cols` elements.
    pub fn new(
        qtype: QType,
        rows: usize,
        cols: usize,
        bytes: &'a [u8],
    ) -> Result<QMatrix<'a>, CpuError> {
        let row_bytes = qtype.row_bytes(cols)?;
        let total = row_bytes.checked_mul(rows).ok_or(CpuError::Invalid {
            what: "QMatrix::new",
            why: format!("{rows} rows of {row_bytes} bytes overflow"),
        })?;
        check_len("QMatrix::new: bytes", total, bytes.len())?;
        Ok(QMatrix {
            qtype,
            rows,
            cols,
            row_bytes,
            bytes,
        })
    }

    /// Storage type.
    pub fn qtype(&self) -> QType {
        self.qtype
    }
    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Raw blocks of row `r`, if `r < rows`.
    pub fn row(&self, r: usize) -> Option<&'a [u8]> {
        (r < self.rows).then(|| self.row_unchecked(r))
    }

    /// Raw blocks of row `r`; callers keep `r < rows`.
    fn row_unchecked(&self, r: usize) -> &'a [u8] {
        &self.bytes[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// `y = W·x` for activation row 0 of `x_q` (quantized for this matrix's type); `y` has
    /// `rows` elements.
    pub fn gemv(&self, x_q: &ActBuffer, y: &mut [f32], pool: &ThreadPool) -> Result<(), CpuError> {
        self.gemv_with(Isa::active(), x_q, y, pool)
    }

    /// [`QMatrix::gemv`] on an explicit instruction set.
    pub fn gemv_with(
        &self,
        isa: Isa,
        x_q: &ActBuffer,
        y: &mut [f32],
        pool: &ThreadPool,
    ) -> Result<(), CpuError> {
        isa.ensure()?;
        self.check_act(x_q)?;
        check_len("gemv: y", self.rows, y.len())?;
        let Some(a) = x_q.row(0) else {
            return Err(CpuError::Invalid {
                what: "gemv",
                why: "activation buffer is empty".into(),
            });
        };
        let out = OutPtr(y.as_mut_ptr());
        pool.for_range(self.rows, MIN_ROWS, &|range| {
            for r in range {
                let v = dot_row(isa, self.qtype, self.row_unchecked(r), &a);
                // SAFETY: r < rows = y.len(); ranges are disjoint.
                unsafe { out.write(r, v) };
            }
        });
        Ok(())
    }

    /// `Y = X·Wᵀ` for every activation row of `x_q`: `y` is `(x_q.rows(), rows)`.
    pub fn matmul(
        &self,
        x_q: &ActBuffer,
        y: &mut [f32],
        pool: &ThreadPool,
    ) -> Result<(), CpuError> {
        self.matmul_with(Isa::active(), x_q, y, pool)
    }

    /// [`QMatrix::matmul`] on an explicit instruction set.
    pub fn matmul_with(
        &self,
        isa: Isa,
        x_q: &ActBuffer,
        y: &mut [f32],
        pool: &ThreadPool,
    ) -> Result<(), CpuError> {
        isa.ensure()?;
        self.check_act(x_q)?;
        let m = x_q.rows();
        check_len("matmul: y", m * self.rows, y.len())?;
        let out = OutPtr(y.as_mut_ptr());
        let n = self.rows;
        pool.for_range(n, MIN_ROWS, &|range| {
            let mut acts = [ActRow::EMPTY; ACT_TILE];
            let mut vals = [0f32; ACT_TILE];
            for t0 in (0..m).step_by(ACT_TILE) {
                let t1 = (t0 + ACT_TILE).min(m);
                for (a, i) in acts.iter_mut().zip(t0..t1) {
                    *a = x_q.row(i).expect("i < m = x_q.rows()");
                }
                let (acts, vals) = (&acts[..t1 - t0], &mut vals[..t1 - t0]);
                for r in range.clone() {
                    dot_rows(isa, self.qtype, self.row_unchecked(r), acts, vals);
                    for (i, &v) in (t0..t1).zip(vals.iter()) {
                        // SAFETY: i < m, r < n, so i*n + r < y.len(); rows r are disjoint.
                        unsafe { out.write(i * n + r, v) };
                    }
                }
            }
        });
        Ok(())
    }

    fn check_act(&self, x_q: &ActBuffer) -> Result<(), CpuError> {
        x_q.check_for(self.qtype)?;
        check_len("QMatrix: activation row length", self.cols, x_q.cols())
    }
}

/// `y = x·wᵀ` in f32: `x` is `(m, k)`, `w` is `(n, k)` (rows = output features), `y` is
/// `(m, n)`. With `m = 1` this is a GEMV.
pub fn matmul_f32(
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    pool: &ThreadPool,
) -> Result<(), CpuError> {
    matmul_f32_with(Isa::active(), x, w, y, m, k, n, pool)
}

/// [`matmul_f32`] on an explicit instruction set.
#[allow(
    clippy::too_many_arguments,
    reason = "three buffers and their three dimensions"
)]
pub fn matmul_f32_with(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    pool: &ThreadPool,
) -> Result<(), CpuError> {
    isa.ensure()?;
    let size = |a: usize, b: usize| {
        a.checked_mul(b).ok_or(CpuError::Invalid {
            what: "matmul_f32",
            why: format!("{a} x {b} overflows"),
        })
    };
    check_len("matmul_f32: x", size(m, k)?, x.len())?;
    check_len("matmul_f32: w", size(n, k)?, w.len())?;
    check_len("matmul_f32: y", size(m, n)?, y.len())?;
    let out = OutPtr(y.as_mut_ptr());
    pool.for_range(n, MIN_ROWS, &|range| {
        for t0 in (0..m).step_by(ACT_TILE) {
            let t1 = (t0 + ACT_TILE).min(m);
            let mut r = range.start;
            while r < range.end {
                let wr = &w[r * k..(r + 1) * k];
                for i in t0..t1 {
                    let v = dot_isa(isa, &x[i * k..(i + 1) * k], wr);
                    // SAFETY: i < m, r < n; rows r are disjoint between tasks.
                    unsafe { out.write(i * n + r, v) };
                }
                r += 1;
            }
        }
    });
    Ok(())
}
