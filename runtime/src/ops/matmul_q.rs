//! The tiled quantized matmul for prefill: the product of GGUF-block weights with many
//! activation rows, each weight unit dequantized into workgroup memory once per tile of
//! activation rows instead of once per row as in a GEMV. Same shapes and activations as
//! [`crate::ops::gemv::gemv`] / [`crate::ops::gemv::gemv_q8`], so it can replace them when
//! there is more than one row.

use crate::error::{Error, Result};
use crate::gpu::{KernelKey, Recorder, View, params};
use crate::ops::gemv::{ActInput, ActQuant, GemvShape, QAct, WType};
use crate::ops::need;

/// How a chunk of several tokens multiplies its weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prefill {
    /// [`matmul_q`]: each weight unit dequantized once per 32 tokens (GPUs).
    Tiled,
    /// The GEMVs over the chunk's rows (CPU-like adapters such as lavapipe, where the
    /// per-row thread split measured 1.0-2.2x faster than the tiled kernel's barriers).
    Gemv,
}

/// The variant for `wtype` on int8 activations (`q8`, the formats [`ActQuant::for_weights`]
/// pairs with one) or f32 activations (every format).
pub fn matmul_q_key(wtype: WType, q8: bool, accumulate: bool) -> KernelKey {
    use params::matmul_q as p;
    let mut key = KernelKey::new("matmul_q")
        .word("WTYPE", wtype.word())
        .word("ACTS", if q8 { "q8" } else { "f32" })
        .uint("TILE_R", p::TILE_R)
        .uint("TILE_T", p::TILE_T)
        .uint("WG_X", p::WG_X)
        .uint("WG_Y", p::WG_Y)
        .flag("ACC", accumulate);
    if q8 && wtype.reads_act_sums() {
        key = key.uint("XS", p::XS);
    }
    key
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    k: u32,
    rows: u32,
    row_bytes: u32,
    m: u32,
    x_stride: u32,
    y_stride: u32,
    y_offset: u32,
    pad: u32,
}

/// Records `y[j, y_offset + r] (+)= W[r, :] . x[j, :]` for all `s.m` rows j. With
/// [`ActInput::Q8`] the sums are gemv_q8's (per unit, in unit order); with
/// [`ActInput::F32`] any weight format is dequantized to f32.
pub fn matmul_q(
    rec: &mut Recorder,
    w: View<'_>,
    x: ActInput<'_>,
    y: View<'_>,
    s: GemvShape,
) -> Result<()> {
    let row_bytes = s.wtype.row_bytes(s.k)?;
    let shape_err = |detail: String| Error::Shape {
        op: "matmul_q",
        detail,
    };
    if s.rows == 0 || s.m == 0 || s.y_offset + s.rows > s.y_stride {
        return Err(shape_err(format!("bad shape {s:?}")));
    }
    need(
        "matmul_q",
        "w",
        &w,
        u64::from(s.rows) * u64::from(row_bytes),
    )?;
    need(
        "matmul_q",
        "y",
        &y,
        u64::from(s.m) * u64::from(s.y_stride) * 4,
    )?;
    let q8 = matches!(x, ActInput::Q8(_));
    let kernel = rec.gpu().kernel(&matmul_q_key(s.wtype, q8, s.accumulate))?;
    let spec = kernel.spec;
    let tile_r = spec.param("TILE_R").unwrap_or(1);
    let tile_t = spec.param("TILE_T").unwrap_or(1);
    let groups = [s.rows.div_ceil(tile_r), s.m.div_ceil(tile_t), 1];
    let params = Params {
        k: s.k,
        rows: s.rows,
        row_bytes,
        m: s.m,
        x_stride: s.k / 4,
        y_stride: s.y_stride,
        y_offset: s.y_offset,
        pad: 0,
    };
    match x {
        ActInput::F32(x) => {
            need("matmul_q", "x", &x, u64::from(s.m) * u64::from(s.k) * 4)?;
            rec.dispatch(&kernel, groups, &params, &[w, x, y])
        }
        ActInput::Q8(x) if ActQuant::for_weights(s.wtype) == Some(x.quant) => {
            let (bq, bd, bs) = QAct::sizes(s.m, s.k);
            need("matmul_q", "xq", &x.xq, bq)?;
            need("matmul_q", "xd", &x.xd, bd)?;
            if s.wtype.reads_act_sums() {
                need("matmul_q", "xs", &x.xs, bs)?;
                rec.dispatch(&kernel, groups, &params, &[w, x.xq, x.xd, x.xs, y])
            } else {
                rec.dispatch(&kernel, groups, &params, &[w, x.xq, x.xd, y])
            }
        }
        ActInput::Q8(x) => Err(shape_err(format!(
            "{:?} weights cannot read activations quantized as {:?}",
            s.wtype, x.quant
        ))),
    }
}
