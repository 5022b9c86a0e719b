//! Shared helpers for tests: the real adapter, seeded inputs, guarded outputs, model files and
//! fixtures.

#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod quant;
pub mod tiny;

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `models/<rel>` if it exists. If not: panics with the command that installs it, unless
/// `KILN_SKIP_MODEL_TESTS=1`, in which case it says loudly that the test is skipped.
pub fn model_file(rel: &str, install: &str) -> Option<PathBuf> {
    let path = repo_root().join("models").join(rel);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("KILN_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
        skip(&format!(
            "{} is missing and KILN_SKIP_MODEL_TESTS=1 (install it with `{install}`)",
            path.display()
        ));
        return None;
    }
    panic!(
        "{} is missing: run `{install}` (or set KILN_SKIP_MODEL_TESTS=1 to skip loudly)",
        path.display()
    );
}

/// The model files the tests use, by fixture name.
pub const MODELS: &[(&str, &str)] = &[
    ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("gemma3", "gemma-3-270m-q4_k_m.gguf"),
    ("qwen2", "qwen2.5-coder-0.5b-instruct.gguf"),
];

/// Installs the real models.
pub const INSTALL_MODELS: &str = "scripts/install-models.sh all";

/// A fixture JSON from `runtime/tests/fixtures`.
pub fn fixture(rel: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

use kiln::{Error, Gpu, GpuOptions};

/// The GPU options the environment selects, without a tuned profile (so that a profile
/// `kiln tune` saved on this machine changes no test's choices).
pub fn gpu_options() -> GpuOptions {
    GpuOptions {
        profiles: kiln::tune::ProfileSource::off(),
        ..GpuOptions::from_env().expect("the KILN_* variables")
    }
}

/// Opens the adapter the environment selects. Without one the test is skipped loudly, unless
/// `KILN_REQUIRE_GPU=1` (CI), where a missing adapter fails the test.
pub fn gpu() -> Option<Gpu> {
    match Gpu::new_blocking(gpu_options()) {
        Ok(gpu) => {
            eprintln!("adapter: {gpu:?}");
            Some(gpu)
        }
        Err(e @ Error::NoAdapter { .. }) => {
            if std::env::var("KILN_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("KILN_REQUIRE_GPU=1 but there is no adapter: {e}");
            }
            skip(&format!(
                "no GPU adapter ({e}); set KILN_REQUIRE_GPU=1 to make this fail"
            ));
            None
        }
        Err(e) => panic!("opening the GPU failed: {e}"),
    }
}

/// Says loudly that the calling test checked nothing and why, and records it (see [`record`]).
pub fn skip(reason: &str) {
    eprintln!("\n!!!!! SKIPPED: {reason}; this test checked nothing. !!!!!\n");
    record(reason);
}

/// Says loudly that part of the calling test was not checked and why, and records it.
pub fn skip_part(reason: &str) {
    eprintln!("\n!!!!! PARTLY SKIPPED: {reason} !!!!!\n");
    record(&format!("(part) {reason}"));
}

/// [`skip`] for a missing adapter feature: a failure under `KILN_REQUIRE_GPU=1` (CI), where the
/// adapter is known to have what the tests need.
pub fn skip_feature(reason: &str) {
    require_feature(reason);
    skip(reason);
}

/// [`skip_part`] for a missing adapter feature, a failure under `KILN_REQUIRE_GPU=1`.
pub fn skip_feature_part(reason: &str) {
    require_feature(reason);
    skip_part(reason);
}

fn require_feature(reason: &str) {
    if std::env::var("KILN_REQUIRE_GPU").is_ok_and(|v| v == "1") {
        panic!("KILN_REQUIRE_GPU=1 but {reason}");
    }
}

/// Appends the calling test's name and `reason` to the file `KILN_SKIP_LOG` names:
/// scripts/test.sh lists every skip at its end (a passing test's output is hidden by the test
/// harness).
fn record(reason: &str) {
    if let Some(log) = std::env::var_os("KILN_SKIP_LOG") {
        use std::io::Write;
        let test = std::thread::current().name().unwrap_or("?").to_string();
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(log)
        {
            // One write per line: tests run in parallel threads.
            let _ = f.write_all(format!("{test}: {reason}\n").as_bytes());
        }
    }
}

/// A small seeded generator (SplitMix64), so inputs are random but reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

/// Guard words written around every output, to catch writes out of bounds.
pub const GUARD: u32 = 0x7fc0_dead;
pub const GUARD_WORDS: usize = 16;

/// A storage buffer holding `words` 4-byte words of output, with guard words before and after.
/// Returns the buffer and the byte offset of the output.
pub fn guarded_output(gpu: &Gpu, words: usize) -> (wgpu::Buffer, u64) {
    let mut init = vec![GUARD; words + 2 * GUARD_WORDS];
    init[GUARD_WORDS..GUARD_WORDS + words].fill(0);
    let buffer = gpu
        .upload("test output", bytemuck::cast_slice(&init))
        .expect("upload output");
    (buffer, (GUARD_WORDS * 4) as u64)
}

/// Reads a guarded output back, asserts the guards are intact, and returns the output words.
pub fn read_guarded(gpu: &Gpu, buffer: &wgpu::Buffer, words: usize) -> Vec<u32> {
    let mut rec = gpu.recorder();
    let back = rec.read(buffer.into()).expect("schedule read");
    rec.submit().expect("submit");
    let bytes = back.wait().expect("read back");
    let all: &[u32] = bytemuck::cast_slice(&bytes);
    let (head, rest) = all.split_at(GUARD_WORDS);
    let (out, tail) = rest.split_at(words);
    assert!(
        head.iter().all(|&w| w == GUARD),
        "a kernel wrote before its output"
    );
    assert!(
        tail[..GUARD_WORDS].iter().all(|&w| w == GUARD),
        "a kernel wrote past its output"
    );
    out.to_vec()
}

/// A storage buffer holding `data`.
pub fn upload_f32(gpu: &Gpu, data: &[f32]) -> wgpu::Buffer {
    gpu.upload("test input", bytemuck::cast_slice(data))
        .expect("upload")
}

/// Words read back as f32.
pub fn as_f32(words: &[u32]) -> Vec<f32> {
    words.iter().map(|&w| f32::from_bits(w)).collect()
}

/// Every way the adapter can combine a workgroup reduction.
pub fn combines(gpu: &Gpu) -> Vec<kiln::ops::reduce::Combine> {
    use kiln::ops::reduce::Combine;
    let mut c = vec![Combine::SharedMemory];
    if gpu.capabilities().subgroup {
        c.push(Combine::Subgroup);
    } else {
        skip_feature_part("no subgroups: only the shared-memory reductions are tested");
    }
    c
}

/// Every way the adapter can split a GEMV.
pub fn splits(gpu: &Gpu) -> Vec<kiln::ops::gemv::Split> {
    use kiln::ops::gemv::Split;
    let mut s = vec![Split::Thread];
    s.extend(combines(gpu).into_iter().map(Split::Group));
    s
}

/// Asserts `got` matches `want` within `atol + rtol * |want|`, and that nothing is NaN or inf.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{what}[{i}] = {g} is not finite");
        let tol = atol + rtol * w.abs();
        assert!(
            (g - w).abs() <= tol,
            "{what}[{i}]: got {g}, want {w} (tolerance {tol})"
        );
    }
}
