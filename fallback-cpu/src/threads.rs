//! A small persistent thread pool for parallel-for over row ranges.
//!
//! Workers are started once. A call publishes a borrowed closure, wakes the workers, takes part
//! itself, and returns when every worker has finished, so the closure may borrow from the caller's
//! stack (a scoped parallel-for). Idle workers spin briefly, then park. A call allocates nothing.
//! A call made while the pool is busy (from another thread, or nested inside a job) runs inline.
//! On wasm32 the pool always runs inline on the calling thread.

use std::ops::Range;

/// Work split: chunks per participating thread, so a slow (shared) core can be balanced.
const CHUNKS_PER_THREAD: usize = 4;

/// A persistent pool of `n` threads (the caller counts as one).
#[derive(Debug)]
pub struct ThreadPool {
    n: usize,
    #[cfg(not(target_arch = "wasm32"))]
    inner: native::Pool,
}

impl Default for ThreadPool {
    fn default() -> Self {
        ThreadPool::new(0)
    }
}

impl ThreadPool {
    /// A pool of `n` threads including the caller; `0` means `available_parallelism`, `1` runs
    /// everything inline. On wasm32 it is always 1.
    pub fn new(n: usize) -> ThreadPool {
        let n = if cfg!(target_arch = "wasm32") {
            1
        } else if n == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            n
        };
        ThreadPool {
            n,
            #[cfg(not(target_arch = "wasm32"))]
            inner: native::Pool::new(n - 1),
        }
    }

    /// Threads taking part in a call (including the caller).
    pub fn threads(&self) -> usize {
        self.n
    }

    /// Runs `f` over disjoint sub-ranges covering `0..n`, each at least `min_chunk` long (except
    /// the last), in parallel. Returns when all are done.
    pub fn for_range(&self, n: usize, min_chunk: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
        if n == 0 {
            return;
        }
        let min_chunk = min_chunk.max(1);
        let chunks = (self.n * CHUNKS_PER_THREAD)
            .min(n.div_ceil(min_chunk))
            .max(1);
        if self.n == 1 || chunks == 1 {
            f(0..n);
            return;
        }
        let chunk = n.div_ceil(chunks);
        #[cfg(not(target_arch = "wasm32"))]
        self.inner.run(n, chunk, f);
        #[cfg(target_arch = "wasm32")]
        f(0..n.min(chunk * chunks));
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::ops::Range;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
    use std::thread::{JoinHandle, Thread};

    /// Spins before parking: long enough to catch the next GEMV of a decode step.
    const SPIN: u32 = 20_000;

    /// Shared state. A call is a generation: `state` packs `(generation << 32) | next chunk`.
    /// A thread runs a chunk only after claiming it with a compare-exchange that also checks the
    /// generation, and the caller waits for `completed` chunks, not for threads: a worker that
    /// wakes late finds nothing to claim and is never waited for.
    struct Shared {
        state: AtomicU64,
        /// The published job (data and vtable words of a `&dyn Fn`), valid while a chunk of the
        /// current generation is unfinished.
        job: AtomicPtr<()>,
        job_meta: AtomicPtr<()>,
        n: AtomicUsize,
        chunk: AtomicUsize,
        n_chunks: AtomicUsize,
        completed: AtomicUsize,
        panicked: AtomicBool,
        shutdown: AtomicBool,
    }

    pub(super) struct Pool {
        shared: Arc<Shared>,
        threads: Vec<Thread>,
        handles: Vec<JoinHandle<()>>,
        busy: AtomicBool,
        generation: AtomicU64,
    }

    impl std::fmt::Debug for Pool {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Pool")
                .field("workers", &self.threads.len())
                .finish()
        }
    }

    fn split<'a>(job: &'a (dyn Fn(Range<usize>) + Sync + 'a)) -> (*mut (), *mut ()) {
        // SAFETY: a trait-object reference is two pointer-sized words (data, vtable); the
        // lifetime is erased here and upheld by `run` waiting for every claimed chunk.
        unsafe {
            std::mem::transmute::<&'a (dyn Fn(Range<usize>) + Sync + 'a), (*mut (), *mut ())>(job)
        }
    }

    impl Shared {
        /// Claims the next chunk of generation `generation`, if any is left.
        fn claim(&self, generation: u32) -> Option<usize> {
            let mut v = self.state.load(Ordering::Acquire);
            loop {
                if (v >> 32) as u32 != generation {
                    return None;
                }
                let idx = (v & 0xffff_ffff) as usize;
                if idx >= self.n_chunks.load(Ordering::Acquire) {
                    return None;
                }
                match self.state.compare_exchange_weak(
                    v,
                    v + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Some(idx),
                    Err(now) => v = now,
                }
            }
        }

        /// Runs chunks of `generation` until none are left.
        fn work(&self, generation: u32) {
            while let Some(c) = self.claim(generation) {
                let (n, chunk) = (
                    self.n.load(Ordering::Acquire),
                    self.chunk.load(Ordering::Acquire),
                );
                let (data, meta) = (
                    self.job.load(Ordering::Acquire),
                    self.job_meta.load(Ordering::Acquire),
                );
                // SAFETY: inverse of `split`; the claimed chunk is unfinished, so the caller of
                // `run` is still waiting and the job it published is alive.
                let f: &(dyn Fn(Range<usize>) + Sync) = unsafe {
                    std::mem::transmute::<(*mut (), *mut ()), &(dyn Fn(Range<usize>) + Sync)>((
                        data, meta,
                    ))
                };
                let start = c * chunk;
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    f(start..(start + chunk).min(n))
                }));
                if r.is_err() {
                    self.panicked.store(true, Ordering::Release);
                }
                self.completed.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    impl Pool {
        pub(super) fn new(workers: usize) -> Pool {
            let shared = Arc::new(Shared {
                state: AtomicU64::new(0),
                job: AtomicPtr::default(),
                job_meta: AtomicPtr::default(),
                n: AtomicUsize::new(0),
                chunk: AtomicUsize::new(1),
                n_chunks: AtomicUsize::new(0),
                completed: AtomicUsize::new(0),
                panicked: AtomicBool::new(false),
                shutdown: AtomicBool::new(false),
            });
            let mut handles = Vec::with_capacity(workers);
            let mut threads = Vec::with_capacity(workers);
            for i in 0..workers {
                let s = Arc::clone(&shared);
                let h = std::thread::Builder::new()
                    .name(format!("kiln-cpu-{i}"))
                    .spawn(move || worker(&s));
                match h {
                    Ok(h) => {
                        threads.push(h.thread().clone());
                        handles.push(h);
                    }
                    // Fewer workers than asked still computes correctly.
                    Err(_) => break,
                }
            }
            Pool {
                shared,
                threads,
                handles,
                busy: AtomicBool::new(false),
                generation: AtomicU64::new(0),
            }
        }

        pub(super) fn run(&self, n: usize, chunk: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
            let n_chunks = n.div_ceil(chunk);
            if self.threads.is_empty()
                || n_chunks > u32::MAX as usize
                || self
                    .busy
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
            {
                f(0..n);
                return;
            }
            let s = &*self.shared;
            let generation = (self.generation.fetch_add(1, Ordering::Relaxed) + 1) as u32;
            let (data, meta) = split(f);
            s.job.store(data, Ordering::Release);
            s.job_meta.store(meta, Ordering::Release);
            s.n.store(n, Ordering::Release);
            s.chunk.store(chunk, Ordering::Release);
            s.n_chunks.store(n_chunks, Ordering::Release);
            s.completed.store(0, Ordering::Release);
            s.state.store((generation as u64) << 32, Ordering::Release);
            for t in &self.threads {
                t.unpark();
            }
            s.work(generation);
            let mut spins = 0u32;
            while s.completed.load(Ordering::Acquire) < n_chunks {
                spins += 1;
                if spins < SPIN {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            self.busy.store(false, Ordering::Release);
            if s.panicked.swap(false, Ordering::AcqRel) {
                panic!("kiln-cpu: a thread-pool job panicked");
            }
        }
    }

    fn worker(s: &Shared) {
        let mut seen = 0u32;
        loop {
            let mut spins = 0u32;
            let generation = loop {
                if s.shutdown.load(Ordering::Acquire) {
                    return;
                }
                let g = (s.state.load(Ordering::Acquire) >> 32) as u32;
                if g != seen {
                    break g;
                }
                if spins < SPIN {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::park();
                }
            };
            seen = generation;
            s.work(generation);
        }
    }

    impl Drop for Pool {
        fn drop(&mut self) {
            self.shared.shutdown.store(true, Ordering::Release);
            for t in &self.threads {
                t.unpark();
            }
            for h in self.handles.drain(..) {
                let _ = h.join();
            }
        }
    }
}
