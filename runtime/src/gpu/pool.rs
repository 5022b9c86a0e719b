//! The buffer pool: buffers keyed by size class and usage, handed out as [`GpuBuffer`]s that
//! return to the pool when dropped. A workload that runs twice creates no buffers the second
//! time.
//!
//! Reusing a buffer right after it was dropped is safe even while earlier submits still use it:
//! wgpu orders every later write and dispatch after them on the queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::gpu::context::{Gpu, GpuInner};

/// Rounds a request up to its size class: 256 bytes minimum, then 8 classes per power of two,
/// so at most 1/8 of a buffer (above 2 KiB) is slack.
pub fn size_class(size: u64) -> u64 {
    let size = size.max(256);
    let step = (size.next_power_of_two() / 8).max(256);
    size.next_multiple_of(step)
}

/// Free buffers by (size class, usage).
#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    free: Mutex<HashMap<(u64, wgpu::BufferUsages), Vec<wgpu::Buffer>>>,
}

impl BufferPool {
    fn take(&self, class: u64, usage: wgpu::BufferUsages) -> Option<wgpu::Buffer> {
        self.free.lock().ok()?.get_mut(&(class, usage))?.pop()
    }

    fn give(&self, class: u64, usage: wgpu::BufferUsages, buffer: wgpu::Buffer) {
        if let Ok(mut free) = self.free.lock() {
            free.entry((class, usage)).or_default().push(buffer);
        }
    }

    /// Bytes held by free buffers.
    pub fn free_bytes(&self) -> u64 {
        self.free
            .lock()
            .map(|f| f.iter().map(|((class, _), v)| class * v.len() as u64).sum())
            .unwrap_or(0)
    }

    pub fn clear(&self) {
        if let Ok(mut free) = self.free.lock() {
            free.clear();
        }
    }
}

/// A pooled buffer of at least `len` bytes; goes back to its pool on drop.
pub struct GpuBuffer {
    buffer: Option<wgpu::Buffer>,
    len: u64,
    class: u64,
    usage: wgpu::BufferUsages,
    gpu: Arc<GpuInner>,
}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuBuffer")
            .field("len", &self.len)
            .field("class", &self.class)
            .field("usage", &self.usage)
            .finish()
    }
}

impl GpuBuffer {
    /// The bytes asked for (the buffer itself may be larger).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("present until drop")
    }
}

impl std::ops::Deref for GpuBuffer {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        self.buffer()
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            self.gpu.pool.give(self.class, self.usage, buffer);
        }
    }
}

impl Gpu {
    /// A pooled buffer of at least `len` bytes with `usage`. Creates one only when the pool
    /// has none of that size class and usage free; `label` names a newly created buffer.
    pub fn alloc(&self, label: &str, len: u64, usage: wgpu::BufferUsages) -> Result<GpuBuffer> {
        let class = size_class(len);
        self.check_buffer_size(label, len, usage)?;
        let buffer = match self.inner.pool.take(class, usage) {
            Some(b) => b,
            None => {
                self.inner.counters.created(class);
                self.inner.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: class,
                    usage,
                    mapped_at_creation: false,
                })
            }
        };
        Ok(GpuBuffer {
            buffer: Some(buffer),
            len,
            class,
            usage,
            gpu: self.inner.clone(),
        })
    }

    /// A pooled storage buffer usable as input, output and copy source/destination.
    pub fn alloc_storage(&self, label: &str, len: u64) -> Result<GpuBuffer> {
        self.alloc(
            label,
            len,
            wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
        )
    }

    /// Bytes held by free pooled buffers.
    pub fn pool_free_bytes(&self) -> u64 {
        self.inner.pool.free_bytes()
    }

    /// Frees every pooled buffer not in use.
    pub fn trim_pool(&self) {
        self.inner.pool.clear();
        self.inner.pipelines.clear_bind_groups();
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_bound_the_slack() {
        for size in [
            1u64,
            255,
            256,
            257,
            1000,
            4096,
            4097,
            100_000,
            1 << 20,
            (1 << 20) + 1,
        ] {
            let class = size_class(size);
            assert!(class >= size.max(256));
            assert!(class.is_multiple_of(256), "{size} -> {class}");
            if size > 2048 {
                assert!((class - size) * 8 <= size * 2, "{size} -> {class}");
            }
        }
        assert_eq!(
            size_class(5000),
            size_class(5100),
            "nearby sizes share a class"
        );
    }
}
