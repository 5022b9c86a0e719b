//! The GPU context: adapter selection, device creation with the optional features kiln uses,
//! recorded limits, device-lost and uncaptured-error tracking.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::gpu::counters::{Counters, LiveCounters};
use crate::gpu::pipelines::Pipelines;
use crate::gpu::pool::BufferPool;
use crate::gpu::recorder::Arena;
use crate::tune::{Overrides, ProfileSource, SplitKind, Tuning, find_profile, parse_prefill};

/// How to pick an adapter. [`GpuOptions::from_env`] reads the same choices from the environment.
#[derive(Clone, Debug)]
pub struct GpuOptions {
    /// Backends to consider (`KILN_BACKEND=vulkan,metal,dx12,gl,webgpu`); all by default.
    pub backends: wgpu::Backends,
    /// `KILN_POWER=high|low`; high performance by default.
    pub power_preference: wgpu::PowerPreference,
    /// Only adapters whose name contains this (case-insensitive; `KILN_ADAPTER`).
    pub adapter_name: Option<String>,
    /// Folder for the persisted pipeline cache (`KILN_CACHE_DIR`); natively defaults to
    /// `$XDG_CACHE_HOME/kiln` or `~/.cache/kiln`. Unused where the backend has no pipeline cache.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Use WGSL's `dot4I8Packed` where the platform has it (`KILN_DOT4=0` turns it off, to
    /// measure or to work around a driver); true by default.
    pub packed_int_dot: bool,
    /// Use subgroup operations where the adapter has them (`KILN_SUBGROUPS=0` turns them off,
    /// so the shared-memory reductions run: to measure, or to work around a driver); true by
    /// default.
    pub subgroups: bool,
    /// Ask the device for at most this many bytes per buffer and per storage binding
    /// (`KILN_MAX_BUFFER`, e.g. `128MiB`): to run as a device with smaller limits would (a phone's
    /// browser), or to test that kiln splits its weights below them. None: the adapter's.
    pub max_buffer_bytes: Option<u64>,
    /// Where to look for a tuned profile of the adapter (`KILN_PROFILE=PATH|off`); by default
    /// the folder `kiln tune` writes to. See [`crate::tune`].
    pub profiles: ProfileSource,
    /// Variant choices that win over the profile and the heuristics (`KILN_GEMV_SPLIT`,
    /// `KILN_PREFILL`, `KILN_FUSE`, `KILN_ATTN_SPLIT`).
    pub overrides: Overrides,
}

impl Default for GpuOptions {
    /// Every adapter, high performance, the adapter's features and limits, the tuned profile of
    /// the adapter if `kiln tune` wrote one. Reads no environment variable.
    fn default() -> Self {
        GpuOptions {
            backends: wgpu::Backends::all(),
            power_preference: wgpu::PowerPreference::HighPerformance,
            adapter_name: None,
            cache_dir: None,
            packed_int_dot: true,
            subgroups: true,
            max_buffer_bytes: None,
            profiles: ProfileSource::default(),
            overrides: Overrides::default(),
        }
    }
}

/// The environment variables [`GpuOptions::from_env`] reads.
pub const GPU_ENV: [&str; 12] = [
    "KILN_BACKEND",
    "KILN_POWER",
    "KILN_ADAPTER",
    "KILN_CACHE_DIR",
    "KILN_DOT4",
    "KILN_SUBGROUPS",
    "KILN_MAX_BUFFER",
    "KILN_PROFILE",
    "KILN_GEMV_SPLIT",
    "KILN_PREFILL",
    "KILN_FUSE",
    "KILN_ATTN_SPLIT",
];

/// `name`'s value if it is set and not empty.
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// An environment variable's value that is not one the variable takes.
pub(crate) fn bad_env(option: &'static str, value: String, expected: &'static str) -> Error {
    Error::InvalidOption {
        option,
        value: format!("`{value}`"),
        expected,
    }
}

/// A `0`/`1` switch from the environment.
fn env_flag(name: &'static str) -> Result<Option<bool>> {
    match env(name).as_deref() {
        None => Ok(None),
        Some("1") => Ok(Some(true)),
        Some("0") => Ok(Some(false)),
        Some(v) => Err(bad_env(name, v.to_string(), "0 or 1")),
    }
}

