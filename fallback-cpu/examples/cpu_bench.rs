//! CPU-path throughput: quantized GEMV (GB/s of weights), f32 matmul (GFLOP/s) and a memory
//! copy measured in the same run, at 1 and 2 threads.
//!
//! Native: `cargo run --release -p kiln-cpu --example cpu_bench`
//! WASM (Node, single thread): see `examples/run_wasi.mjs`.
//!
//! "hot" GEMVs reuse one matrix (it stays in L2); "stream" GEMVs walk copies spanning 64 MiB so
//! weights come from DRAM, as in a real decode step.

use std::time::Instant;

use kiln_cpu::{ActBuffer, Isa, QMatrix, QType, ThreadPool, matmul_f32};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Random blocks with finite, small f16 scales.
fn random_blocks(t: QType, n_blocks: usize, rng: &mut Rng) -> Vec<u8> {
    let bb = t.block_bytes();
    let mut v: Vec<u8> = (0..n_blocks * bb).map(|_| rng.next() as u8).collect();
    let scale = half::f16::from_f32(0.01).to_le_bytes();
    for b in v.chunks_exact_mut(bb) {
        let offs: &[usize] = match t {
            QType::Q4_0 | QType::Q5_0 | QType::Q8_0 => &[0],
            QType::Q4_1 | QType::Q4_K => &[0, 2],
            QType::Q6_K => &[208],
            QType::F16 => &[0],
            QType::F32 => &[],
        };
        for &o in offs {
            b[o..o + 2].copy_from_slice(&scale);
        }
        if t == QType::F32 {
            b.copy_from_slice(&0.01f32.to_le_bytes());
        }
    }
    v
}

/// Nanoseconds this thread has spent on a CPU (Linux `schedstat`), if readable. On a shared
/// machine this shows what the code does per second of CPU it actually got.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Seconds per call of `f` on the clock and on this thread's CPU time (when known).
fn time_cpu(secs: f64, mut f: impl FnMut()) -> (f64, Option<f64>) {
    let c0 = thread_cpu_ns();
    let t0 = Instant::now();
    let mut n = 0u32;
    while t0.elapsed().as_secs_f64() < secs {
        f();
        n += 1;
    }
    let wall = t0.elapsed().as_secs_f64() / n as f64;
    let cpu = c0
        .zip(thread_cpu_ns())
        .map(|(a, b)| (b - a) as f64 * 1e-9 / n as f64);
    (wall, cpu)
}

/// Runs `f` repeatedly for about `secs`, returns seconds per call (best of 3 rounds).
fn time(secs: f64, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    let mut n = 0u32;
    while t.elapsed().as_secs_f64() < secs / 10.0 {
        f();
        n += 1;
    }
    let per_round = (n.max(1) as f64 * 3.0) as u32;
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..per_round {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / per_round as f64);
    }
    best
}

fn memcpy_gbs() -> f64 {
    let n = 64 << 20;
    let src = vec![1u8; n];
    let mut dst = vec![0u8; n];
    let s = time(0.5, || {
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
    });
    // read + write
    2.0 * n as f64 / s / 1e9
}

fn main() {
    let isa = Isa::active();
    // Optional filter: only types whose name contains this (e.g. `Q8_0`).
    let filter = std::env::args().nth(1).unwrap_or_default();
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let copy = memcpy_gbs();
    println!("kiln-cpu bench: isa {isa:?}; memcpy {copy:.1} GB/s (read+write, 64 MiB, 1 thread)");
    let shapes = [
        (576, 1536),
        (1536, 576),
        (896, 4864),
        (4864, 896),
        (1536, 1536),
    ];
    let types = [
        QType::Q4_0,
        QType::Q4_1,
        QType::Q5_0,
        QType::Q8_0,
        QType::Q4_K,
        QType::Q6_K,
        QType::F16,
    ];
    let max_threads = if cfg!(target_arch = "wasm32") { 1 } else { 2 };
    let pools: Vec<ThreadPool> = (1..=max_threads).map(ThreadPool::new).collect();
    println!(
        "{:<6} {:>10} {:>4} {:>10} {:>8} {:>12} {:>8}",
        "type", "shape", "thr", "hot GB/s", "ratio", "stream GB/s", "ratio"
    );
    for t in types
        .into_iter()
        .filter(|t| format!("{t:?}").contains(&filter))
    {
        for &(rows, cols) in &shapes {
            if cols % t.block_size() != 0 {
                continue;
            }
            let row_bytes = t.row_bytes(cols).expect("aligned");
            let mat_bytes = rows * row_bytes;
            let copies = (64usize << 20).div_ceil(mat_bytes).max(2);
            let blocks = random_blocks(t, copies * rows * cols / t.block_size(), &mut rng);
            let mats: Vec<QMatrix<'_>> = blocks
                .chunks_exact(mat_bytes)
                .map(|b| QMatrix::new(t, rows, cols, b).expect("sized"))
                .collect();
            let x: Vec<f32> = (0..cols).map(|_| rng.f32()).collect();
            let mut act = ActBuffer::new();
            act.quantize(&x, t).expect("quantize");
            let mut y = vec![0f32; rows];
            for (ti, pool) in pools.iter().enumerate() {
                let hot = time(0.2, || mats[0].gemv(&act, &mut y, pool).expect("gemv"));
                let mut k = 0;
                let stream = time(0.2, || {
                    k = (k + 1) % mats.len();
                    mats[k].gemv(&act, &mut y, pool).expect("gemv")
                });
                let (h, s) = (
                    mat_bytes as f64 / hot / 1e9,
                    mat_bytes as f64 / stream / 1e9,
                );
                let cpu = if ti == 0 {
                    let (_, cpu) =
                        time_cpu(0.2, || mats[0].gemv(&act, &mut y, pool).expect("gemv"));
                    cpu.map_or("-".to_string(), |c| {
                        format!("{:.1}", mat_bytes as f64 / c / 1e9)
                    })
                } else {
                    "-".to_string()
                };
                println!(
                    "{:<6} {:>10} {:>4} {:>10.1} {:>8.2} {:>12.1} {:>8.2} {:>12}",
                    format!("{t:?}"),
                    format!("{rows}x{cols}"),
                    ti + 1,
                    h,
                    h / copy,
                    s,
                    s / copy,
                    cpu
                );
            }
        }
    }
    println!("f32 matmul (y = x·wᵀ):");
    for &(m, k, n) in &[(1, 576, 1536), (64, 576, 1536), (64, 896, 4864)] {
        let x: Vec<f32> = (0..m * k).map(|_| rng.f32()).collect();
        let w: Vec<f32> = (0..n * k).map(|_| rng.f32()).collect();
        let mut y = vec![0f32; m * n];
        for (ti, pool) in pools.iter().enumerate() {
            let s = time(0.3, || {
                matmul_f32(&x, &w, &mut y, m, k, n, pool).expect("matmul")
            });
            let gflops = 2.0 * (m * k * n) as f64 / s / 1e9;
            let gbs = (4 * n * k) as f64 / s / 1e9;
            println!(
                "  m={m:<3} k={k:<4} n={n:<5} threads {} : {gflops:6.1} GFLOP/s, weights {gbs:5.1} GB/s (ratio {:.2})",
                ti + 1,
                gbs / copy
            );
        }
    }
}
