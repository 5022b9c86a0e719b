//! Row reductions (sum, max) with a subgroup variant and a shared-memory variant.

use crate::error::Result;
use crate::gpu::{Gpu, KernelKey, Recorder, View, params};
use crate::ops::need;

/// Which reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Max,
}

/// How the workgroup combines its partial results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Combine {
    /// Subgroup operations, then one partial per subgroup through workgroup memory.
    Subgroup,
    /// A tree in workgroup memory with a barrier per level.
    SharedMemory,
}

impl Combine {
    /// Subgroups where the device has them, shared memory otherwise.
    pub fn best(gpu: &Gpu) -> Combine {
        if gpu.capabilities().subgroup {
            Combine::Subgroup
        } else {
            Combine::SharedMemory
        }
    }
}

pub fn reduce_key(op: ReduceOp, combine: Combine) -> KernelKey {
    KernelKey::new("reduce")
        .word(
            "OP",
            match op {
                ReduceOp::Sum => "sum",
                ReduceOp::Max => "max",
            },
        )
        .flag("SUBGROUP", combine == Combine::Subgroup)
        .uint("WG_SIZE", params::reduce::WG_SIZE)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    rows: u32,
}

/// `out[r] = op(x[r, 0..n])` for each of `rows` rows of f32.
pub fn rows(
    rec: &mut Recorder,
    op: ReduceOp,
    combine: Combine,
    x: View<'_>,
    out: View<'_>,
    rows: u32,
    n: u32,
) -> Result<()> {
    need("reduce", "x", &x, u64::from(rows) * u64::from(n) * 4)?;
    need("reduce", "out", &out, u64::from(rows) * 4)?;
    let kernel = rec.gpu().kernel(&reduce_key(op, combine))?;
    let groups = rec.gpu().grid(rows.max(1));
    rec.dispatch(&kernel, groups, &Params { n, rows }, &[x, out])
}
