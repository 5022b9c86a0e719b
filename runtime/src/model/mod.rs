//! Model architectures configured from GGUF metadata, and their forward passes: [`gpu`] records
//! dispatches of the generated kernels, [`cpu`] runs kiln-cpu's SIMD kernels.
//!
//! The GPU model blocks on readbacks, so it is native-only; wasm32 builds have the CPU model.

pub mod config;
pub mod cpu;
pub mod gpu;

pub use config::{Arch, Config};

/// What a model needs on the GPU, computed from the file's header before anything is created
/// (see [`gpu::GpuLoader::memory_needs`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryNeeds {
    /// Weight buffers as laid out (split parts, widened q|k|v, norm weights and biases).
    pub weights: u64,
    /// Keys and values of every layer for the context's positions.
    pub kv_cache: u64,
    /// Activations for the largest chunk, logits, attention scratch, step parameters.
    pub scratch: u64,
}

impl MemoryNeeds {
    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.scratch
    }
}

impl std::fmt::Display for MemoryNeeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::error::mib;
        write!(
            f,
            "weights {}, KV cache {}, scratch {}",
            mib(self.weights),
            mib(self.kv_cache),
            mib(self.scratch)
        )
    }
}
