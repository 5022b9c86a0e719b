//! Gated activations of the FFN (SwiGLU, GeGLU) and the in-place broadcast add used for
//! residuals and biases.

use crate::error::{Error, Result};
use crate::gpu::{KernelKey, Recorder, View, params};
use crate::ops::need;

/// The activation applied to the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Act {
    /// SiLU: SwiGLU (llama, qwen2).
    Silu,
    /// GELU, tanh approximation: GeGLU (gemma).
    Gelu,
}

impl Act {
    /// The manifest word (`ACT=silu`).
    pub fn word(self) -> &'static str {
        match self {
            Act::Silu => "silu",
            Act::Gelu => "gelu",
        }
    }
}

pub fn gated_key(act: Act) -> KernelKey {
    KernelKey::new("gated")
        .word("ACT", act.word())
        .uint("WG_SIZE", params::gated::WG_SIZE)
}

pub fn add_inplace_key() -> KernelKey {
    KernelKey::new("add_inplace").uint("WG_SIZE", params::add_inplace::WG_SIZE)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GatedParams {
    n: u32,
}

/// `out[i] = act(gate[i]) * up[i]` for `i < n`.
pub fn gated(
    rec: &mut Recorder,
    act: Act,
    gate: View<'_>,
    up: View<'_>,
    out: View<'_>,
    n: u32,
) -> Result<()> {
    let bytes = u64::from(n) * 4;
    need("gated", "gate", &gate, bytes)?;
    need("gated", "up", &up, bytes)?;
    need("gated", "out", &out, bytes)?;
    let kernel = rec.gpu().kernel(&gated_key(act))?;
    let groups = rec
        .gpu()
        .grid(n.div_ceil(kernel.spec.workgroup_size[0]).max(1));
    rec.dispatch(&kernel, groups, &GatedParams { n }, &[gate, up, out])
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AddParams {
    n: u32,
    period: u32,
}

/// `x[i] += b[i % period]` for `i < n`: a residual add (`period = n`) or a bias on every row.
pub fn add_inplace(
    rec: &mut Recorder,
    x: View<'_>,
    b: View<'_>,
    n: u32,
    period: u32,
) -> Result<()> {
    if period == 0 || !n.is_multiple_of(period) {
        return Err(Error::Shape {
            op: "add_inplace",
            detail: format!("{n} elements are not whole rows of {period}"),
        });
    }
    need("add_inplace", "x", &x, u64::from(n) * 4)?;
    need("add_inplace", "b", &b, u64::from(period) * 4)?;
    let kernel = rec.gpu().kernel(&add_inplace_key())?;
    let groups = rec
        .gpu()
        .grid(n.div_ceil(kernel.spec.workgroup_size[0]).max(1));
    rec.dispatch(&kernel, groups, &AddParams { n, period }, &[x, b])
}
