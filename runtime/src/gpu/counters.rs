//! Work counters: how many dispatches, submits, buffer, pipeline and bind group creations, bytes
//! moved and CPU-GPU waits a workload caused, and the host time spent recording it. Tests assert
//! on the counts; benchmarks print them per token.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the counters. Subtract two snapshots to get the work done in between.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Compute dispatches submitted.
    pub dispatches: u64,
    /// `Queue::submit` calls.
    pub submits: u64,
    /// `Device::create_buffer` calls (pool misses, arena growth, uploads of weights).
    pub buffers_created: u64,
    /// Bytes of the buffers those calls created (as allocated: pool size classes, padding).
    pub bytes_created: u64,
    /// Compute pipelines created (pipeline-cache misses).
    pub pipelines_created: u64,
    /// Bytes written to GPU buffers from the CPU.
    pub bytes_uploaded: u64,
    /// Bytes copied back from the GPU to the CPU.
    pub bytes_read_back: u64,
    /// Times the CPU blocked on (or awaited) the GPU.
    pub waits: u64,
    /// `Device::create_bind_group` calls (cache misses, plans built).
    pub bind_groups_created: u64,
    /// Host time spent recording and encoding work, in nanoseconds: from a recorder's creation,
    /// or a replay's start, to its finished command buffer (the driver's `submit` itself is not
    /// counted: lavapipe's sometimes waits for earlier work). A time, not a count: it varies
    /// from run to run.
    pub record_ns: u64,
}

impl std::ops::Sub for Counters {
    type Output = Counters;
    fn sub(self, rhs: Counters) -> Counters {
        Counters {
            dispatches: self.dispatches - rhs.dispatches,
            submits: self.submits - rhs.submits,
            buffers_created: self.buffers_created - rhs.buffers_created,
            bytes_created: self.bytes_created - rhs.bytes_created,
            pipelines_created: self.pipelines_created - rhs.pipelines_created,
            bytes_uploaded: self.bytes_uploaded - rhs.bytes_uploaded,
            bytes_read_back: self.bytes_read_back - rhs.bytes_read_back,
            waits: self.waits - rhs.waits,
            bind_groups_created: self.bind_groups_created - rhs.bind_groups_created,
            record_ns: self.record_ns - rhs.record_ns,
        }
    }
}

/// The live, thread-safe counters of one [`crate::Gpu`].
#[derive(Debug, Default)]
pub(crate) struct LiveCounters {
    pub dispatches: AtomicU64,
    pub submits: AtomicU64,
    pub buffers_created: AtomicU64,
    pub bytes_created: AtomicU64,
    pub pipelines_created: AtomicU64,
    pub bytes_uploaded: AtomicU64,
    pub bytes_read_back: AtomicU64,
    pub waits: AtomicU64,
    pub bind_groups_created: AtomicU64,
    pub record_ns: AtomicU64,
}

impl LiveCounters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one buffer of `bytes` created.
    pub fn created(&self, bytes: u64) {
        Self::add(&self.buffers_created, 1);
        Self::add(&self.bytes_created, bytes);
    }

    pub fn snapshot(&self) -> Counters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            dispatches: get(&self.dispatches),
            submits: get(&self.submits),
            buffers_created: get(&self.buffers_created),
            bytes_created: get(&self.bytes_created),
            pipelines_created: get(&self.pipelines_created),
            bytes_uploaded: get(&self.bytes_uploaded),
            bytes_read_back: get(&self.bytes_read_back),
            waits: get(&self.waits),
            bind_groups_created: get(&self.bind_groups_created),
            record_ns: get(&self.record_ns),
        }
    }
}
