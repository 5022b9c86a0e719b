//! Rotary position embedding.

use crate::{CpuError, check_len};

/// Which dimensions form a rotated pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// Pairs `(2i, 2i+1)` (llama.cpp's default, Llama/SmolLM2 GGUFs).
    Normal,
    /// Pairs `(i, i + n_rot/2)` (GPT-NeoX style: Qwen2, Gemma).
    NeoX,
}

/// Rotates each of the `x.len() / head_dim` heads in place for position `pos`: pair `i`
/// (`i < n_rot/2`) turns by `pos · base^(-2i/n_rot)`; dimensions `n_rot..head_dim` are left
/// alone. Angles are computed in f64 and rounded once.
pub fn rope(
    x: &mut [f32],
    head_dim: usize,
    n_rot: usize,
    pos: usize,
    base: f32,
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
    for i in 0..half {
        let theta = pos as f64 * (base as f64).powf(-2.0 * i as f64 / n_rot as f64);
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
