//! Model architectures configured from GGUF metadata, and their forward passes: [`gpu`] records
//! dispatches of the generated kernels, [`cpu`] runs kiln-cpu's SIMD kernels.

pub mod config;
pub mod cpu;
pub mod gpu;

pub use config::{Arch, Config};
