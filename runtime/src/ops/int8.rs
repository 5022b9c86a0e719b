//! The W8A8 GEMV with per-row scales: int8 weights with one f32 scale per output row, int8
//! activations with one scale per activation row (quantized here by `quantize_rows`), and the
//! int8 dot products through `dot4I8Packed` where the device has it.

use crate::error::{Error, Result};
use crate::gpu::{KernelKey, Recorder, View, params};
use crate::ops::gemv::{IntDot, Split};
use crate::ops::need;
use crate::ops::reduce::Combine;

/// Longest row the i32 accumulation holds exactly: |q_w · q_x| <= 128 · 127 per product.
pub const MAX_K: u32 = (i32::MAX as u32) / (128 * 127) / 4 * 4;

/// Rows of int8 values packed four per u32, lowest byte first, with one f32 scale per row.
#[derive(Clone, Copy, Debug)]
pub struct I8Rows<'a> {
    /// (rows, k / 4) words.
    pub q: View<'a>,
    /// (rows) scales: row r holds `d[r] * q[r, :]`.
    pub d: View<'a>,
}

pub fn quantize_row_key(combine: Combine) -> KernelKey {
    KernelKey::new("quantize_row")
        .uint("WG_SIZE", params::quantize_row::WG_SIZE)
        .flag("SUBGROUP", combine == Combine::Subgroup)
}

pub fn gemv_w8a8_key(split: Split, dot: IntDot) -> KernelKey {
    let key = KernelKey::new("gemv_w8a8")
        .uint("WG_SIZE", params::gemv_w8a8::WG_SIZE)
        .flag("DOT4", dot == IntDot::Packed);
    split.key(key)
}

fn check_k(op: &'static str, k: u32) -> Result<()> {
    if k == 0 || !k.is_multiple_of(4) || k > MAX_K {
        return Err(Error::Shape {
            op,
            detail: format!("rows of {k}: need a multiple of 4 in 4..={MAX_K}"),
        });
    }
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct QuantizeParams {
    k: u32,
    m: u32,
}

/// Quantizes `x` (m, k) f32 to int8 with one scale per row: `out.d[r] = max |x[r, :]| / 127`,
/// `out.q[r, i] = round(x[r, i] / out.d[r])` (ties to even). `k` must be a multiple of 4.
pub fn quantize_rows(
    rec: &mut Recorder,
    combine: Combine,
    x: View<'_>,
    out: I8Rows<'_>,
    m: u32,
    k: u32,
) -> Result<()> {
    check_k("quantize_row", k)?;
    need("quantize_row", "x", &x, u64::from(m) * u64::from(k) * 4)?;
    need("quantize_row", "q", &out.q, u64::from(m) * u64::from(k))?;
    need("quantize_row", "d", &out.d, u64::from(m) * 4)?;
    let kernel = rec.gpu().kernel(&quantize_row_key(combine))?;
    let groups = rec.gpu().grid(m.max(1));
    rec.dispatch(
        &kernel,
        groups,
        &QuantizeParams { k, m },
        &[x, out.q, out.d],
    )
}

/// Shape of one W8A8 gemv: `m` activation rows of length `k` against `rows` weight rows,
/// writing columns `y_offset..y_offset + rows` of output rows `y_stride` floats apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct W8A8Shape {
    pub k: u32,
    pub rows: u32,
    pub m: u32,
    pub y_stride: u32,
    pub y_offset: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GemvParams {
    k4: u32,
    rows: u32,
    m: u32,
    y_stride: u32,
    y_offset: u32,
}

/// Records `y[j, y_offset + r] = w.d[r] * x.d[j] * (W[r, :] . X[j, :])` with the int8 rows of
/// `w` (rows, k) and `x` (m, k), the dot product exact in i32.
pub fn gemv_w8a8(
    rec: &mut Recorder,
    split: Split,
    dot: IntDot,
    w: I8Rows<'_>,
    x: I8Rows<'_>,
    y: View<'_>,
    s: W8A8Shape,
) -> Result<()> {
    check_k("gemv_w8a8", s.k)?;
    if s.rows == 0 || s.m == 0 || u64::from(s.y_offset) + u64::from(s.rows) > u64::from(s.y_stride)
    {
        return Err(Error::Shape {
            op: "gemv_w8a8",
            detail: format!("bad shape {s:?}"),
        });
    }
    need("gemv_w8a8", "w.q", &w.q, u64::from(s.rows) * u64::from(s.k))?;
    need("gemv_w8a8", "w.d", &w.d, u64::from(s.rows) * 4)?;
    need("gemv_w8a8", "x.q", &x.q, u64::from(s.m) * u64::from(s.k))?;
    need("gemv_w8a8", "x.d", &x.d, u64::from(s.m) * 4)?;
    need(
        "gemv_w8a8",
        "y",
        &y,
        u64::from(s.m) * u64::from(s.y_stride) * 4,
    )?;
    let kernel = rec.gpu().kernel(&gemv_w8a8_key(split, dot))?;
    let groups = match split {
        Split::Group(_) => rec.gpu().grid(s.rows),
        Split::Thread => rec
            .gpu()
            .grid(s.rows.div_ceil(kernel.spec.workgroup_size[0])),
    };
    let params = GemvParams {
        k4: s.k / 4,
        rows: s.rows,
        m: s.m,
        y_stride: s.y_stride,
        y_offset: s.y_offset,
    };
    rec.dispatch(&kernel, groups, &params, &[w.q, w.d, x.q, x.d, y])
}
