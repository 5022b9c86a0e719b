//! Compute pipelines built from the kernel table: created once per device and variant, after
//! the variant is checked against the device's features and limits; a bind-group cache; and
//! wgpu's on-disk pipeline cache where the backend supports one.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::gpu::context::Gpu;
use crate::gpu::counters::LiveCounters;
use crate::gpu::kernels::{BindingKind, KernelKey, KernelSpec};

/// A ready-to-dispatch kernel: its spec (workgroup size, bindings) and pipeline.
#[derive(Debug)]
pub struct Kernel {
    pub spec: &'static KernelSpec,
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
    pub(crate) index: usize,
}

/// Identity of a bind group: kernel, then each bound (buffer, offset, size) in binding order.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct BindKey {
    pub kernel: usize,
    pub entries: Vec<(wgpu::Buffer, u64, u64)>,
}

/// Bind groups kept at most; past that the cache starts over.
const MAX_BIND_GROUPS: usize = 8192;

pub(crate) struct Pipelines {
    kernels: Mutex<HashMap<usize, Arc<Kernel>>>,
    bind_groups: Mutex<HashMap<BindKey, wgpu::BindGroup>>,
    cache: Option<wgpu::PipelineCache>,
    cache_file: Option<PathBuf>,
}

impl Pipelines {
    pub fn new(
        device: &wgpu::Device,
        info: &wgpu::AdapterInfo,
        features: wgpu::Features,
        dir: Option<&Path>,
    ) -> Pipelines {
        let (cache, cache_file) = if features.contains(wgpu::Features::PIPELINE_CACHE) {
            let file = cache_dir(dir)
                .zip(wgpu::util::pipeline_cache_key(info))
                .map(|(d, key)| d.join(key));
            let data = file.as_ref().and_then(|f| std::fs::read(f).ok());
            // SAFETY: the data was written by `save_pipeline_cache` from `PipelineCache::get_data`
            // for an adapter with the same `pipeline_cache_key` (the file name); `fallback: true`
            // makes wgpu ignore data it cannot use.
            let cache = unsafe {
                device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                    label: Some("kiln pipeline cache"),
                    data: data.as_deref(),
                    fallback: true,
                })
            };
            (Some(cache), file)
        } else {
            (None, None)
        };
        Pipelines {
            kernels: Mutex::default(),
            bind_groups: Mutex::default(),
            cache,
            cache_file,
        }
    }

    pub fn clear_bind_groups(&self) {
        if let Ok(mut groups) = self.bind_groups.lock() {
            groups.clear();
        }
    }
}

pub(crate) fn cache_dir(explicit: Option<&Path>) -> Option<PathBuf> {
    if cfg!(target_arch = "wasm32") {
        return None;
    }
    if let Some(dir) = explicit {
        return Some(dir.to_path_buf());
    }
    let xdg = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from);
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"));
    xdg.or(home).map(|d| d.join("kiln"))
}

impl Gpu {
    /// The pipeline for `key`, created on first use (checked against the device's features
    /// and limits first) and cached for the life of the device.
    pub fn kernel(&self, key: &KernelKey) -> Result<Arc<Kernel>> {
        let spec = KernelSpec::find(key)?;
        let index = spec.index();
        let pipelines = &self.inner.pipelines;
        if let Some(k) = pipelines
            .kernels
            .lock()
            .ok()
            .and_then(|m| m.get(&index).cloned())
        {
            return Ok(k);
        }
        self.check_kernel(spec)?;
        let kernel = Arc::new(self.build_kernel(spec, index));
        if let Ok(mut map) = pipelines.kernels.lock() {
            map.insert(index, kernel.clone());
        }
        Ok(kernel)
    }

