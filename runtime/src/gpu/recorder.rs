//! The command recorder: work is recorded as values (dispatches, copies, readbacks) and encoded
//! into one command encoder and one submit. Small uniform parameters of every dispatch go into
//! one arena buffer, carved into aligned slots, written once per submit and bound at a dynamic
//! offset (so bind groups are cached across steps). A recording can also be frozen into a
//! [`crate::gpu::Plan`] that replays it step after step (see `plan.rs`).

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::gpu::context::Gpu;
use crate::gpu::counters::LiveCounters;
use crate::gpu::kernels::BindingKind;
use crate::gpu::pipelines::{BindKey, Kernel};
use crate::gpu::plan::Shift;
use crate::gpu::pool::GpuBuffer;

/// A byte range of a buffer to bind or copy.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
}

impl<'a> View<'a> {
    pub fn new(buffer: &'a wgpu::Buffer, offset: u64, size: u64) -> Self {
        View {
            buffer,
            offset,
            size,
        }
    }
}

impl<'a> From<&'a wgpu::Buffer> for View<'a> {
    fn from(buffer: &'a wgpu::Buffer) -> Self {
        View::new(buffer, 0, buffer.size())
    }
}

impl<'a> From<&'a GpuBuffer> for View<'a> {
    fn from(buffer: &'a GpuBuffer) -> Self {
        View::new(buffer.buffer(), 0, buffer.len().next_multiple_of(4))
    }
}

pub(crate) enum Command {
    Dispatch {
        kernel: Arc<Kernel>,
        groups: [u32; 3],
        /// Byte offset of the parameters in the arena, and their binding size.
        params: Option<(u32, u64)>,
        buffers: Vec<(wgpu::Buffer, u64, u64)>,
        /// How parameters and grid follow the step's position (kept only when planning).
        shift: Option<Box<dyn Shift>>,
    },
    Copy {
        src: wgpu::Buffer,
        src_offset: u64,
        dst: wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    },
}

/// The per-device uniform arena, shared by all recorders; grows (never shrinks) to the largest
/// parameter blob one submit has needed.
#[derive(Debug, Default)]
pub(crate) struct Arena {
    buffer: Mutex<Option<wgpu::Buffer>>,
}

/// Records a step's work; [`Recorder::submit`] encodes it with one encoder and one submit.
pub struct Recorder {
    gpu: Gpu,
    pub(crate) commands: Vec<Command>,
    pub(crate) params: Vec<u8>,
    dispatches: u64,
    /// Keeps each position-dependent dispatch's [`Shift`] for a plan.
    planning: bool,
    /// Where the readbacks recorded here learn their submit.
    submissions: Vec<Arc<std::sync::OnceLock<wgpu::SubmissionIndex>>>,
    /// When recording began (host time spent recording is counted at the submit).
    started: crate::clock::Instant,
    /// Timestamps around all dispatches: the query set (2 slots), the resolve buffer, and the
    /// staging buffer the ticks are copied to.
    timer: Option<(wgpu::QuerySet, wgpu::Buffer, wgpu::Buffer)>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("commands", &self.commands.len())
            .field("param_bytes", &self.params.len())
            .finish()
    }
}

impl Gpu {
    /// A new, empty recorder.
    pub fn recorder(&self) -> Recorder {
        Recorder {
            gpu: self.clone(),
            commands: Vec::new(),
            params: Vec::new(),
            dispatches: 0,
            planning: false,
            submissions: Vec::new(),
            started: crate::clock::Instant::now(),
            timer: None,
        }
    }

    /// A recorder whose work becomes a [`crate::gpu::Plan`] ([`Recorder::into_plan`]): it keeps
    /// how each position-dependent dispatch follows the step's position.
    pub fn plan_recorder(&self) -> Recorder {
        Recorder {
            planning: true,
            ..self.recorder()
        }
    }

    /// Spreads `n` workgroups over x and y so that neither exceeds the per-dimension limit.
    pub fn grid(&self, n: u32) -> [u32; 3] {
        grid_of(n, self.limits().max_compute_workgroups_per_dimension)
    }
}

/// [`Gpu::grid`] for a per-dimension limit of `max` (for grids computed outside a recording).
pub fn grid_of(n: u32, max: u32) -> [u32; 3] {
    let max = max.max(1);
    if n <= max {
        [n, 1, 1]
    } else {
        let y = n.div_ceil(max);
        [n.div_ceil(y), y, 1]
    }
}

