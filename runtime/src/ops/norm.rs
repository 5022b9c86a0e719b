//! RMSNorm over rows, in the usual `w` form and Gemma's `(1 + w)` form.

use crate::error::Result;
use crate::gpu::{KernelKey, Recorder, View};
use crate::ops::need;
use crate::ops::reduce::Combine;

pub fn rms_norm_key(combine: Combine) -> KernelKey {
    KernelKey::new("rms_norm")
        .uint("WG_SIZE", 256)
        .flag("SUBGROUP", combine == Combine::Subgroup)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    rows: u32,
    eps: f32,
    w_offset: f32,
}

/// `out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * (w + w_offset)` for `rows` rows of `n`;
/// `w_offset` is 0, or 1 for Gemma's `(1 + w)`. `x` and `out` must not overlap.
#[allow(
    clippy::too_many_arguments,
    reason = "one argument per binding and parameter"
)]
pub fn rms_norm(
    rec: &mut Recorder,
    combine: Combine,
    x: View<'_>,
    w: View<'_>,
    out: View<'_>,
    rows: u32,
    n: u32,
    eps: f32,
    w_offset: f32,
) -> Result<()> {
    let bytes = u64::from(rows) * u64::from(n) * 4;
    need("rms_norm", "x", &x, bytes)?;
    need("rms_norm", "w", &w, u64::from(n) * 4)?;
    need("rms_norm", "out", &out, bytes)?;
    let kernel = rec.gpu().kernel(&rms_norm_key(combine))?;
    let groups = rec.gpu().grid(rows.max(1));
    let params = Params {
        n,
        rows,
        eps,
        w_offset,
    };
    rec.dispatch(&kernel, groups, &params, &[x, w, out])
}
