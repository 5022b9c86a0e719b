//! Criterion benchmarks of the CPU path's hot kernels, one thread, shapes from the models kiln
//! runs (SmolLM2-135M: d 576, ffn 1536; Qwen2.5-0.5B: d 896, ffn 4864):
//!
//! - `gemv/<type>/<isa>/<rows>x<cols>`: one decode-step GEMV over raw GGUF blocks (throughput in
//!   weight bytes), per quantized type and per available instruction set;
//! - `matmul/<type>/<isa>/64x<rows>x<cols>`: a 64-token prefill matmul (activation-row tiles,
//!   multi-row dot products where the ISA has them);
//! - `quantize/<kind>`: activation quantization of one row;
//! - `attention_decode/<len>`: one query over an f16 KV cache (SmolLM2's 9 heads / 3 KV heads);
//! - `rms_norm/<n>`.
//!
//! `cargo bench -p kiln-cpu --bench kernels -- gemv/Q4_1` runs a subset. Weights are random
//! blocks with small finite scales; timings do not depend on the values.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use half::f16;
use kiln_cpu::ops::{AttnParams, attention_decode_with, rms_norm_with};
use kiln_cpu::{ActBuffer, Isa, QMatrix, QType, ThreadPool};

/// xorshift64: deterministic inputs.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

/// `rows × cols` random blocks of `t` with f16 scales of 0.01.
fn random_matrix(t: QType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let bytes = t.row_bytes(cols).expect("aligned") * rows;
    let mut v: Vec<u8> = (0..bytes).map(|_| rng.next() as u8).collect();
    let scale = f16::from_f32(0.01).to_le_bytes();
    let offs: &[usize] = match t {
        QType::Q4_1 | QType::Q4_K => &[0, 2],
        QType::Q6_K => &[208],
        QType::F32 => &[],
        _ => &[0],
    };
    for b in v.chunks_exact_mut(t.block_bytes()) {
        if t == QType::F32 {
            b.copy_from_slice(&0.01f32.to_le_bytes());
        }
        for &o in offs {
            b[o..o + 2].copy_from_slice(&scale);
        }
    }
    v
}

const TYPES: [QType; 7] = [
    QType::Q4_0,
    QType::Q4_1,
    QType::Q5_0,
    QType::Q8_0,
    QType::Q4_K,
    QType::Q6_K,
    QType::F16,
];

/// The SIMD instruction sets here (the scalar twin is left out: it is the tests' reference).
fn isas() -> Vec<Isa> {
    Isa::available()
        .into_iter()
        .filter(|&i| i != Isa::Scalar)
        .collect()
}

fn gemv(c: &mut Criterion) {
    let pool = ThreadPool::new(1);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut g = c.benchmark_group("gemv");
    for t in TYPES {
        for (rows, cols) in [(1536usize, 576usize), (896, 4864)] {
            if !cols.is_multiple_of(t.block_size()) {
                continue;
            }
            let w = random_matrix(t, rows, cols, &mut rng);
            let m = QMatrix::new(t, rows, cols, &w).expect("sized");
            let mut act = ActBuffer::new();
            act.quantize(&rng.vec(cols), t).expect("quantize");
            let mut y = vec![0f32; rows];
            g.throughput(Throughput::Bytes(w.len() as u64));
            for isa in isas() {
                let id = BenchmarkId::new(format!("{t:?}/{isa:?}"), format!("{rows}x{cols}"));
                g.bench_function(id, |b| {
                    b.iter(|| m.gemv_with(isa, black_box(&act), &mut y, &pool))
                });
            }
        }
    }
    g.finish();
}

fn matmul(c: &mut Criterion) {
    let pool = ThreadPool::new(1);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let tokens = 64;
    let (rows, cols) = (1536usize, 576usize);
    let mut g = c.benchmark_group("matmul");
    for t in TYPES {
        if !cols.is_multiple_of(t.block_size()) {
            continue;
        }
        let w = random_matrix(t, rows, cols, &mut rng);
        let m = QMatrix::new(t, rows, cols, &w).expect("sized");
        let mut act = ActBuffer::new();
        act.quantize_rows(&rng.vec(tokens * cols), tokens, t)
            .expect("quantize");
        let mut y = vec![0f32; tokens * rows];
        // Multiply-adds per second, as GFLOP/s-style element throughput.
        g.throughput(Throughput::Elements((tokens * rows * cols) as u64));
        for isa in isas() {
            let id = BenchmarkId::new(format!("{t:?}/{isa:?}"), format!("{tokens}x{rows}x{cols}"));
            g.bench_function(id, |b| {
                b.iter(|| m.matmul_with(isa, black_box(&act), &mut y, &pool))
            });
        }
    }
    g.finish();
}

fn quantize(c: &mut Criterion) {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let x = rng.vec(4864);
    let mut act = ActBuffer::with_capacity(1, x.len());
    let mut g = c.benchmark_group("quantize");
    g.throughput(Throughput::Elements(x.len() as u64));
    for (name, t) in [
        ("Q8_0", QType::Q8_0),
        ("Q8_1", QType::Q4_1),
        ("Q8_K", QType::Q4_K),
    ] {
        g.bench_function(BenchmarkId::new(name, x.len()), |b| {
            b.iter(|| act.quantize(black_box(&x), t))
        });
    }
    g.finish();
}

fn attention(c: &mut Criterion) {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let p = AttnParams {
        n_head: 9,
        n_kv_head: 3,
        head_dim: 64,
        capacity: 1024,
        scale: 0.125,
        window: None,
        softcap: None,
    };
    let cache = p.n_kv_head * p.capacity * p.head_dim;
    let k: Vec<f16> = (0..cache).map(|_| f16::from_f32(rng.f32())).collect();
    let v: Vec<f16> = (0..cache).map(|_| f16::from_f32(rng.f32())).collect();
    let q = rng.vec(p.n_head * p.head_dim);
    let mut out = vec![0f32; q.len()];
    let mut scratch = vec![0f32; p.capacity];
    let mut g = c.benchmark_group("attention_decode");
    for len in [128, 1024] {
        for isa in Isa::available() {
            let id = BenchmarkId::new(format!("{isa:?}"), len);
            g.bench_function(id, |b| {
                b.iter(|| {
                    attention_decode_with(
                        isa,
                        black_box(&q),
                        &k,
                        &v,
                        &p,
                        len,
                        &mut scratch,
                        &mut out,
                    )
                })
            });
        }
    }
    g.finish();
}

fn norms(c: &mut Criterion) {
    let mut rng = Rng(0x0bad_cafe_dead_f00d);
    let mut g = c.benchmark_group("rms_norm");
    for n in [576, 896] {
        let x = rng.vec(n);
        let w = rng.vec(n);
        let mut out = vec![0f32; n];
        g.throughput(Throughput::Elements(n as u64));
        for isa in Isa::available() {
            g.bench_function(BenchmarkId::new(format!("{isa:?}"), n), |b| {
                b.iter(|| rms_norm_with(isa, black_box(&x), &w, 1e-5, &mut out, false))
            });
        }
    }
    g.finish();
}

fn config() -> Criterion {
    // Short runs: the suite covers ~60 cases and should finish in a few minutes.
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! {
    name = kernels;
    config = config();
    targets = gemv, matmul, quantize, attention, norms
}
criterion_main!(kernels);
