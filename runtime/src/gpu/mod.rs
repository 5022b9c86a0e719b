//! The GPU core: context and device facts, the generated kernel table, pipelines, the buffer
//! pool, the recorder with its uniform arena, prebuilt step plans, readback and counters.

pub mod context;
pub mod counters;
pub mod kernels;
pub mod pipelines;
pub mod plan;
pub mod pool;
pub mod recorder;

pub use context::{Capabilities, Gpu, GpuOptions};
pub use counters::Counters;
pub use kernels::{
    BindingKind, BindingSpec, DType, KernelFeatures, KernelKey, KernelSpec, ParamSpace, params,
};
pub use pipelines::Kernel;
pub use plan::{Plan, Replay, Shift, Shifted, StepArena};
pub use pool::GpuBuffer;
pub use recorder::{Readback, Recorder, View, grid_of};
