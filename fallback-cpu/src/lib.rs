//! kiln's CPU path: SIMD kernels for small language models (AVX-512 VNNI, AVX-VNNI, AVX2+FMA,
//! NEON, WASM SIMD128 and a scalar twin for each), and the oracle the GPU kernels are tested
//! against.
//!
//! - [`simd`]: instruction-set selection ([`Isa`]) and f32/f16 vector primitives.
//! - [`quant`]: GGUF block formats (byte-exact with ggml), activation quantization
//!   ([`ActBuffer`]) and integer dot products per weight type.
//! - [`matmul`]: quantized GEMV / batched matmul over [`QMatrix`], and f32 matmul.
//! - [`threads`]: a small persistent [`ThreadPool`].
//! - [`ops`]: norms, activations, RoPE, attention, embeddings, Mamba and RWKV steps.
//! - [`sample`]: the token [`Sampler`] with a GPU-reproducible RNG.
//!
//! Nothing here parses GGUF: callers pass raw block bytes. No kernel allocates per token; buffers
//! that grow ([`ActBuffer`], [`Sampler`] scratch) are reused across calls.

mod error;
pub mod matmul;
pub mod ops;
pub mod quant;
pub mod rng;
pub mod sample;
pub mod simd;
pub mod threads;

pub use error::CpuError;
pub use matmul::{QMatrix, matmul_f32};
pub use quant::{ActBuffer, QType};
pub use sample::Sampler;
pub use simd::Isa;
pub use threads::ThreadPool;

pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), CpuError> {
    if expected == got {
        Ok(())
    } else {
        Err(CpuError::Length {
            what,
            expected,
            got,
        })
    }
}
