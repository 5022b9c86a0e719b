//! kiln's tuner. For a device and a model (or a standard set of shapes) it enumerates the
//! variants the GPU path can choose between — per decode product and shape bucket the split,
//! reduction and int8 dot product ([`kiln::tune::GemvOp::candidates`], read from the kernels'
//! parameter spaces); per model whether to fuse, decode steps per submit, how to prefill, where
//! to split attention ([`kiln::tune::ModelOp`]) — checks each one's output against kiln's CPU
//! path, times the ones that pass, and writes the winners into a [`Profile`] that
//! [`kiln::Gpu::new`] loads for the same adapter.
//!
//! Timing uses GPU timestamp queries where the adapter has them, else the host clock around a
//! device wait. The whole run keeps to a [`Budget`]: what is not measured when it runs out is
//! marked so, and the defaults stay in force there.

pub mod gemv;
#[cfg(not(target_arch = "wasm32"))]
pub mod model;

use std::time::Duration;

use kiln::Result;
use kiln::clock::Instant;
use kiln::gpu::{Gpu, Recorder};
use kiln::tune::{AdapterKey, Entry, OUT_OF_TIME, Profile};

pub use gemv::{Candidate, GemvBench, GemvCase};

/// How much the tuner measures.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Timed runs per candidate (after one untimed run that compiles it); the median counts.
    pub runs: u32,
    /// Dispatches per timed run of a product (their mean is one sample).
    pub reps: u32,
    /// A candidate whose run takes longer than this (per dispatch, or per decoded token) is
    /// disqualified.
    pub time_cap: Duration,
    /// Decode steps timed per run of a model-wide candidate.
    pub decode_tokens: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            runs: 5,
            reps: 4,
            time_cap: Duration::from_secs(1),
            decode_tokens: 16,
        }
    }
}

/// A hard time limit for a whole tuning run.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    start: Instant,
    limit: Duration,
}

impl Budget {
    pub fn new(limit: Duration) -> Budget {
        Budget {
            start: Instant::now(),
            limit,
        }
    }

    /// Whether the time is up.
    pub fn spent(&self) -> bool {
        self.start.elapsed() >= self.limit
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// How runs are timed on a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// GPU timestamp queries around the submit's passes.
    Timestamps,
    /// The host clock from the submit to the device going idle.
    Host,
}

impl Timer {
    /// Timestamps where the device has them.
    pub fn of(gpu: &Gpu) -> Timer {
        if gpu.capabilities().timestamps {
            Timer::Timestamps
        } else {
            Timer::Host
        }
    }

    /// The profile's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Timer::Timestamps => "timestamps",
            Timer::Host => "host",
        }
    }

    /// Submits `rec` and returns how long its work took, in microseconds.
    pub async fn run(self, gpu: &Gpu, mut rec: Recorder) -> Result<f64> {
        match self {
            Timer::Timestamps => {
                let back = rec.time_dispatches()?;
                rec.submit()?;
                let bytes = back.bytes().await?;
                let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
                let ns =
                    ticks[1].saturating_sub(ticks[0]) as f64 * f64::from(gpu.timestamp_period());
                Ok(ns / 1e3)
            }
            Timer::Host => {
                gpu.idle().await?;
                let start = Instant::now();
                rec.submit()?;
                gpu.idle().await?;
                Ok(start.elapsed().as_secs_f64() * 1e6)
            }
        }
    }
}

/// An empty profile of `gpu`'s adapter for this build.
pub fn new_profile(gpu: &Gpu) -> Profile {
    Profile::new(AdapterKey::of(gpu.adapter_info()), Timer::of(gpu).name())
}

/// Whether `entry` was measured completely (every candidate timed or disqualified), so that a
/// later run may keep it instead of measuring again.
pub fn complete(entry: &Entry) -> bool {
    !entry.candidates.is_empty() && entry.candidates.iter().all(|t| t.status != OUT_OF_TIME)
}

/// Tunes the decode products `cases` on `gpu` into `profile`: for each case the candidates
/// the device runs, checked and timed; a case `profile` already holds complete is kept.
/// `progress(done, total, label)` is called before each case.
pub async fn tune_gemv(
    gpu: &Gpu,
    cases: &[GemvCase],
    profile: &mut Profile,
    settings: &Settings,
    budget: &Budget,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<()> {
    for (i, &case) in cases.iter().enumerate() {
        let label = format!("{} {}", case.op.name(), case.bucket());
        progress(i, cases.len(), &label);
        if profile
            .entry(case.op.name(), &case.bucket())
            .is_some_and(complete)
        {
            continue;
        }
        if budget.spent() {
            break;
        }
        let bench = GemvBench::new(gpu, case, 0x6b69_6c6e).await?;
        let picks = case.op.candidates(gpu.capabilities());
        let candidates: Vec<&dyn Candidate> = picks.iter().map(|p| p as &dyn Candidate).collect();
        let default = gpu
            .tuning()
            .gemv(case.op, case.wtype, case.rows, case.k)
            .name();
        let entry = gemv::measure(&bench, &candidates, &default, settings, budget).await;
        profile.put(entry);
    }
    progress(cases.len(), cases.len(), "done");
    Ok(())
}

/// The rows of the table `kiln tune` prints: op, bucket, default, winner, their times and the
/// speedup, and the candidates disqualified.
pub fn table(profile: &Profile) -> String {
    let mut out = format!(
        "{:<16} {:<20} {:<14} {:>10} {:<14} {:>10} {:>8}  disqualified\n",
        "op", "shape", "default", "us", "winner", "us", "speedup"
    );
    for e in &profile.entries {
        let time = |name: Option<&str>| {
            e.candidates
                .iter()
                .find(|t| Some(t.name.as_str()) == name)
                .and_then(|t| t.median_us)
                .map_or("-".to_string(), |us| format!("{us:.1}"))
        };
        let out_of: Vec<String> = e
            .candidates
            .iter()
            .filter(|t| t.status != "ok")
            .map(|t| format!("{} ({})", t.name, short(&t.status)))
            .collect();
        out += &format!(
            "{:<16} {:<20} {:<14} {:>10} {:<14} {:>10} {:>8}  {}\n",
            e.op,
            e.bucket,
            e.default,
            time(Some(&e.default)),
            e.winner.as_deref().unwrap_or("-"),
            time(e.winner.as_deref()),
            e.speedup().map_or("-".to_string(), |s| format!("{s:.2}x")),
            out_of.join(", ")
        );
    }
    out
}

/// The first words of a status.
fn short(status: &str) -> &str {
    status.split(':').next().unwrap_or(status)
}