impl GpuOptions {
    /// The defaults, overridden by the variables in [`GPU_ENV`]: the one place the GPU
    /// options read the environment (the CLI calls it; a library user may). A value a variable
    /// does not take is an [`Error::InvalidOption`] naming it.
    pub fn from_env() -> Result<Self> {
        let mut opts = GpuOptions::default();
        if let Some(list) = env("KILN_BACKEND") {
            opts.backends = wgpu::Backends::from_comma_list(&list);
        }
        if let Some(power) = env("KILN_POWER") {
            opts.power_preference = match power.to_ascii_lowercase().as_str() {
                "low" | "low-power" => wgpu::PowerPreference::LowPower,
                "high" | "high-performance" => wgpu::PowerPreference::HighPerformance,
                _ => return Err(bad_env("KILN_POWER", power, "high or low")),
            };
        }
        opts.adapter_name = env("KILN_ADAPTER");
        opts.cache_dir = std::env::var_os("KILN_CACHE_DIR")
            .filter(|v| !v.is_empty())
            .map(Into::into);
        opts.packed_int_dot = env_flag("KILN_DOT4")?.unwrap_or(true);
        opts.subgroups = env_flag("KILN_SUBGROUPS")?.unwrap_or(true);
        if let Some(v) = env("KILN_MAX_BUFFER") {
            opts.max_buffer_bytes = Some(
                parse_bytes(&v)
                    .ok_or_else(|| bad_env("KILN_MAX_BUFFER", v, "a size such as 128MiB"))?,
            );
        }
        match env("KILN_PROFILE") {
            Some(v) if v == "off" => opts.profiles = ProfileSource::off(),
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| Error::Profile {
                    origin: path.clone(),
                    detail: format!("cannot be read ({e}; KILN_PROFILE)"),
                })?;
                opts.profiles.texts.push((path, text));
            }
            None => {}
        }
        let o = &mut opts.overrides;
        o.gemv_split = match env("KILN_GEMV_SPLIT").as_deref() {
            None => None,
            Some("thread") => Some(SplitKind::Thread),
            Some("group") => Some(SplitKind::Group),
            Some(v) => return Err(bad_env("KILN_GEMV_SPLIT", v.into(), "thread or group")),
        };
        o.prefill = match env("KILN_PREFILL") {
            None => None,
            Some(v) => {
                Some(parse_prefill(&v).ok_or_else(|| bad_env("KILN_PREFILL", v, "tiled or gemv"))?)
            }
        };
        o.fused = env_flag("KILN_FUSE")?;
        o.attn_split = match env("KILN_ATTN_SPLIT") {
            None => None,
            Some(v) => Some(v.parse().map_err(|_| {
                bad_env(
                    "KILN_ATTN_SPLIT",
                    v,
                    "a number of positions (0: never split)",
                )
            })?),
        };
        Ok(opts)
    }
}

/// The `KILN_*` variables of `names` that are set, with their values (for reports).
pub fn env_overrides(names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .filter_map(|&n| Some((n.to_string(), env(n)?)))
        .collect()
}

/// A byte count as people write it: `1048576`, `512KiB`, `128MiB`, `1GiB` (also `K`, `M`, `G`,
/// `KB`, `MB`, `GB`: all powers of 1024), case-insensitive. None when it is not one.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let shift = match unit.trim() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Optional features kiln turns on when the adapter has them.
const WANTED_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::SUBGROUP_BARRIER)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::PIPELINE_CACHE);

/// What the device can do, as kernel selection needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// f16 in shaders (SHADER_F16).
    pub f16: bool,
    /// Subgroup operations (SUBGROUP and SUBGROUP_BARRIER).
    pub subgroup: bool,
    /// GPU timestamps (TIMESTAMP_QUERY).
    pub timestamps: bool,
    /// Smallest and largest subgroup size the adapter reports.
    pub subgroup_sizes: (u32, u32),
    /// WGSL's packed int8 dot product `dot4I8Packed` (the language extension
    /// `packed_4x8_integer_dot_product`), unless [`GpuOptions::packed_int_dot`] is off.
    /// Natively naga always has it: it emits the SPIR-V `OpSDot` where the Vulkan device has
    /// integer dot products (Vulkan 1.3) and unpacks elsewhere; in a browser it is what the
    /// browser's WGSL reports.
    pub dot4: bool,
}

pub(crate) struct GpuInner {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub caps: Capabilities,
    pub tuning: Tuning,
    pub counters: LiveCounters,
    pub pool: BufferPool,
    pub pipelines: Pipelines,
    pub arena: Arena,
    /// Bound where a kernel does not use a binding this time: one for read-only bindings and
    /// one for a writable one (so it aliases no other writable binding of the dispatch).
    placeholders: [wgpu::Buffer; 2],
    lost: Arc<(AtomicBool, Mutex<String>)>,
    first_error: Arc<Mutex<Option<String>>>,
}

/// A GPU device and everything kiln keeps per device: pipelines, buffer pool, counters.
/// Cheap to clone (a shared handle).
#[derive(Clone)]
pub struct Gpu {
    pub(crate) inner: Arc<GpuInner>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.inner.info.name)
            .field("backend", &self.inner.info.backend)
            .field("caps", &self.inner.caps)
            .finish_non_exhaustive()
    }
}

