//! Norms over rows: RMSNorm in the usual `w` form and Gemma's `(1 + w)` form, and LayerNorm
//! with an optional weight and bias.

use crate::error::Result;
use crate::gpu::{KernelKey, Recorder, View, params};
use crate::ops::need;
use crate::ops::reduce::Combine;

pub fn rms_norm_key(combine: Combine) -> KernelKey {
    KernelKey::new("rms_norm")
        .uint("WG_SIZE", params::rms_norm::WG_SIZE)
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

pub fn layer_norm_key(combine: Combine) -> KernelKey {
    KernelKey::new("layer_norm")
        .uint("WG_SIZE", params::layer_norm::WG_SIZE)
        .flag("SUBGROUP", combine == Combine::Subgroup)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LayerNormParams {
    n: u32,
    rows: u32,
    eps: f32,
    has_w: u32,
    has_b: u32,
}

/// `out[r, :] = (x[r, :] - mean) / sqrt(var + eps) * w + b` for `rows` rows of `n`, with the
/// row's mean and biased variance; without `w` the weight is 1, without `b` the bias 0.
/// `x` and `out` must not overlap.
#[allow(
    clippy::too_many_arguments,
    reason = "one argument per binding and parameter"
)]
pub fn layer_norm(
    rec: &mut Recorder,
    combine: Combine,
    x: View<'_>,
    w: Option<View<'_>>,
    b: Option<View<'_>>,
    out: View<'_>,
    rows: u32,
    n: u32,
    eps: f32,
) -> Result<()> {
    let bytes = u64::from(rows) * u64::from(n) * 4;
    need("layer_norm", "x", &x, bytes)?;
    need("layer_norm", "out", &out, bytes)?;
    if let Some(w) = &w {
        need("layer_norm", "w", w, u64::from(n) * 4)?;
    }
    if let Some(b) = &b {
        need("layer_norm", "b", b, u64::from(n) * 4)?;
    }
    let kernel = rec.gpu().kernel(&layer_norm_key(combine))?;
    let groups = rec.gpu().grid(rows.max(1));
    let params = LayerNormParams {
        n,
        rows,
        eps,
        has_w: u32::from(w.is_some()),
        has_b: u32::from(b.is_some()),
    };
    // An absent weight or bias is not read; `x` fills its binding.
    rec.dispatch(
        &kernel,
        groups,
        &params,
        &[x, w.unwrap_or(x), b.unwrap_or(x), out],
    )
}