impl Recorder {
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Commands recorded so far.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Bytes the parameters of the dispatches recorded with a [`Shift`] (kept for a plan, see
    /// [`Gpu::plan_recorder`]) take in a [`crate::gpu::StepArena`] per replay: each starts at
    /// an offset aligned as uniform bindings must be.
    pub fn shifting_bytes(&self) -> usize {
        let align = self.gpu.limits().min_uniform_buffer_offset_alignment as usize;
        self.commands
            .iter()
            .filter_map(|c| match c {
                Command::Dispatch {
                    shift: Some(_),
                    params,
                    ..
                } => Some(
                    params
                        .map_or(0, |(_, size)| size as usize)
                        .next_multiple_of(align),
                ),
                _ => None,
            })
            .sum()
    }

    /// Records one dispatch of `kernel` over `groups` workgroups, with `params` as its uniform
    /// (binding 0, if the kernel has one) and `buffers` bound in binding order to its storage
    /// bindings. Checks counts, alignment and sizes against the kernel and the device.
    pub fn dispatch<P: bytemuck::Pod>(
        &mut self,
        kernel: &Arc<Kernel>,
        groups: [u32; 3],
        params: &P,
        buffers: &[View<'_>],
    ) -> Result<()> {
        self.dispatch_bytes(kernel, groups, bytemuck::bytes_of(params), buffers, None)
    }

    /// Records a dispatch whose parameters and grid depend on the step's position: `shift`
    /// gives them (at its recorded position here; a [`crate::gpu::Plan`] asks again at every
    /// step it replays).
    pub fn dispatch_shifting<S: Shift + 'static>(
        &mut self,
        kernel: &Arc<Kernel>,
        shift: S,
        buffers: &[View<'_>],
    ) -> Result<()> {
        let mut bytes = Vec::new();
        let groups = shift.at(0, &mut bytes);
        let keep: Option<Box<dyn Shift>> = if self.planning {
            Some(Box::new(shift))
        } else {
            None
        };
        self.dispatch_bytes(kernel, groups, &bytes, buffers, keep)
    }

    fn dispatch_bytes(
        &mut self,
        kernel: &Arc<Kernel>,
        groups: [u32; 3],
        bytes: &[u8],
        buffers: &[View<'_>],
        shift: Option<Box<dyn Shift>>,
    ) -> Result<()> {
        let spec = kernel.spec;
        let limits = self.gpu.limits();
        let shape = |detail: String| Error::Shape {
            op: spec.name,
            detail,
        };
        let max_groups = limits.max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > max_groups) || groups.contains(&0) {
            return Err(shape(format!(
                "{groups:?} workgroups: each dimension must be 1..={max_groups}"
            )));
        }
        let storage: Vec<_> = spec
            .bindings
            .iter()
            .filter(|b| b.kind != BindingKind::Uniform)
            .collect();
        if storage.len() != buffers.len() {
            return Err(shape(format!(
                "{} buffers given, {} bindings expected",
                buffers.len(),
                storage.len()
            )));
        }
        let align = u64::from(limits.min_storage_buffer_offset_alignment);
        let max_binding = limits.max_storage_buffer_binding_size;
        let mut bound = Vec::with_capacity(buffers.len());
        for (b, v) in storage.iter().zip(buffers) {
            if v.offset % align != 0 {
                return Err(shape(format!(
                    "binding {} offset {} is not a multiple of {align}",
                    b.binding, v.offset
                )));
            }
            if v.size < u64::from(b.min_size) || v.size % 4 != 0 {
                return Err(shape(format!(
                    "binding {} size {} must be a multiple of 4 and at least {}",
                    b.binding, v.size, b.min_size
                )));
            }
            if v.offset + v.size > v.buffer.size() {
                return Err(shape(format!(
                    "binding {} range {}..{} is outside its {}-byte buffer",
                    b.binding,
                    v.offset,
                    v.offset + v.size,
                    v.buffer.size()
                )));
            }
            if v.size > max_binding {
                return Err(Error::BufferTooLarge {
                    what: format!("binding {} of {}", b.binding, spec.name),
                    size: v.size,
                    limit_name: "maxStorageBufferBindingSize",
                    limit: max_binding,
                });
            }
            bound.push((v.buffer.clone(), v.offset, v.size));
        }
        let params = match spec
            .bindings
            .iter()
            .find(|b| b.kind == BindingKind::Uniform)
        {
            Some(u) => {
                if bytes.len() < u.min_size as usize {
                    return Err(shape(format!(
                        "parameters are {} bytes, the kernel reads {}",
                        bytes.len(),
                        u.min_size
                    )));
                }
                let slot_align = u64::from(limits.min_uniform_buffer_offset_alignment) as usize;
                let offset = self.params.len().next_multiple_of(slot_align);
                self.params.resize(offset, 0);
                self.params.extend_from_slice(bytes);
                let size = (bytes.len() as u64).next_multiple_of(16);
                self.params.resize(offset + size as usize, 0);
                Some((offset as u32, size))
            }
            None => None,
        };
        self.commands.push(Command::Dispatch {
            kernel: kernel.clone(),
            groups,
            params,
            buffers: bound,
            shift,
        });
        self.dispatches += 1;
        Ok(())
    }

    /// Records a buffer-to-buffer copy (offsets and size multiples of 4).
    pub fn copy(&mut self, src: View<'_>, dst: View<'_>) -> Result<()> {
        let size = src.size;
        if !src.offset.is_multiple_of(4) || !dst.offset.is_multiple_of(4) || !size.is_multiple_of(4)
        {
            return Err(Error::Shape {
                op: "copy",
                detail: format!(
                    "offsets {}, {} and size {size} must be multiples of 4",
                    src.offset, dst.offset
                ),
            });
        }
        if dst.size < size
            || src.offset + size > src.buffer.size()
            || dst.offset + size > dst.buffer.size()
        {
            return Err(Error::Shape {
                op: "copy",
                detail: format!("{size} bytes do not fit the source or destination range"),
            });
        }
        self.commands.push(Command::Copy {
            src: src.buffer.clone(),
            src_offset: src.offset,
            dst: dst.buffer.clone(),
            dst_offset: dst.offset,
            size,
        });
        Ok(())
    }

    /// Schedules a copy of `view` to the CPU at this point of the recording. Its bytes are
    /// available after [`Recorder::submit`], from [`Readback::bytes`] or [`Readback::wait`].
    pub fn read(&mut self, view: View<'_>) -> Result<Readback> {
        let staging = self.gpu.alloc(
            "kiln readback",
            view.size,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        self.copy(
            view,
            View::new(staging.buffer(), 0, staging.buffer().size()),
        )?;
        let back = Readback {
            staging,
            size: view.size,
            gpu: self.gpu.clone(),
            submission: Arc::default(),
        };
        self.submissions.push(back.submission.clone());
        Ok(back)
    }

    /// Asks for GPU timestamps at the start of the first compute pass and the end of the last
    /// one of this recording (benchmarks). After [`Recorder::submit`], the readback holds two
    /// little-endian u64 ticks (start, end); multiply their difference by
    /// [`Gpu::timestamp_period`] for nanoseconds. An [`Error::Unsupported`] where the adapter has
    /// no TIMESTAMP_QUERY (time whole submits on the CPU clock there).
    pub fn time_dispatches(&mut self) -> Result<Readback> {
        if !self.gpu.capabilities().timestamps {
            return Err(Error::Unsupported(format!(
                "GPU timestamps on `{}`, which lacks TIMESTAMP_QUERY",
                self.gpu.adapter_info().name
            )));
        }
        let device = self.gpu.device();
        let set = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("kiln timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let resolve = self.gpu.create_buffer(
            "kiln timestamp resolve",
            16,
            wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        )?;
        let staging = self.gpu.alloc(
            "kiln timestamp readback",
            16,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        self.timer = Some((set, resolve, staging.buffer().clone()));
        let back = Readback {
            staging,
            size: 16,
            gpu: self.gpu.clone(),
            submission: Arc::default(),
        };
        self.submissions.push(back.submission.clone());
        Ok(back)
    }

    /// Encodes everything recorded into one command buffer and submits it: one submit, one
    /// upload of all parameters.
    pub fn submit(self) -> Result<()> {
        let gpu = self.gpu.clone();
        gpu.check()?;
        let device = gpu.device();
        let counters = gpu.live_counters();
        // Held until the submit, so that no other recorder rewrites the arena in between.
        let mut arena = gpu
            .inner
            .arena
            .buffer
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let needed = (self.params.len() as u64).max(256);
        if arena.as_ref().is_none_or(|a| a.size() < needed) {
            counters.created(needed.next_power_of_two());
            *arena = Some(device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kiln uniform arena"),
                size: needed.next_power_of_two(),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let arena_buffer = arena.as_ref().expect("created above").clone();
        if !self.params.is_empty() {
            gpu.write(&arena_buffer, 0, &self.params);
        }

        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("kiln step"),
        });
        let last_dispatch = self
            .commands
            .iter()
            .rposition(|c| matches!(c, Command::Dispatch { .. }));
        let mut first_pass = true;
        let mut commands = self.commands.iter().enumerate().peekable();
        while commands.peek().is_some() {
            if let Some((
                _,
                Command::Copy {
                    src,
                    src_offset,
                    dst,
                    dst_offset,
                    size,
                },
            )) = commands.peek()
            {
                encoder.copy_buffer_to_buffer(src, *src_offset, dst, *dst_offset, *size);
                commands.next();
                continue;
            }
            // This pass runs the dispatches from here to the next copy: is it the last?
            let here = commands.peek().map_or(0, |&(i, _)| i);
            let run_end = self.commands[here..]
                .iter()
                .position(|c| !matches!(c, Command::Dispatch { .. }))
                .map_or(self.commands.len(), |n| here + n);
            let last_pass = last_dispatch.is_some_and(|l| l < run_end);
            let timestamp_writes =
                self.timer
                    .as_ref()
                    .map(|(set, _, _)| wgpu::ComputePassTimestampWrites {
                        query_set: set,
                        beginning_of_pass_write_index: first_pass.then_some(0),
                        end_of_pass_write_index: last_pass.then_some(1),
                    });
            first_pass = false;
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("kiln dispatches"),
                timestamp_writes,
            });
            while let Some((
                _,
                Command::Dispatch {
                    kernel,
                    groups,
                    params,
                    buffers,
                    ..
                },
            )) = commands.peek()
            {
                let mut entries = Vec::with_capacity(buffers.len() + 1);
                let mut offsets = Vec::new();
                if let Some((offset, size)) = params {
                    entries.push((arena_buffer.clone(), 0, *size));
                    offsets.push(*offset);
                }
                entries.extend(buffers.iter().cloned());
                let group = gpu.bind_group(
                    kernel,
                    BindKey {
                        kernel: kernel.index,
                        entries,
                    },
                );
                pass.set_pipeline(&kernel.pipeline);
                pass.set_bind_group(0, &group, &offsets);
                pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                commands.next();
            }
        }
        if let Some((set, resolve, staging)) = &self.timer {
            encoder.resolve_query_set(set, 0..2, resolve, 0);
            encoder.copy_buffer_to_buffer(resolve, 0, staging, 0, 16);
        }
        let commands = encoder.finish();
        let recorded = self.started.elapsed();
        let index = gpu.queue().submit([commands]);
        for s in &self.submissions {
            let _ = s.set(index.clone());
        }
        drop(arena);
        LiveCounters::add(&counters.submits, 1);
        LiveCounters::add(&counters.dispatches, self.dispatches);
        LiveCounters::add(&counters.record_ns, recorded.as_nanos() as u64);
        Ok(())
    }
}

/// Bytes on their way back from the GPU; read them after the submit that carries the copy.
pub struct Readback {
    staging: GpuBuffer,
    size: u64,
    gpu: Gpu,
    /// The submit that carries the copy, once submitted: waiting polls until that one is done,
    /// not until everything submitted after it is (decode batches queue behind their readback).
    submission: Arc<std::sync::OnceLock<wgpu::SubmissionIndex>>,
}

impl std::fmt::Debug for Readback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readback")
            .field("size", &self.size)
            .finish()
    }
}

