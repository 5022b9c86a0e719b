//! GEMVs that prepare their own input (shaders/gemv_prep.wgsl): each workgroup runs
//! [`crate::ops::prep`]'s prologue (residual add, post-norm, RMSNorm, int8 quantization) into
//! workgroup memory, then multiplies its rows with `gemv_q8`'s integer block dots. One dispatch
//! replaces the norm, the quantization, the residual add and the GEMV of the unfused path; the
//! gated form also replaces the activation (as [`crate::ops::gemv_gated`]). For int8-quantized
//! weight formats with rows of at most [`max_k`]; other products run [`crate::ops::prep::prep`]
//! and then their GEMV.

use crate::error::{Error, Result};
use crate::gpu::{KernelKey, Recorder, View, params};
use crate::ops::activation::Act;
use crate::ops::gemv::{ActQuant, GemvShape, IntDot, Split, WType};
use crate::ops::gemv_gated::GatedShape;
use crate::ops::need;
use crate::ops::prep::{PrepIn, PrepUniform};
use crate::tune::GemvPick;

pub fn gemv_prep_key(wtype: WType, split: Split, dot: IntDot, gated: Option<Act>) -> KernelKey {
    use params::{gemv_prep as plain, gemv_prep_gated as gate};
    let (name, wg_size, max_k, rows) = match gated {
        None => ("gemv_prep", plain::WG_SIZE, plain::MAX_K, plain::ROWS),
        Some(_) => ("gemv_prep_gated", gate::WG_SIZE, gate::MAX_K, gate::ROWS),
    };
    let mut key = KernelKey::new(name)
        .word("WTYPE", wtype.word())
        .uint("WG_SIZE", wg_size)
        .uint("MAX_K", max_k)
        .flag("DOT4", dot == IntDot::Packed);
    key = match split {
        Split::Group(_) => key.word("SPLIT", "group").uint("ROWS", rows),
        Split::Thread => key.word("SPLIT", "thread"),
    };
    if let Some(act) = gated {
        key = key.uint("GATED", gate::GATED).word("ACT", act.word());
    }
    key
}

/// The longest activation row the fused kernels take (their variants' `MAX_K`).
pub fn max_k() -> u32 {
    params::gemv_prep::MAX_K.min(params::gemv_prep_gated::MAX_K)
}

/// Whether the fused kernels take weights of `wtype` with rows of `k`.
pub fn takes(wtype: WType, k: u32) -> bool {
    ActQuant::for_weights(wtype).is_some() && k <= max_k()
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    pre: PrepUniform,
    rows: u32,
    row_bytes: u32,
    m: u32,
    y_stride: u32,
    y_offset: u32,
    up_offset: u32,
    acc: u32,
    pad: u32,
}

/// The common checks and the dispatch of both forms.
#[allow(
    clippy::too_many_arguments,
    reason = "one argument per binding and shape"
)]
fn record(
    rec: &mut Recorder,
    // The workgroup size is the kernel's one (`GemvOp::Prep.candidates` carry it).
    GemvPick { split, dot, .. }: GemvPick,
    gated: Option<Act>,
    w: View<'_>,
    input: &PrepIn<'_>,
    y: View<'_>,
    (wtype, k, rows, m): (WType, u32, u32, u32),
    (y_stride, y_offset, up_offset, acc): (u32, u32, u32, bool),
) -> Result<()> {
    let op = if gated.is_some() {
        "gemv_prep_gated"
    } else {
        "gemv_prep"
    };
    let bad = |detail: String| Error::Shape { op, detail };
    let row_bytes = wtype.row_bytes(k)?;
    if !takes(wtype, k) {
        return Err(bad(format!(
            "{wtype:?} rows of {k}: the fused kernels take int8-quantized formats with rows of \
             at most {} (use prep and a GEMV)",
            max_k()
        )));
    }
    if input.k != k || rows == 0 || y_offset + rows > y_stride {
        return Err(bad(format!(
            "input rows of {} for weights of {k}, {rows} rows at column {y_offset} of \
             {y_stride}",
            input.k
        )));
    }
    input.check(op, m)?;
    let weight_bytes = u64::from(rows) * u64::from(row_bytes);
    need(op, "w", &w, u64::from(up_offset) + weight_bytes)?;
    need(op, "y", &y, u64::from(m) * u64::from(y_stride) * 4)?;
    let kernel = rec.gpu().kernel(&gemv_prep_key(wtype, split, dot, gated))?;
    let per_group = match split {
        Split::Group(_) => kernel.spec.param("ROWS").unwrap_or(1),
        Split::Thread => kernel.spec.workgroup_size[0],
    };
    let groups = rec.gpu().grid(rows.div_ceil(per_group));
    let params = Params {
        pre: input.uniform(),
        rows,
        row_bytes,
        m,
        y_stride,
        y_offset,
        up_offset,
        acc: u32::from(acc),
        pad: 0,
    };
    let gpu = rec.gpu().clone();
    let [x, t, vecs, x_out] = input.views(&gpu);
    rec.dispatch(&kernel, groups, &params, &[w, x, t, vecs, x_out, y])
}

/// Records `y[j, y_offset + r] (+)= W[r, :] . v[j, :]` where `v` is `input` prepared (see
/// [`PrepIn`]) for `W`'s format, in one dispatch.
pub fn gemv_prep(
    rec: &mut Recorder,
    pick: GemvPick,
    w: View<'_>,
    input: &PrepIn<'_>,
    y: View<'_>,
    s: GemvShape,
) -> Result<()> {
    record(
        rec,
        pick,
        None,
        w,
        input,
        y,
        (s.wtype, s.k, s.rows, s.m),
        (s.y_stride, s.y_offset, 0, s.accumulate),
    )
}

/// Records `out[j, y_offset + r] = act(Wg[r, :] . v[j, :]) * (Wu[r, :] . v[j, :])` where `v` is
/// `input` prepared for the weights' format, gate and up rows in one buffer as
/// [`crate::ops::gemv_gated::gemv_gated`] takes them, in one dispatch.
pub fn gemv_prep_gated(
    rec: &mut Recorder,
    pick: GemvPick,
    w: View<'_>,
    input: &PrepIn<'_>,
    out: View<'_>,
    s: GatedShape,
) -> Result<()> {
    let half = u64::from(s.rows) * u64::from(s.wtype.row_bytes(s.k)?);
    if u64::from(s.up_offset) < half || !s.up_offset.is_multiple_of(4) {
        return Err(Error::Shape {
            op: "gemv_prep_gated",
            detail: format!(
                "up rows at byte {} overlap the {half} bytes of gate rows or are not 4-byte \
                 aligned",
                s.up_offset
            ),
        });
    }
    record(
        rec,
        pick,
        Some(s.act),
        w,
        input,
        out,
        (s.wtype, s.k, s.rows, s.m),
        (s.y_stride, s.y_offset, s.up_offset, false),
    )
}
