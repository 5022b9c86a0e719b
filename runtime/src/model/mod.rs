//! Model architectures configured from GGUF metadata, and their forward passes: [`gpu`] records
//! dispatches of the generated kernels, [`cpu`] runs kiln-cpu's SIMD kernels.
//!
//! The GPU model blocks on readbacks, so it is native-only; wasm32 builds have the CPU model.

pub mod config;
pub mod cpu;
pub mod gpu;

pub use config::{Arch, Config};

/// One intermediate activation of a traced prompt, named as llama.cpp's graph names the same
/// op (`attn_norm-3`, `kqv_out-3`, `ffn_out-3`, `l_out-3`, `result_norm`, ...): `n_tok` rows
/// of `width` floats, one per prompt position.
#[derive(Clone, Debug, PartialEq)]
pub struct Traced {
    pub name: String,
    pub n_tok: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

/// Appends `rows` (whole rows of `width`) to the entry `name` of `trace`, or starts it: a
/// prompt traced in chunks gives each op's rows chunk by chunk.
fn append(trace: &mut Vec<Traced>, name: String, width: usize, rows: &[f32]) {
    let n_tok = rows.len() / width;
    match trace.iter_mut().find(|t| t.name == name) {
        Some(t) => {
            t.data.extend_from_slice(rows);
            t.n_tok += n_tok;
        }
        None => trace.push(Traced {
            name,
            n_tok,
            width,
            data: rows.to_vec(),
        }),
    }
}

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
