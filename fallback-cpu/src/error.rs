//! The one error type of the CPU path.

use crate::{Isa, QType};

/// Every way a CPU kernel can refuse its arguments. Kernels never panic on bad sizes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CpuError {
    /// A slice has the wrong length for the shapes given.
    #[error("{what}: expected {expected} elements/bytes, got {got}; check the shapes passed")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A row length is not a whole number of quantization blocks.
    #[error("{what}: {len} is not a multiple of {qtype:?}'s block size {block}")]
    BlockAlign {
        what: &'static str,
        qtype: QType,
        len: usize,
        block: usize,
    },
    /// An argument is out of its valid range.
    #[error("{what}: {why}")]
    Invalid { what: &'static str, why: String },
    /// A weight type is not supported by this operation.
    #[error("{op} does not support {qtype:?}")]
    Unsupported { op: &'static str, qtype: QType },
    /// The requested instruction set is not available on this CPU or build.
    #[error("instruction set {0:?} is not available on this CPU/build; use one of {avail:?}", avail = Isa::available())]
    IsaUnavailable(Isa),
    /// `KILN_CPU_ISA` names no known instruction set.
    #[error("KILN_CPU_ISA={0:?} is not one of scalar, avx2, avxvnni, avx512vnni, neon, simd128")]
    UnknownIsa(String),
}
