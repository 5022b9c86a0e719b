//! RMS norm (plain and Gemma's `1 + w`) and layer norm.

use crate::{CpuError, Isa, check_len};

/// `out = x / sqrt(mean(x²) + eps) · w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) -> Result<(), CpuError> {
    rms_norm_with(Isa::active(), x, w, eps, out, false)
}

/// Gemma's RMS norm: `out = x / sqrt(mean(x²) + eps) · (1 + w)`.
pub fn rms_norm_gemma(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) -> Result<(), CpuError> {
    rms_norm_with(Isa::active(), x, w, eps, out, true)
}

/// RMS norm on `isa`; `one_plus` selects the Gemma `(1 + w)` weighting.
pub fn rms_norm_with(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    eps: f32,
    out: &mut [f32],
    one_plus: bool,
) -> Result<(), CpuError> {
    isa.ensure()?;
    check_len("rms_norm: w", x.len(), w.len())?;
    check_len("rms_norm: out", x.len(), out.len())?;
    if x.is_empty() {
        return Ok(());
    }
    let ms = crate::simd::dot_isa(isa, x, x) / x.len() as f32;
    let r = 1.0 / (ms + eps).sqrt();
    let off = if one_plus { 1.0 } else { 0.0 };
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * r * (g + off);
    }
    Ok(())
}

/// `out = (x - mean) / sqrt(var + eps) · w + b` (`w`, `b` optional: 1 and 0).
pub fn layer_norm(
    x: &[f32],
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    eps: f32,
    out: &mut [f32],
) -> Result<(), CpuError> {
    check_len("layer_norm: out", x.len(), out.len())?;
    if let Some(w) = w {
        check_len("layer_norm: w", x.len(), w.len())?;
    }
    if let Some(b) = b {
        check_len("layer_norm: b", x.len(), b.len())?;
    }
    if x.is_empty() {
        return Ok(());
    }
    let n = x.len() as f32;
    let mean = crate::simd::sum(x) / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let r = 1.0 / (var + eps).sqrt();
    for (i, (o, &v)) in out.iter_mut().zip(x).enumerate() {
        let g = w.map_or(1.0, |w| w[i]);
        let c = b.map_or(0.0, |b| b[i]);
        *o = (v - mean) * r * g + c;
    }
    Ok(())
}
