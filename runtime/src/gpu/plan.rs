//! Prebuilt step plans. A decode step is the same dispatches every token: only a few parameters
//! (the position, the token slot) and at most one grid (split attention) move with the
//! position. A [`Plan`] is a recording frozen once: every pipeline, bind group and grid is
//! resolved when it is built, and the parameters that do not move live in a buffer of its own,
//! written once. Replaying it ([`StepArena::submit`], [`Replay::run`]) sets pipelines and bind
//! groups and dispatches: no key is built, nothing is hashed or allocated per dispatch. The
//! dispatches whose parameters follow the position were recorded through
//! [`crate::gpu::Recorder::dispatch_shifting`]; their [`Shift`] writes fresh parameters for each
//! replayed step into a [`StepArena`], whose two buffers alternate between submits (while the GPU
//! reads one batch's parameters the host writes the next batch's into the other).

use std::sync::Arc;

use crate::clock::Instant;
use crate::error::{Error, Result};
use crate::gpu::context::Gpu;
use crate::gpu::counters::LiveCounters;
use crate::gpu::pipelines::Kernel;
use crate::gpu::recorder::{Command, Readback, Recorder, View};

/// How a dispatch's uniform parameters and grid follow the position of the step it belongs to.
pub trait Shift: Send + Sync {
    /// Appends the dispatch's uniform parameters to `out` and returns its grid, for a step
    /// `delta` positions after the one it was recorded at.
    fn at(&self, delta: u32, out: &mut Vec<u8>) -> [u32; 3];
}

/// A [`Shift`] from uniform parameters `P` as recorded and a rule `f(params, delta) -> grid`
/// that moves them (and gives the grid) for a step `delta` positions later.
pub struct Shifted<P, F> {
    pub params: P,
    pub f: F,
}

impl<P, F> std::fmt::Debug for Shifted<P, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shifted")
            .field("param_bytes", &std::mem::size_of::<P>())
            .finish()
    }
}

impl<P: bytemuck::Pod + Send + Sync, F: Fn(&mut P, u32) -> [u32; 3] + Send + Sync> Shift
    for Shifted<P, F>
{
    fn at(&self, delta: u32, out: &mut Vec<u8>) -> [u32; 3] {
        let mut params = self.params;
        let grid = (self.f)(&mut params, delta);
        out.extend_from_slice(bytemuck::bytes_of(&params));
        grid
    }
}

enum Bind {
    /// Parameters fixed at build time, at this offset of the plan's own buffer (if the kernel
    /// has parameters).
    Fixed {
        group: wgpu::BindGroup,
        offset: Option<u32>,
        groups: [u32; 3],
    },
    /// Parameters written per step into the [`StepArena`]: one bind group per arena buffer.
    Shifting {
        sets: [wgpu::BindGroup; 2],
        shift: Box<dyn Shift>,
        /// Bytes the kernel's uniform binding covers.
        size: usize,
    },
}

struct Entry {
    kernel: Arc<Kernel>,
    bind: Bind,
}

/// A recording frozen for replay (see the module docs).
pub struct Plan {
    entries: Vec<Entry>,
    shifting: usize,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("dispatches", &self.entries.len())
            .field("shifting", &self.shifting)
            .finish()
    }
}

impl Plan {
    /// Dispatches per replay.
    pub fn dispatches(&self) -> usize {
        self.entries.len()
    }

    /// Dispatches whose parameters are written per replay.
    pub fn shifting(&self) -> usize {
        self.shifting
    }
}

/// The per-step parameters of replayed plans: two buffers used by alternate submits, and the
/// host bytes of the batch being encoded.
pub struct StepArena {
    gpu: Gpu,
    buffers: [wgpu::Buffer; 2],
    next: usize,
    host: Vec<u8>,
}

impl std::fmt::Debug for StepArena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepArena")
            .field("bytes", &self.buffers[0].size())
            .finish()
    }
}

impl StepArena {
    /// Room for `bytes` of position-dependent parameters per submit (at least one slot).
    pub fn new(gpu: &Gpu, bytes: usize) -> Result<StepArena> {
        let align = gpu.limits().min_uniform_buffer_offset_alignment as usize;
        let size = bytes.next_multiple_of(align).max(align) as u64;
        let usage = wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST;
        let buffers = [
            gpu.create_buffer("kiln step parameters", size, usage)?,
            gpu.create_buffer("kiln step parameters", size, usage)?,
        ];
        Ok(StepArena {
            gpu: gpu.clone(),
            buffers,
            next: 0,
            host: Vec::with_capacity(size as usize),
        })
    }

    /// Position-dependent dispatches one submit can hold.
    pub fn slots(&self) -> usize {
        self.buffers[0].size() as usize
            / self.gpu.limits().min_uniform_buffer_offset_alignment as usize
    }

