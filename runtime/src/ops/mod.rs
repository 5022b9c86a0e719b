//! Ops: one module per kernel family. Each op names its kernel variant with a typed key, checks
//! the shapes it is given, and records dispatches on a [`crate::gpu::Recorder`]; the dispatch
//! math reads workgroup and tile sizes from the variant's spec, never from a second copy.

pub mod activation;
pub mod attention;
pub mod elementwise;
pub mod gemv;
pub mod gemv_gated;
pub mod gemv_prep;
pub mod int8;
pub mod matmul;
pub mod matmul_q;
pub mod norm;
pub mod prep;
pub mod reduce;
pub mod rope;
pub mod rope_kv;
pub mod rwkv;
pub mod sample;
pub mod softmax;
pub mod ssm;
pub mod unary;

use crate::error::{Error, Result};
use crate::gpu::View;

/// Fails unless `view` holds at least `bytes` bytes.
pub(crate) fn need(op: &'static str, name: &str, view: &View<'_>, bytes: u64) -> Result<()> {
    if view.size < bytes {
        return Err(Error::Shape {
            op,
            detail: format!("`{name}` holds {} bytes, needs {bytes}", view.size),
        });
    }
    Ok(())
}
