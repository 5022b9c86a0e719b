//! Row softmax, max-subtracted so that it stays finite, with an optional scale of the inputs.

use crate::error::Result;
use crate::gpu::{KernelKey, Recorder, View, params};
use crate::ops::need;
use crate::ops::reduce::Combine;

pub fn softmax_key(combine: Combine) -> KernelKey {
    KernelKey::new("softmax")
        .uint("WG_SIZE", params::softmax::WG_SIZE)
        .flag("SUBGROUP", combine == Combine::Subgroup)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    rows: u32,
    scale: f32,
    pad: u32,
}

/// `out[r, :] = softmax(scale * x[r, :])` for `rows` rows of `n` finite f32 (`scale` 1 for a
/// plain softmax). `x` and `out` must not overlap.
pub fn softmax(
    rec: &mut Recorder,
    combine: Combine,
    x: View<'_>,
    out: View<'_>,
    rows: u32,
    n: u32,
    scale: f32,
) -> Result<()> {
    let bytes = u64::from(rows) * u64::from(n) * 4;
    need("softmax", "x", &x, bytes)?;
    need("softmax", "out", &out, bytes)?;
    let kernel = rec.gpu().kernel(&softmax_key(combine))?;
    let groups = rec.gpu().grid(rows.max(1));
    let params = Params {
        n,
        rows,
        scale,
        pad: 0,
    };
    rec.dispatch(&kernel, groups, &params, &[x, out])
}
