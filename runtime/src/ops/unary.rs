//! Unary elementwise ops (SiLU, GELU in its tanh and erf forms, sigmoid, a tanh that stays
//! finite, scale) and the fused residual `out = x + s * b`, over f32 or f16 storage.

use std::sync::Arc;

use crate::error::Result;
use crate::gpu::{DType, Kernel, KernelKey, Recorder, View, params};
use crate::ops::need;

/// Which unary op.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// `x * sigmoid(x)`.
    Silu,
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    GeluTanh,
    /// `0.5 x (1 + erf(x / sqrt(2)))`.
    GeluErf,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `tanh(x)`, ±1 (never NaN) for large `|x|`.
    Tanh,
    /// `x * s`.
    Scale(f32),
}

impl UnaryOp {
    fn word(self) -> &'static str {
        match self {
            UnaryOp::Silu => "silu",
            UnaryOp::GeluTanh => "gelu_tanh",
            UnaryOp::GeluErf => "gelu_erf",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Scale(_) => "scale",
        }
    }

    fn factor(self) -> f32 {
        match self {
            UnaryOp::Scale(s) => s,
            _ => 0.0,
        }
    }
}

fn vec_word(vec4: bool) -> &'static str {
    if vec4 { "vec4" } else { "scalar" }
}

/// The `unary` variant for an op and storage type; `vec4` handles four elements per invocation.
pub fn unary_key(op: UnaryOp, dtype: DType, vec4: bool) -> KernelKey {
    KernelKey::new("unary")
        .word("OP", op.word())
        .word("DTYPE", dtype.wgsl())
        .word("VEC", vec_word(vec4))
        .uint("WG_SIZE", params::unary::WG_SIZE)
}

/// The `axpy` variant (`out = x + s * b`) for a storage type.
pub fn axpy_key(dtype: DType, vec4: bool) -> KernelKey {
    KernelKey::new("axpy")
        .word("OP", "axpy")
        .word("DTYPE", dtype.wgsl())
        .word("VEC", vec_word(vec4))
        .uint("WG_SIZE", params::axpy::WG_SIZE)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    s: f32,
}

/// The grid for `n` elements, four per invocation where `n` allows it.
fn launch(
    rec: &Recorder,
    key: impl Fn(bool) -> KernelKey,
    n: u32,
) -> Result<(Arc<Kernel>, [u32; 3])> {
    let vec4 = n.is_multiple_of(4);
    let kernel = rec.gpu().kernel(&key(vec4))?;
    let per = if vec4 { 4 } else { 1 };
    let groups = rec
        .gpu()
        .grid((n / per).div_ceil(kernel.spec.workgroup_size[0]).max(1));
    Ok((kernel, groups))
}

/// `out[i] = op(x[i])` for `i < n`; `x` and `out` hold `n` elements of `dtype` in different
/// buffers.
pub fn unary(
    rec: &mut Recorder,
    op: UnaryOp,
    dtype: DType,
    x: View<'_>,
    out: View<'_>,
    n: u32,
) -> Result<()> {
    let size = u64::from(n) * dtype.size();
    need("unary", "x", &x, size)?;
    need("unary", "out", &out, size)?;
    let (kernel, groups) = launch(rec, |v| unary_key(op, dtype, v), n)?;
    let params = Params { n, s: op.factor() };
    rec.dispatch(&kernel, groups, &params, &[x, out])
}

/// `out[i] = x[i] + s * b[i]` for `i < n`: a residual add with the branch scaled by `s` in one
/// pass. All three hold `n` elements of `dtype`.
#[allow(
    clippy::too_many_arguments,
    reason = "one argument per binding and parameter"
)]
pub fn axpy(
    rec: &mut Recorder,
    dtype: DType,
    x: View<'_>,
    s: f32,
    b: View<'_>,
    out: View<'_>,
    n: u32,
) -> Result<()> {
    let size = u64::from(n) * dtype.size();
    need("axpy", "x", &x, size)?;
    need("axpy", "b", &b, size)?;
    need("axpy", "out", &out, size)?;
    let (kernel, groups) = launch(rec, |v| axpy_key(dtype, v), n)?;
    rec.dispatch(&kernel, groups, &Params { n, s }, &[x, b, out])
}