    /// Encodes the replays `f` makes into one compute pass, copies `read` to the CPU after it,
    /// writes the step parameters and submits: one submit. An error from `f` submits nothing.
    pub fn submit(
        &mut self,
        read: Option<View<'_>>,
        f: impl FnOnce(&mut Replay<'_>) -> Result<()>,
    ) -> Result<Option<Readback>> {
        let started = Instant::now();
        let gpu = self.gpu.clone();
        gpu.check()?;
        let mut encoder = gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("kiln replay"),
            });
        self.host.clear();
        let capacity = self.buffers[self.next].size() as usize;
        let dispatches = {
            let pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("kiln replay"),
                timestamp_writes: None,
            });
            let mut replay = Replay {
                pass,
                host: &mut self.host,
                which: self.next,
                align: gpu.limits().min_uniform_buffer_offset_alignment as usize,
                capacity,
                dispatches: 0,
            };
            f(&mut replay)?;
            replay.dispatches
        };
        let back = match read {
            Some(view) => Some(Readback::copy_in(&gpu, &mut encoder, view)?),
            None => None,
        };
        if !self.host.is_empty() {
            gpu.write(&self.buffers[self.next], 0, &self.host);
        }
        let commands = encoder.finish();
        let recorded = started.elapsed();
        let index = gpu.queue().submit([commands]);
        if let Some(b) = &back {
            b.submitted(index);
        }
        self.next ^= 1;
        let counters = gpu.live_counters();
        LiveCounters::add(&counters.submits, 1);
        LiveCounters::add(&counters.dispatches, dispatches);
        LiveCounters::add(&counters.record_ns, recorded.as_nanos() as u64);
        Ok(back)
    }
}

/// One submit's replays being encoded (see [`StepArena::submit`]).
pub struct Replay<'e> {
    pass: wgpu::ComputePass<'e>,
    host: &'e mut Vec<u8>,
    which: usize,
    align: usize,
    capacity: usize,
    dispatches: u64,
}

impl std::fmt::Debug for Replay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("dispatches", &self.dispatches)
            .field("param_bytes", &self.host.len())
            .finish()
    }
}

impl Replay<'_> {
    /// Encodes `plan` for a step `delta` positions after the one it was recorded at.
    pub fn run(&mut self, plan: &Plan, delta: u32) -> Result<()> {
        for e in &plan.entries {
            self.pass.set_pipeline(&e.kernel.pipeline);
            let groups = match &e.bind {
                Bind::Fixed {
                    group,
                    offset,
                    groups,
                } => {
                    self.pass.set_bind_group(0, group, offset.as_slice());
                    *groups
                }
                Bind::Shifting { sets, shift, size } => {
                    let at = self.host.len().next_multiple_of(self.align);
                    if at + size > self.capacity {
                        return Err(Error::Unsupported(format!(
                            "a replay of more position-dependent dispatches than the step \
                             arena holds ({} bytes): record fewer steps per submit",
                            self.capacity
                        )));
                    }
                    self.host.resize(at, 0);
                    let grid = shift.at(delta, self.host);
                    self.host.resize(at + size, 0);
                    self.pass.set_bind_group(0, &sets[self.which], &[at as u32]);
                    grid
                }
            };
            self.pass
                .dispatch_workgroups(groups[0], groups[1], groups[2]);
            self.dispatches += 1;
        }
        Ok(())
    }
}

impl Recorder {
    /// Freezes this recording (made with [`Gpu::plan_recorder`]) into a [`Plan`]: its fixed
    /// parameters go to a buffer of the plan's own, every bind group is created now, and its
    /// position-dependent dispatches bind `arena`'s buffers. Copies and readbacks cannot be
    /// planned (a plan is dispatches only).
    pub fn into_plan(self, arena: &StepArena) -> Result<Plan> {
        let gpu = self.gpu().clone();
        if self
            .commands
            .iter()
            .any(|c| !matches!(c, Command::Dispatch { .. }))
        {
            return Err(Error::Unsupported(
                "a plan of copies or readbacks: plans hold dispatches only".into(),
            ));
        }
        let fixed = if self.params.is_empty() {
            None
        } else {
            Some(gpu.create_buffer(
                "kiln plan parameters",
                self.params.len() as u64,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            )?)
        };
        if let Some(b) = &fixed {
            gpu.write(b, 0, &self.params);
        }
        let mut entries = Vec::with_capacity(self.commands.len());
        let mut shifting = 0;
        for command in self.commands {
            let Command::Dispatch {
                kernel,
                groups,
                params,
                buffers,
                shift,
            } = command
            else {
                unreachable!("checked above");
            };
            let with = |uniform: Option<(wgpu::Buffer, u64)>| {
                let mut all = Vec::with_capacity(buffers.len() + 1);
                if let Some((b, size)) = uniform {
                    all.push((b, 0, size));
                }
                all.extend(buffers.iter().cloned());
                gpu.create_bind_group(&kernel, &all)
            };
            let bind = match (shift, params) {
                (Some(shift), Some((_, size))) => {
                    shifting += 1;
                    Bind::Shifting {
                        sets: [
                            with(Some((arena.buffers[0].clone(), size))),
                            with(Some((arena.buffers[1].clone(), size))),
                        ],
                        shift,
                        size: size as usize,
                    }
                }
                (None, Some((offset, size))) => Bind::Fixed {
                    group: with(fixed.clone().map(|b| (b, size))),
                    offset: Some(offset),
                    groups,
                },
                (_, None) => Bind::Fixed {
                    group: with(None),
                    offset: None,
                    groups,
                },
            };
            entries.push(Entry { kernel, bind });
        }
        Ok(Plan { entries, shifting })
    }
}
