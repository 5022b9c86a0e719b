//! f32 activation kernels: norms, elementwise activations, RoPE, attention over an f16 KV cache,
//! embedding lookup, Mamba and RWKV recurrent steps.
//!
//! Elementwise kernels are written once as straight, branch-free loops over [`math`]
//! functions. On x86-64 a copy compiled for AVX2+FMA is chosen at run time (the loops then
//! vectorize to 8 lanes); NEON and SIMD128 builds vectorize the same loops at compile time. The
//! `*_with(Isa::Scalar, ..)` forms run the baseline copy, which tests use as the twin.

mod act;
mod attention;
pub mod math;
mod norm;
mod rope;
mod rwkv;
mod ssm;

pub use act::*;
pub use attention::*;
pub use norm::*;
pub use rope::*;
pub use rwkv::*;
pub use ssm::*;

use crate::quant::{QType, dequantize_row};
use crate::{CpuError, check_len};

/// Calls `|args| body` on `($call)` either as compiled for AVX2+FMA (when `$isa` is `Avx2Fma`,
/// or `AvxVnni` or `Avx512Vnni`, which include it) or as the baseline build.
macro_rules! multiversion {
    ($isa:expr, |$($arg:ident : $ty:ty),*| $body:block ($($call:expr),*)) => {
        multiversion!($isa, |$($arg: $ty),*| -> () $body ($($call),*))
    };
    ($isa:expr, |$($arg:ident : $ty:ty),*| -> $ret:ty $body:block ($($call:expr),*)) => {{
        #[inline(always)]
        fn body($($arg: $ty),*) -> $ret $body
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn avx2($($arg: $ty),*) -> $ret { body($($arg),*) }
        match $isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the Isa was checked available (AVX2+FMA, which AvxVnni and Avx512Vnni
            // include).
            $crate::Isa::Avx2Fma | $crate::Isa::AvxVnni | $crate::Isa::Avx512Vnni => unsafe { avx2($($call),*) },
            _ => body($($call),*),
        }
    }};
}
pub(crate) use multiversion;

/// Copies row `row` of an embedding table (`bytes`: rows of `out.len()` elements as `qtype`
/// blocks) into `out`, dequantized.
pub fn embed_row(qtype: QType, bytes: &[u8], row: usize, out: &mut [f32]) -> Result<(), CpuError> {
    let rb = qtype.row_bytes(out.len())?;
    let start = row
        .checked_mul(rb)
        .filter(|s| s.checked_add(rb).is_some_and(|e| e <= bytes.len()));
    let Some(start) = start else {
        return Err(CpuError::Invalid {
            what: "embed_row",
            why: format!(
                "row {row} of {rb} bytes is past the table's {} bytes",
                bytes.len()
            ),
        });
    };
    dequantize_row(qtype, &bytes[start..start + rb], out)
}

/// `out[i] = a[i] + b[i]`.
pub fn add(a: &[f32], b: &[f32], out: &mut [f32]) -> Result<(), CpuError> {
    check_len("add: b", a.len(), b.len())?;
    check_len("add: out", a.len(), out.len())?;
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
    Ok(())
}

/// `out[i] = a[i] · b[i]`.
pub fn mul(a: &[f32], b: &[f32], out: &mut [f32]) -> Result<(), CpuError> {
    check_len("mul: b", a.len(), b.len())?;
    check_len("mul: out", a.len(), out.len())?;
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x * y;
    }
    Ok(())
}

/// `x[i] += y[i]` (residual add).
pub fn add_in_place(x: &mut [f32], y: &[f32]) -> Result<(), CpuError> {
    check_len("add_in_place: y", x.len(), y.len())?;
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
    Ok(())
}

/// `x[i] *= s`.
pub fn scale(x: &mut [f32], s: f32) {
    crate::simd::scale(s, x)
}