impl Readback {
    /// Marks the submit that carries the copy.
    pub(crate) fn submitted(&self, index: wgpu::SubmissionIndex) {
        let _ = self.submission.set(index);
    }

    /// Copies `view` into a pooled staging buffer at this point of `encoder`.
    pub(crate) fn copy_in(
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        view: View<'_>,
    ) -> Result<Readback> {
        let staging = gpu.alloc(
            "kiln readback",
            view.size,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        encoder.copy_buffer_to_buffer(view.buffer, view.offset, staging.buffer(), 0, view.size);
        Ok(Readback {
            staging,
            size: view.size,
            gpu: gpu.clone(),
            submission: Arc::default(),
        })
    }

    /// Waits for the copy (one CPU-GPU wait) and returns the bytes. On the web this yields to
    /// the browser; natively it polls the device.
    pub async fn bytes(self) -> Result<Vec<u8>> {
        let counters = self.gpu.live_counters();
        LiveCounters::add(&counters.waits, 1);
        let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
        let buffer = self.staging.buffer();
        buffer.map_async(wgpu::MapMode::Read, 0..self.size, move |result| {
            let _ = tx.send(result);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.gpu
            .device()
            .poll(wgpu::PollType::Wait {
                submission_index: self.submission.get().cloned(),
                timeout: None,
            })
            .map_err(|e| Error::Readback(e.to_string()))?;
        match rx.receive().await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(Error::Readback(e.to_string())),
            None => return Err(Error::Readback("the map callback never ran".into())),
        }
        let bytes = {
            let view = buffer
                .get_mapped_range(0..self.size)
                .map_err(|e| Error::Readback(e.to_string()))?;
            view.to_vec()
        };
        buffer.unmap();
        LiveCounters::add(&counters.bytes_read_back, self.size);
        self.gpu.check()?;
        Ok(bytes)
    }

    /// [`Readback::bytes`], blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(self) -> Result<Vec<u8>> {
        pollster::block_on(self.bytes())
    }
}
