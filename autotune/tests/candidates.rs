//! The tuner's checks on a real adapter: every real variant of every tuned op passes its check
//! against the CPU path in every format; a test-only candidate that is faster because it skips
//! half of the rows is disqualified and never chosen, however fast it is.

#[path = "../../runtime/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use kiln::gpu::Recorder;
use kiln::ops::gemv::{ActQuant, WType};
use kiln::tune::{GemvOp, GemvPick};
use kiln_autotune::gemv::measure;
use kiln_autotune::{Budget, Candidate, GemvBench, GemvCase, Settings};

/// Quick settings: the checks are what is tested here, not the timings.
fn settings() -> Settings {
    Settings {
        runs: 1,
        reps: 1,
        ..Settings::default()
    }
}

#[test]
fn every_variant_passes_its_check_in_every_format() {
    let Some(gpu) = common::gpu() else { return };
    // Every format with int8 activations (f16/f32 weights have no variants to tune).
    let formats = WType::ALL
        .into_iter()
        .filter(|&w| ActQuant::for_weights(w).is_some());
    for op in GemvOp::ALL {
        for wtype in formats.clone() {
            let case = GemvCase {
                op,
                wtype,
                rows: 96,
                k: 512,
            };
            let bench = pollster::block_on(GemvBench::new(&gpu, case, 7)).expect("bench");
            let picks = op.candidates(gpu.capabilities());
            let all: Vec<&dyn Candidate> = picks.iter().map(|p| p as &dyn Candidate).collect();
            let budget = Budget::new(Duration::from_secs(600));
            let entry = pollster::block_on(measure(&bench, &all, "thread", &settings(), &budget));
            for t in &entry.candidates {
                assert_eq!(t.status, "ok", "{op:?} {wtype:?} {}", t.name);
                assert!(t.error.unwrap() < 0.1, "{op:?} {wtype:?} {t:?}");
            }
            assert!(entry.winner.is_some());
        }
    }
}

/// The real variant with half the rows: less work, so faster, and half of the output is left
/// as it was (NaN, as the check fills it).
struct HalfRows(GemvPick);

impl Candidate for HalfRows {
    fn name(&self) -> String {
        format!("half-rows {}", self.0.name())
    }

    fn record(&self, bench: &GemvBench, rec: &mut Recorder) -> kiln::Result<()> {
        bench.record(rec, self.0, bench.case.rows / 2)
    }
}

#[test]
fn a_fast_wrong_candidate_is_never_chosen() {
    let Some(gpu) = common::gpu() else { return };
    let case = GemvCase {
        op: GemvOp::Q8,
        wtype: WType::Q4_0,
        rows: 4096,
        k: 1024,
    };
    let bench = pollster::block_on(GemvBench::new(&gpu, case, 11)).expect("bench");
    let default = gpu.tuning().default_gemv(GemvOp::Q8);
    let wrong = HalfRows(default);
    let candidates: [&dyn Candidate; 2] = [&default, &wrong];
    let budget = Budget::new(Duration::from_secs(600));
    let settings = Settings {
        runs: 3,
        reps: 2,
        ..Settings::default()
    };
    let entry = pollster::block_on(measure(
        &bench,
        &candidates,
        &default.name(),
        &settings,
        &budget,
    ));
    eprintln!("{entry:#?}");
    let bad = &entry.candidates[1];
    assert!(bad.status.starts_with("wrong"), "{bad:?}");
    assert_eq!(bad.median_us, None, "a wrong candidate is not timed");
    assert_eq!(entry.winner.as_deref(), Some(default.name().as_str()));
    // It was faster: timed on its own, half the rows take less time than all of them.
    let time = |c: &dyn Candidate| {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let mut rec = gpu.recorder();
            c.record(&bench, &mut rec).unwrap();
            let timer = kiln_autotune::Timer::of(&gpu);
            best = best.min(pollster::block_on(timer.run(&gpu, rec)).unwrap());
        }
        best
    };
    let (fast, full) = (time(&wrong), time(&default));
    eprintln!("half rows {fast:.1} us, all rows {full:.1} us");
    assert!(fast < full, "the wrong candidate should be the faster one");

    // Nothing passes: no winner, and the runtime keeps its default.
    let only_wrong: [&dyn Candidate; 1] = [&wrong];
    let entry = pollster::block_on(measure(&bench, &only_wrong, "x", &settings, &budget));
    assert_eq!(entry.winner, None);
}
