//! The crate's error type: every variant says what went wrong and what the caller can do.

/// `bytes` in MiB, for messages.
pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

impl Error {
    /// Whether this says the model does not fit the GPU (its limits, or the memory allowed):
    /// the errors after which `Backend::Auto` takes the CPU path.
    pub fn does_not_fit(&self) -> bool {
        matches!(self, Error::GpuMemory { .. } | Error::BufferTooLarge { .. })
    }
}

/// Result with kiln's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in kiln, with a message that says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No GPU adapter matched the options.
    #[error(
        "no GPU adapter found ({detail}). Install a Vulkan/Metal/DX12 driver (on Linux without a \
         GPU: `apt-get install mesa-vulkan-drivers` gives the lavapipe CPU driver), relax \
         KILN_BACKEND / KILN_ADAPTER, or use the CPU backend"
    )]
    NoAdapter { detail: String },

    /// The adapter refused to create a device.
    #[error("the GPU adapter `{adapter}` refused to create a device: {detail}")]
    DeviceRequest { adapter: String, detail: String },

    /// The device was lost (driver reset, GPU removed, out of memory, or destroyed) and the
    /// model could not come back by itself.
    #[error(
        "the GPU device was lost ({reason}); everything on it is gone. A model loaded from a \
         file reloads itself (LoadOptions::on_device_lost, Model::recover); load a streamed \
         one again, or use the CPU backend"
    )]
    DeviceLost { reason: String },

    /// wgpu reported a validation or out-of-memory error.
    #[error("GPU error: {0}")]
    Gpu(String),

    /// A kernel variant is not in the generated table.
    #[error(
        "no kernel variant {name}[{key}] was generated; add it to shaders/manifest.txt \
         (variants of {name}: {available})"
    )]
    MissingKernel {
        name: String,
        key: String,
        available: String,
    },

    /// A kernel needs a device feature the adapter lacks.
    #[error(
        "kernel {kernel} needs the device feature {feature}, which this adapter lacks; pick a variant without it"
    )]
    MissingFeature {
        kernel: String,
        feature: &'static str,
    },

    /// A kernel exceeds a device limit that naga cannot check at build time.
    #[error(
        "kernel {kernel} needs {what} = {needed}, but this adapter allows {limit}; \
         choose a variant with a smaller workgroup or tile for this device"
    )]
    KernelExceedsLimits {
        kernel: String,
        what: &'static str,
        needed: u64,
        limit: u64,
    },

    /// A buffer or binding is larger than the device allows.
    #[error(
        "`{what}` needs a buffer of {size} bytes, over this device's {limit_name} of {limit} \
         bytes; load with a smaller context (the KV cache and scratch grow with it), a smaller \
         model, or on the CPU path"
    )]
    BufferTooLarge {
        /// The buffer (a tensor's name, `k cache`, ...).
        what: String,
        size: u64,
        /// The WebGPU limit's name.
        limit_name: &'static str,
        limit: u64,
    },

    /// The model needs more GPU memory than the caller allows, or than the device gave.
    #[error(
        "the model needs {} on the GPU ({needs}), {why}; load with a smaller context, a \
         smaller model, or on the CPU path (backend auto picks it when the GPU does not fit)",
        mib(needs.total())
    )]
    GpuMemory {
        needs: crate::model::MemoryNeeds,
        /// Over which budget: the caller's, or the device's own refusal.
        why: String,
    },

    /// A shape the kernels cannot take.
    #[error("invalid shape for {op}: {detail}")]
    Shape { op: &'static str, detail: String },

    /// Reading results back from the GPU failed.
    #[error("reading back from the GPU failed: {0}")]
    Readback(String),

    /// A model or request kiln does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// A tuning profile that cannot be read.
    #[error("profile {origin}: {detail}; run `kiln tune` to write a new one")]
    Profile { origin: String, detail: String },

    /// An option outside its range.
    #[error("option `{option}` is {value}; it takes {expected}")]
    InvalidOption {
        option: &'static str,
        value: String,
        expected: &'static str,
    },

    /// A weight whose shape contradicts the model's metadata (a corrupt or crafted file).
    #[error(
        "tensor `{tensor}` has shape {found:?}, but the metadata says {expected:?} ({from}): \
         the file is inconsistent; download or convert it again"
    )]
    TensorShape {
        tensor: String,
        found: Vec<u64>,
        expected: Vec<u64>,
        from: &'static str,
    },

    /// A weight that is NaN or infinite (a corrupt or crafted file).
    #[error(
        "tensor `{tensor}` holds a NaN or infinite value (element {index}): the file is \
         corrupt; download or convert it again"
    )]
    NonFiniteWeight { tensor: String, index: u64 },

    /// The CPU path refused an input.
    #[error("CPU path: {0}")]
    Cpu(#[from] kiln_cpu::CpuError),

    /// The logits a token was to be chosen from held a NaN or +inf, so no token was chosen.
    #[error(
        "the model produced NaN or infinite logits at position {position}: its weights may be \
         corrupt (NaN/inf) or the activations overflowed; try the CPU path or another file"
    )]
    NonFinite {
        /// The position whose logits were unusable (the token chosen there would have been
        /// the next one).
        position: u32,
    },

    /// The KV cache is full.
    #[error(
        "the context is full ({capacity} positions); start a new conversation or load the \
         model with a larger context"
    )]
    ContextFull { capacity: u32 },

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// A GGUF file is invalid or lacks what the caller needs.
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),

    /// A tokenizer could not be built or used.
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
}
