//! Rotary position embedding.

use crate::{CpuError, check_len};

/// Which dimensions form a rotated pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// Pairs `(2i, 2i+1)` (llama.cpp's default, Llama/SmolLM2 GGUFs).
    Normal,
    /// Pairs `(i, i + n_rot/2)` (GPT-NeoX style: Qwen2, Qwen3, Gemma).
    NeoX,
}

/// The rotation frequencies: pair `i` turns by `pos · scale · base^(-2i/n_rot) / factors[i]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeFreqs<'a> {
    pub base: f32,
    /// Linear RoPE scaling: positions are multiplied by this (1 for none).
    pub scale: f32,
    /// Per-pair divisors of the frequencies (`n_rot / 2` of them: Llama 3's
    /// `rope_freqs.weight`); None for all ones.
    pub factors: Option<&'a [f32]>,
}

impl RopeFreqs<'static> {
    /// Plain RoPE of `base`: no scaling, no factors.
    pub fn base(base: f32) -> Self {
        RopeFreqs {
            base,
            scale: 1.0,
            factors: None,
        }
    }
}

/// Rotates each of the `x.len() / head_dim` heads in place for position `pos`: pair `i`
/// (`i < n_rot/2`) turns by the angle `f` gives it (see [`RopeFreqs`]); dimensions
/// `n_rot..head_dim` are left alone. Angles are computed in f64 and rounded once.
pub fn rope(
    x: &mut [f32],
    head_dim: usize,
    n_rot: usize,
    pos: usize,
    f: &RopeFreqs<'_>,
    layout: RopeLayout,
) -> Result<(), CpuError> {
    if head_dim == 0
        || !x.len().is_multiple_of(head_dim)
        || n_rot > head_dim
        || !n_rot.is_multiple_of(2)
    {
        return Err(CpuError::Invalid {
            what: "rope",
            why: format!(
                "len {} / head_dim {head_dim} / n_rot {n_rot}: need whole heads and an even n_rot <= head_dim",
                x.len()
            ),
        });
    }
    check_len("rope: whole heads", x.len() / head_dim * head_dim, x.len())?;
    let half = n_rot / 2;
    if let Some(factors) = f.factors {
        check_len("rope: frequency factors", half, factors.len())?;
    }
    let pos = pos as f64 * f64::from(f.scale);
    for i in 0..half {
        let factor = f.factors.map_or(1.0, |v| f64::from(v[i]));
        let theta = pos * f64::from(f.base).powf(-2.0 * i as f64 / n_rot as f64) / factor;
        let (s, c) = (theta.sin() as f32, theta.cos() as f32);
        let (a, b) = match layout {
            RopeLayout::Normal => (2 * i, 2 * i + 1),
            RopeLayout::NeoX => (i, i + half),
        };
        for h in x.chunks_exact_mut(head_dim) {
            let (x0, x1) = (h[a], h[b]);
            h[a] = x0 * c - x1 * s;
            h[b] = x0 * s + x1 * c;
        }
    }
    Ok(())
}
