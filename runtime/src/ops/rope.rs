//! Rotary position embedding, in place, NORM (llama) and NEOX (qwen2, qwen3, gemma3) layouts.

use crate::error::{Error, Result};
use crate::gpu::{KernelKey, Recorder, View, params};
use crate::ops::need;

/// Which dimensions form a rotated pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RopeLayout {
    /// Pairs (2i, 2i + 1).
    Norm,
    /// Pairs (i, i + rot_dims / 2).
    Neox,
}

pub fn rope_key(layout: RopeLayout) -> KernelKey {
    KernelKey::new("rope")
        .word(
            "LAYOUT",
            match layout {
                RopeLayout::Norm => "norm",
                RopeLayout::Neox => "neox",
            },
        )
        .uint("WG_SIZE", params::rope::WG_SIZE)
}

/// Shape and parameters of one rotation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rope {
    pub layout: RopeLayout,
    pub n_head: u32,
    pub head_dim: u32,
    /// Leading dimensions of each head that rotate (even, at most head_dim).
    pub rot_dims: u32,
    pub n_tok: u32,
    /// Position of the first token.
    pub pos0: u32,
    pub base: f32,
    /// Positions are multiplied by this (linear RoPE scaling); 1 for none.
    pub freq_scale: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_head: u32,
    head_dim: u32,
    rot_dims: u32,
    n_tok: u32,
    pos0: u32,
    base: f32,
    freq_scale: f32,
    pad: u32,
}

/// Rotates `x` (n_tok, n_head, head_dim) in place.
pub fn rope(rec: &mut Recorder, x: View<'_>, r: Rope) -> Result<()> {
    if r.rot_dims == 0 || !r.rot_dims.is_multiple_of(2) || r.rot_dims > r.head_dim {
        return Err(Error::Shape {
            op: "rope",
            detail: format!("rotated dims {} of head {}", r.rot_dims, r.head_dim),
        });
    }
    need(
        "rope",
        "x",
        &x,
        u64::from(r.n_tok) * u64::from(r.n_head) * u64::from(r.head_dim) * 4,
    )?;
    let kernel = rec.gpu().kernel(&rope_key(r.layout))?;
    let pairs = r.n_tok * r.n_head * r.rot_dims / 2;
    let groups = rec
        .gpu()
        .grid(pairs.div_ceil(kernel.spec.workgroup_size[0]).max(1));
    let params = Params {
        n_head: r.n_head,
        head_dim: r.head_dim,
        rot_dims: r.rot_dims,
        n_tok: r.n_tok,
        pos0: r.pos0,
        base: r.base,
        freq_scale: r.freq_scale,
        pad: 0,
    };
    rec.dispatch(&kernel, groups, &params, &[x])
}