impl Gpu {
    /// Opens the best adapter that matches `opts` and creates a device on it.
    pub async fn new(opts: GpuOptions) -> Result<Gpu> {
        if let Some(cap) = opts.max_buffer_bytes.filter(|&cap| cap < 1 << 20) {
            return Err(Error::InvalidOption {
                option: "max_buffer_bytes (KILN_MAX_BUFFER)",
                value: cap.to_string(),
                expected: "a size of at least 1MiB, such as 128MiB",
            });
        }
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = opts.backends;
        let instance = wgpu::Instance::new(desc);
        let adapter = pick_adapter(&instance, &opts).await?;
        let info = adapter.get_info();
        let mut wanted = WANTED_FEATURES;
        if !opts.subgroups {
            wanted.remove(wgpu::Features::SUBGROUP | wgpu::Features::SUBGROUP_BARRIER);
        }
        let features = adapter.features() & wanted;
        let mut limits = adapter.limits();
        if let Some(cap) = opts.max_buffer_bytes {
            // A binding must stay a multiple of 4 bytes.
            let cap = cap / 4 * 4;
            limits.max_buffer_size = limits.max_buffer_size.min(cap);
            limits.max_storage_buffer_binding_size =
                limits.max_storage_buffer_binding_size.min(cap);
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("kiln"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::DeviceRequest {
                adapter: info.name.clone(),
                detail: e.to_string(),
            })?;

        let lost = Arc::new((AtomicBool::new(false), Mutex::new(String::new())));
        let lost_cb = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut m) = lost_cb.1.lock() {
                *m = if message.is_empty() {
                    format!("{reason:?}")
                } else {
                    format!("{reason:?}: {message}")
                };
            }
            lost_cb.0.store(true, Ordering::SeqCst);
        });
        let first_error = Arc::new(Mutex::new(None));
        let err_cb = first_error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = err_cb.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }));

        let caps = Capabilities {
            f16: features.contains(wgpu::Features::SHADER_F16),
            subgroup: features
                .contains(wgpu::Features::SUBGROUP | wgpu::Features::SUBGROUP_BARRIER),
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            subgroup_sizes: (info.subgroup_min_size, info.subgroup_max_size),
            dot4: opts.packed_int_dot
                && instance
                    .wgsl_language_features()
                    .contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct),
        };
        let (profile, notes) = find_profile(
            &info,
            &opts.profiles,
            #[cfg(not(target_arch = "wasm32"))]
            opts.cache_dir.as_deref(),
        );
        let tuning = Tuning::new(&info, caps, opts.overrides, profile, notes);
        let pipelines = Pipelines::new(&device, &info, features, opts.cache_dir.as_deref());
        let placeholder = |label| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 256,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        let placeholders = [
            placeholder("kiln unused input"),
            placeholder("kiln unused output"),
        ];
        Ok(Gpu {
            inner: Arc::new(GpuInner {
                device,
                queue,
                info,
                limits,
                caps,
                tuning,
                counters: LiveCounters::default(),
                pool: BufferPool::default(),
                pipelines,
                arena: Arena::default(),
                placeholders,
                lost,
                first_error,
            }),
        })
    }

    /// [`Gpu::new`], blocking the calling thread (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(opts: GpuOptions) -> Result<Gpu> {
        pollster::block_on(Gpu::new(opts))
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// The adapter's name, backend, device type and subgroup sizes.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// The device limits (equal to the adapter's: kiln requests all of them).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }

    /// Nanoseconds per GPU timestamp tick (see [`crate::gpu::Recorder::time_dispatches`]).
    pub fn timestamp_period(&self) -> f32 {
        self.inner.queue.get_timestamp_period()
    }

    pub fn capabilities(&self) -> Capabilities {
        self.inner.caps
    }

    /// The variant choices on this device: the tuned profile found for it (if any) over
    /// heuristics from the adapter, with the options' overrides over both.
    pub fn tuning(&self) -> &Tuning {
        &self.inner.tuning
    }

    /// A small buffer to bind where a kernel ignores a binding this time: `writable` for a
    /// read-write binding (a different buffer, so that it aliases nothing the dispatch writes).
    pub fn placeholder(&self, writable: bool) -> crate::gpu::View<'_> {
        (&self.inner.placeholders[usize::from(writable)]).into()
    }

    /// A buffer to stand in where a plan only measures sizes (never written or bound).
    pub(crate) fn stand_in(&self) -> wgpu::Buffer {
        self.inner.placeholders[0].clone()
    }

    /// A snapshot of the work counters.
    pub fn counters(&self) -> Counters {
        self.inner.counters.snapshot()
    }

    pub(crate) fn live_counters(&self) -> &LiveCounters {
        &self.inner.counters
    }

    /// The driver's words if the device was lost (None while it works). Natively this first
    /// waits for the device's queue: wgpu reports a loss once the queue is empty, and an
    /// operation on a lost device (a readback, say) may fail before that. For after an error.
    pub fn lost_reason(&self) -> Option<String> {
        #[cfg(not(target_arch = "wasm32"))]
        let _ = self.inner.device.poll(wgpu::PollType::wait_indefinitely());
        self.reported_loss()
    }

    /// The driver's words if wgpu has reported the device lost (no wait).
    fn reported_loss(&self) -> Option<String> {
        let (lost, reason) = &*self.inner.lost;
        lost.load(Ordering::SeqCst)
            .then(|| reason.lock().map(|m| m.clone()).unwrap_or_default())
    }

    /// Fails if the device was lost or wgpu reported an error since the last check.
    pub fn check(&self) -> Result<()> {
        if let Some(reason) = self.reported_loss() {
            return Err(Error::DeviceLost { reason });
        }
        if let Some(message) = self
            .inner
            .first_error
            .lock()
            .ok()
            .and_then(|mut e| e.take())
        {
            return Err(Error::Gpu(message));
        }
        Ok(())
    }

    /// Waits until the GPU has finished all submitted work (native); counts one wait.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait_idle(&self) -> Result<()> {
        LiveCounters::add(&self.inner.counters.waits, 1);
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(e.to_string()))?;
        self.check()
    }

    /// Waits until the GPU has finished all work submitted so far (counts one wait): natively
    /// by polling the device, in a browser by awaiting the queue.
    pub async fn idle(&self) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        return self.wait_idle();
        #[cfg(target_arch = "wasm32")]
        {
            LiveCounters::add(&self.inner.counters.waits, 1);
            let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
            self.inner.queue.on_submitted_work_done(move || {
                let _ = tx.send(());
            });
            rx.receive().await;
            self.check()
        }
    }

    /// Checks the size of a buffer (`label`) against the device's limits before creating it.
    pub(crate) fn check_buffer_size(
        &self,
        label: &str,
        size: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<()> {
        let limits = &self.inner.limits;
        let too_large = |limit_name, limit| {
            Err(Error::BufferTooLarge {
                what: label.to_string(),
                size,
                limit_name,
                limit,
            })
        };
        if size > limits.max_buffer_size {
            return too_large("maxBufferSize", limits.max_buffer_size);
        }
        if usage.contains(wgpu::BufferUsages::STORAGE)
            && size > limits.max_storage_buffer_binding_size
        {
            return too_large(
                "maxStorageBufferBindingSize",
                limits.max_storage_buffer_binding_size,
            );
        }
        Ok(())
    }

    /// Creates a buffer outside the pool (weights, caches that live as long as a model),
    /// counted and size-checked.
    pub fn create_buffer(
        &self,
        label: &str,
        size: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer> {
        self.check_buffer_size(label, size, usage)?;
        let size = size.max(4).next_multiple_of(4);
        self.inner.counters.created(size);
        Ok(self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: false,
        }))
    }

    /// Creates a storage buffer holding `data` (padded to 4 bytes).
    pub fn upload(&self, label: &str, data: &[u8]) -> Result<wgpu::Buffer> {
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        let buffer = self.create_buffer(label, data.len() as u64, usage)?;
        self.write(&buffer, 0, data);
        Ok(buffer)
    }

    /// Writes `data` into `buffer` at `offset` before the next submit (padded to 4 bytes).
    pub fn write(&self, buffer: &wgpu::Buffer, offset: u64, data: &[u8]) {
        LiveCounters::add(&self.inner.counters.bytes_uploaded, data.len() as u64);
        if data.len().is_multiple_of(4) {
            self.inner.queue.write_buffer(buffer, offset, data);
        } else {
            let mut padded = data.to_vec();
            padded.resize(data.len().next_multiple_of(4), 0);
            self.inner.queue.write_buffer(buffer, offset, &padded);
        }
    }
}

async fn pick_adapter(instance: &wgpu::Instance, opts: &GpuOptions) -> Result<wgpu::Adapter> {
    if let Some(wanted) = &opts.adapter_name {
        let wanted_lower = wanted.to_lowercase();
        let adapters = instance.enumerate_adapters(opts.backends).await;
        let names: Vec<String> = adapters
            .iter()
            .map(|a| format!("{} ({:?})", a.get_info().name, a.get_info().backend))
            .collect();
        return adapters
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&wanted_lower))
            .ok_or_else(|| Error::NoAdapter {
                detail: format!(
                    "none is named like `{wanted}`; available: {}",
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                ),
            });
    }
    instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: opts.power_preference,
            force_fallback_adapter: false,
            compatible_surface: None,
            apply_limit_buckets: false,
        })
        .await
        .map_err(|e| Error::NoAdapter {
            detail: format!("backends {:?}: {e}", opts.backends),
        })
}
