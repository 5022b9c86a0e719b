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
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::thread::{JoinHandle, Thread};

    /// Spins before parking: long enough to catch the next GEMV of a decode step.
    const SPIN: u32 = 20_000;

    type Job = *const (dyn Fn(Range<usize>) + Sync);

    struct Shared {
        /// Bumped once per call; workers run when it changes.
        generation: AtomicUsize,
        /// The published job; valid while a call is in flight (`Fn` + `Sync`, so shareable).
        job: std::sync::atomic::AtomicPtr<()>,
        job_meta: std::sync::atomic::AtomicPtr<()>,
        n: AtomicUsize,
        chunk: AtomicUsize,
        next: AtomicUsize,
        done: AtomicUsize,
        panicked: AtomicBool,
        shutdown: AtomicBool,
    }

    pub(super) struct Pool {
        shared: Arc<Shared>,
        threads: Vec<Thread>,
        handles: Vec<JoinHandle<()>>,
        busy: AtomicBool,
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
        // lifetime is erased here and upheld by `run` waiting for every worker.
        unsafe {
            std::mem::transmute::<&'a (dyn Fn(Range<usize>) + Sync + 'a), (*mut (), *mut ())>(job)
        }
    }
    fn join(data: *mut (), meta: *mut ()) -> Job {
        // SAFETY: inverse of `split` on the same pair.
        unsafe { std::mem::transmute::<(*mut (), *mut ()), Job>((data, meta)) }
    }

    impl Shared {
        /// Takes chunks until none are left.
        fn work(&self, f: &(dyn Fn(Range<usize>) + Sync)) {
            let (n, chunk) = (
                self.n.load(Ordering::Acquire),
                self.chunk.load(Ordering::Acquire),
            );
            loop {
                let start = self.next.fetch_add(chunk, Ordering::AcqRel);
                if start >= n {
                    break;
                }
                f(start..(start + chunk).min(n));
            }
        }
    }

    impl Pool {
        pub(super) fn new(workers: usize) -> Pool {
            let shared = Arc::new(Shared {
                generation: AtomicUsize::new(0),
                job: Default::default(),
                job_meta: Default::default(),
                n: AtomicUsize::new(0),
                chunk: AtomicUsize::new(1),
                next: AtomicUsize::new(0),
                done: AtomicUsize::new(0),
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
            }
        }

        pub(super) fn run(&self, n: usize, chunk: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
            if self.threads.is_empty()
                || self
                    .busy
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
            {
                f(0..n);
                return;
            }
            let s = &*self.shared;
            let (data, meta) = split(f);
            s.job.store(data, Ordering::Release);
            s.job_meta.store(meta, Ordering::Release);
            s.n.store(n, Ordering::Release);
            s.chunk.store(chunk, Ordering::Release);
            s.next.store(0, Ordering::Release);
            s.done.store(0, Ordering::Release);
            s.generation.fetch_add(1, Ordering::AcqRel);
            for t in &self.threads {
                t.unpark();
            }
            let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.work(f)));
            let mut spins = 0u32;
            while s.done.load(Ordering::Acquire) < self.threads.len() {
                spins += 1;
                if spins < SPIN {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            self.busy.store(false, Ordering::Release);
            if let Err(p) = mine {
                std::panic::resume_unwind(p);
            }
            if s.panicked.swap(false, Ordering::AcqRel) {
                panic!("kiln-cpu: a thread-pool job panicked");
            }
        }
    }

    fn worker(s: &Shared) {
        let mut seen = 0usize;
        loop {
            let mut spins = 0u32;
            loop {
                let g = s.generation.load(Ordering::Acquire);
                if g != seen {
                    seen = g;
                    break;
                }
                if spins < SPIN {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::park();
                }
            }
            if s.shutdown.load(Ordering::Acquire) {
                return;
            }
            let f = join(
                s.job.load(Ordering::Acquire),
                s.job_meta.load(Ordering::Acquire),
            );
            // SAFETY: the caller of `run` keeps the job alive until `done` counts every worker,
            // which happens only after this use.
            let f = unsafe { &*f };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.work(f))).is_err() {
                s.panicked.store(true, Ordering::Release);
            }
            s.done.fetch_add(1, Ordering::AcqRel);
        }
    }

    impl Drop for Pool {
        fn drop(&mut self) {
            self.shared.shutdown.store(true, Ordering::Release);
            self.shared.generation.fetch_add(1, Ordering::AcqRel);
            for t in &self.threads {
                t.unpark();
            }
            for h in self.handles.drain(..) {
                let _ = h.join();
            }
        }
    }
}