    /// The variants whose pipelines this device has created (`name[key]`, sorted): which
    /// variants a workload chose.
    pub fn pipelines(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .inner
            .pipelines
            .kernels
            .lock()
            .map(|m| m.values().map(|k| k.spec.id()).collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// Creates the pipelines a workload will use before it runs, so that the first token pays
    /// no compile time, and waits until the driver reports them valid.
    pub async fn prewarm(&self, keys: &[KernelKey]) -> Result<()> {
        let scope = self
            .device()
            .push_error_scope(wgpu::ErrorFilter::Validation);
        let built: Result<Vec<_>> = keys.iter().map(|k| self.kernel(k)).collect();
        let error = scope.pop().await;
        built?;
        match error {
            Some(e) => Err(Error::Gpu(e.to_string())),
            None => self.check(),
        }
    }

    /// Checks a kernel against what naga cannot check at build time: device features, workgroup
    /// size and invocation limits, workgroup memory, storage buffers per stage.
    pub fn check_kernel(&self, spec: &KernelSpec) -> Result<()> {
        let caps = self.capabilities();
        if spec.features.f16 && !caps.f16 {
            return Err(Error::MissingFeature {
                kernel: spec.id(),
                feature: "SHADER_F16",
            });
        }
        if spec.features.subgroup && !caps.subgroup {
            return Err(Error::MissingFeature {
                kernel: spec.id(),
                feature: "SUBGROUP",
            });
        }
        if spec.features.dot4 && !caps.dot4 {
            return Err(Error::MissingFeature {
                kernel: spec.id(),
                feature: "the WGSL language extension packed_4x8_integer_dot_product",
            });
        }
        let limits = self.limits();
        let exceeds = |what, needed: u64, limit: u64| {
            (needed > limit).then(|| Error::KernelExceedsLimits {
                kernel: spec.id(),
                what,
                needed,
                limit,
            })
        };
        let [x, y, z] = spec.workgroup_size.map(u64::from);
        let storage = spec
            .bindings
            .iter()
            .filter(|b| b.kind != BindingKind::Uniform)
            .count() as u64;
        let checks = [
            exceeds(
                "invocations per workgroup",
                u64::from(spec.invocations()),
                u64::from(limits.max_compute_invocations_per_workgroup),
            ),
            exceeds(
                "workgroup size x",
                x,
                u64::from(limits.max_compute_workgroup_size_x),
            ),
            exceeds(
                "workgroup size y",
                y,
                u64::from(limits.max_compute_workgroup_size_y),
            ),
            exceeds(
                "workgroup size z",
                z,
                u64::from(limits.max_compute_workgroup_size_z),
            ),
            exceeds(
                "workgroup storage bytes",
                u64::from(spec.workgroup_storage_bytes),
                u64::from(limits.max_compute_workgroup_storage_size),
            ),
            exceeds(
                "storage buffers per stage",
                storage,
                u64::from(limits.max_storage_buffers_per_shader_stage),
            ),
        ];
        match checks.into_iter().flatten().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn build_kernel(&self, spec: &'static KernelSpec, index: usize) -> Kernel {
        let device = self.device();
        let label = spec.id();
        let entries: Vec<wgpu::BindGroupLayoutEntry> = spec
            .bindings
            .iter()
            .map(|b| wgpu::BindGroupLayoutEntry {
                binding: b.binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match b.kind {
                        BindingKind::Uniform => wgpu::BufferBindingType::Uniform,
                        BindingKind::StorageRead => {
                            wgpu::BufferBindingType::Storage { read_only: true }
                        }
                        BindingKind::StorageReadWrite => {
                            wgpu::BufferBindingType::Storage { read_only: false }
                        }
                    },
                    // Uniform parameters live in the per-submit arena at a dynamic offset.
                    has_dynamic_offset: b.kind == BindingKind::Uniform,
                    min_binding_size: NonZeroU64::new(u64::from(b.min_size)),
                },
                count: None,
            })
            .collect();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&label),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(spec.wgsl.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions::default(),
            cache: self.inner.pipelines.cache.as_ref(),
        });
        LiveCounters::add(&self.live_counters().pipelines_created, 1);
        Kernel {
            spec,
            pipeline,
            layout,
            index,
        }
    }

    /// The bind group for `key`, created once.
    pub(crate) fn bind_group(&self, kernel: &Kernel, key: BindKey) -> wgpu::BindGroup {
        let pipelines = &self.inner.pipelines;
        let mut groups = pipelines
            .bind_groups
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(g) = groups.get(&key) {
            return g.clone();
        }
        if groups.len() >= MAX_BIND_GROUPS {
            groups.clear();
        }
        let group = self.create_bind_group(kernel, &key.entries);
        groups.insert(key, group.clone());
        group
    }

    /// Creates (and counts) a bind group of `kernel` over `entries` (buffer, offset, size) in
    /// binding order.
    pub(crate) fn create_bind_group(
        &self,
        kernel: &Kernel,
        entries: &[(wgpu::Buffer, u64, u64)],
    ) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = kernel
            .spec
            .bindings
            .iter()
            .zip(entries)
            .map(|(b, (buffer, offset, size))| wgpu::BindGroupEntry {
                binding: b.binding,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer,
                    offset: *offset,
                    size: NonZeroU64::new(*size),
                }),
            })
            .collect();
        LiveCounters::add(&self.live_counters().bind_groups_created, 1);
        self.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.spec.name),
            layout: &kernel.layout,
            entries: &entries,
        })
    }

    /// Writes wgpu's pipeline cache to disk so that the next run skips shader compilation.
    /// Does nothing where the backend has no pipeline cache (browsers, Metal, DX12 today).
    pub fn save_pipeline_cache(&self) -> Result<()> {
        let pipelines = &self.inner.pipelines;
        let (Some(cache), Some(file)) = (&pipelines.cache, &pipelines.cache_file) else {
            return Ok(());
        };
        let Some(data) = cache.get_data() else {
            return Ok(());
        };
        let io = |source| Error::Io {
            path: file.display().to_string(),
            source,
        };
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        // A temporary name of this process and moment, renamed over the file at once: several
        // processes saving together each write their own, and a reader never sees half a file.
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut tmp = file.clone().into_os_string();
        tmp.push(format!(".{}-{stamp}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let written = std::fs::write(&tmp, &data).and_then(|()| std::fs::rename(&tmp, file));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(io)
    }

    /// Where the pipeline cache is persisted, if anywhere.
    pub fn pipeline_cache_file(&self) -> Option<&Path> {
        self.inner.pipelines.cache_file.as_deref()
    }
}
