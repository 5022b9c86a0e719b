//! The fused gated FFN GEMV: `out = act(Wg x) * (Wu x)` in one dispatch, with the gate and up
//! weights in one buffer (gate rows, then up rows from a byte offset) and the activations
//! int8-quantized for the weights' type (as `gemv_q8` reads them) or f32 (as `gemv` does, for
//! f16 and f32 weights).

use crate::error::{Error, Result};
use crate::gpu::{KernelKey, Recorder, View, params};
use crate::ops::activation::Act;
use crate::ops::gemv::{ActInput, ActQuant, QAct, Split, WType};
use crate::ops::need;

/// Shape of one fused gated GEMV over one part of the weights: `m` activation rows of length
/// `k`, `rows` rows of each of Wg and Wu (Wu's first row `up_offset` bytes into the weight
/// buffer), writing columns `y_offset..y_offset + rows` of output rows `y_stride` floats apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatedShape {
    pub wtype: WType,
    pub act: Act,
    pub k: u32,
    pub rows: u32,
    pub m: u32,
    pub up_offset: u32,
    pub y_stride: u32,
    pub y_offset: u32,
}

pub fn gemv_gated_key(wtype: WType, act: Act, split: Split) -> KernelKey {
    let mut key = KernelKey::new("gemv_gated")
        .word("WTYPE", wtype.word())
        .word("ACT", act.word())
        .word(
            "ACTS",
            if ActQuant::for_weights(wtype).is_some() {
                "q8"
            } else {
                "f32"
            },
        )
        .uint("WG_SIZE", params::gemv_gated::WG_SIZE);
    if wtype.reads_act_sums() {
        key = key.uint("XS", params::gemv_gated::XS);
    }
    split.key(key)
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
    up_offset: u32,
}

/// Records `out[j, y_offset + r] = act(Wg[r, :] . x[j, :]) * (Wu[r, :] . x[j, :])`.
pub fn gemv_gated(
    rec: &mut Recorder,
    split: Split,
    w: View<'_>,
    x: ActInput<'_>,
    out: View<'_>,
    s: GatedShape,
) -> Result<()> {
    let row_bytes = s.wtype.row_bytes(s.k)?;
    let shape_err = |detail: String| Error::Shape {
        op: "gemv_gated",
        detail,
    };
    let half = u64::from(s.rows) * u64::from(row_bytes);
    if s.rows == 0 || s.m == 0 || s.y_offset + s.rows > s.y_stride {
        return Err(shape_err(format!("bad shape {s:?}")));
    }
    if u64::from(s.up_offset) < half || !s.up_offset.is_multiple_of(4) {
        return Err(shape_err(format!(
            "up rows at byte {} overlap the {half} bytes of gate rows or are not 4-byte aligned",
            s.up_offset
        )));
    }
    need("gemv_gated", "w", &w, u64::from(s.up_offset) + half)?;
    need(
        "gemv_gated",
        "out",
        &out,
        u64::from(s.m) * u64::from(s.y_stride) * 4,
    )?;
    let kernel = rec.gpu().kernel(&gemv_gated_key(s.wtype, s.act, split))?;
    let groups = match split {
        Split::Group(_) => rec.gpu().grid(s.rows),
        Split::Thread => rec
            .gpu()
            .grid(s.rows.div_ceil(kernel.spec.workgroup_size[0])),
    };
    let params = Params {
        k: s.k,
        rows: s.rows,
        row_bytes,
        m: s.m,
        x_stride: s.k / 4,
        y_stride: s.y_stride,
        y_offset: s.y_offset,
        up_offset: s.up_offset,
    };
    match (x, ActQuant::for_weights(s.wtype)) {
        (ActInput::F32(x), None) => {
            need("gemv_gated", "x", &x, u64::from(s.m) * u64::from(s.k) * 4)?;
            rec.dispatch(&kernel, groups, &params, &[w, x, out])
        }
        (ActInput::Q8(x), Some(quant)) if x.quant == quant => {
            let (bq, bd, bs) = QAct::sizes(s.m, s.k);
            need("gemv_gated", "xq", &x.xq, bq)?;
            need("gemv_gated", "xd", &x.xd, bd)?;
            if s.wtype.reads_act_sums() {
                need("gemv_gated", "xs", &x.xs, bs)?;
                rec.dispatch(&kernel, groups, &params, &[w, x.xq, x.xd, x.xs, out])
            } else {
                rec.dispatch(&kernel, groups, &params, &[w, x.xq, x.xd, out])
            }
        }
        (x, _) => Err(shape_err(format!(
            "{:?} weights cannot read activations {x:?}",
            s.wtype
        ))),
    }
}
