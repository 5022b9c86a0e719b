//! Model architectures configured from GGUF metadata, and their forward passes: [`gpu`] records
//! dispatches of the generated kernels, [`cpu`] runs kiln-cpu's SIMD kernels.
//!
//! The GPU model blocks on readbacks, so it is native-only; wasm32 builds have the CPU model.

pub mod config;
pub mod cpu;
pub mod gpu;

pub use config::{Arch, Config};
