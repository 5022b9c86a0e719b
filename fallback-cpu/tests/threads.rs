//! The thread pool covers every index exactly once, nests and shares safely.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use kiln_cpu::ThreadPool;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

#[test]
fn covers_each_index_once() {
    for threads in [1, 2, 3, 5] {
        let pool = ThreadPool::new(threads);
        if cfg!(target_arch = "wasm32") {
            assert_eq!(pool.threads(), 1);
        } else {
            assert_eq!(pool.threads(), threads);
        }
        for n in [0usize, 1, 2, 15, 16, 17, 1000] {
            for _ in 0..20 {
                let hits: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
                pool.for_range(n, 4, &|r| {
                    for i in r {
                        hits[i].fetch_add(1, Ordering::Relaxed);
                    }
                });
                assert!(
                    hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                    "threads {threads} n {n}"
                );
            }
        }
    }
}

#[test]
fn nested_calls_run_inline() {
    let pool = ThreadPool::new(2);
    let total = AtomicUsize::new(0);
    pool.for_range(8, 1, &|outer| {
        for _ in outer {
            pool.for_range(10, 1, &|inner| {
                total.fetch_add(inner.len(), Ordering::Relaxed);
            });
        }
    });
    assert_eq!(total.load(Ordering::Relaxed), 80);
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn shared_between_threads() {
    let pool = ThreadPool::new(2);
    let total = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..100 {
                    pool.for_range(64, 1, &|r| {
                        total.fetch_add(r.len(), Ordering::Relaxed);
                    });
                }
            });
        }
    });
    assert_eq!(total.load(Ordering::Relaxed), 3 * 100 * 64);
}
