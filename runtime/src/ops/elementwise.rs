//! Binary elementwise ops (`add`, `mul`) over f32 or f16 storage.

use crate::error::Result;
use crate::gpu::{DType, KernelKey, Recorder, View, params};
use crate::ops::need;

/// Which binary op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Mul,
}

impl BinaryOp {
    fn word(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Mul => "mul",
        }
    }
}

/// The `elementwise` variant for an op and storage type.
/// The `elementwise` variant for an op and storage type; `vec4` handles four elements per
/// invocation.
pub fn binary_key(op: BinaryOp, dtype: DType, vec4: bool) -> KernelKey {
    KernelKey::new("elementwise")
        .word("OP", op.word())
        .word("DTYPE", dtype.wgsl())
        .word("VEC", if vec4 { "vec4" } else { "scalar" })
        .uint("WG_SIZE", params::elementwise::WG_SIZE)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
}

/// `out[i] = a[i] op b[i]` for `i < n`; all three hold `n` elements of `dtype`.
pub fn binary(
    rec: &mut Recorder,
    op: BinaryOp,
    dtype: DType,
    a: View<'_>,
    b: View<'_>,
    out: View<'_>,
    n: u32,
) -> Result<()> {
    let bytes = u64::from(n) * dtype.size();
    need("elementwise", "a", &a, bytes)?;
    need("elementwise", "b", &b, bytes)?;
    need("elementwise", "out", &out, bytes)?;
    // Four elements per invocation where n allows it.
    let vec4 = n.is_multiple_of(4);
    let kernel = rec.gpu().kernel(&binary_key(op, dtype, vec4))?;
    let per = if vec4 { 4 } else { 1 };
    let groups = rec
        .gpu()
        .grid((n / per).div_ceil(kernel.spec.workgroup_size[0]).max(1));
    rec.dispatch(&kernel, groups, &Params { n }, &[a, b, out])
}
