//! kiln runs small language models fast through WebGPU, natively (wgpu on Vulkan, Metal, DX12)
//! and in browsers, with a SIMD CPU path where there is no GPU.
//!
//! Layers, bottom up (see docs/ARCHITECTURE.md):
//! - [`gpu`]: the device, the generated kernel table, pipelines, buffer pool, recorder, readback;
//! - [`ops`]: one module per kernel family, each recording dispatches of generated kernels.
//!
//! Model files: [`gguf`] reads GGUF files, [`tokenizer`] builds tokenizers from their metadata.
//! Models: [`model`] runs the architectures on the GPU or the CPU path, [`generate`] streams
//! tokens from them. [`tune`] holds the GPU path's variant choices and reads tuned profiles.
//!
//! On wasm32 everything builds except the GPU model (`model::gpu`), whose steps block on GPU
//! readbacks: there [`generate`] runs the CPU path (one thread, SIMD128 where the build enables
//! it) on a model given as bytes.

pub mod clock;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod gpu;
pub mod model;
pub mod ops;
pub mod tokenizer;
pub mod tune;

pub use error::{Error, Result};
pub use gpu::{Counters, Gpu, GpuOptions};
