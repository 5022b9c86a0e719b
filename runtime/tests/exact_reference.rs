//! Real models against exact arithmetic: kiln's logits at every position of one prompt per
//! model, fed one token at a time (the decode path), against a float64 forward pass of the same
//! quantized weights (fixtures made by scripts/make_exact_fixture.py with
//! scripts/float_reference.py), and against llama.cpp's distance from the same values.
//!
//! Each position stores 64 ids (the 16 best by exact logit and 48 drawn at random) with their
//! exact and llama.cpp logits. Both runtimes quantize activations to int8 blocks, which moves
//! all logits of a position by a common amount (the error of the final hidden state along the
//! output matrix's mean row, up to ~0.9 on SmolLM2; a uniform shift, which softmax ignores) and
//! each logit by its own noise. The checks therefore take out each position's shift `s` (the
//! mean of `kiln - exact` over its stored ids) before comparing:
//!
//! - mean |Δ − s| at most `MEAN_RATIO` times llama.cpp's on the same entries;
//! - max |Δ − s| at most the model's `max_centered`;
//! - kiln's top-1 token is the exact top-1 wherever the exact top-1/top-2 gap exceeds
//!   `SAFE_GAP`.
//!
//! Every bound comes from scripts/distance_report.py's measurement over all positions of the
//! reference prompts and the full vocabulary (docs/correctness.md, "Distance from exact
//! arithmetic").

mod common;

use kiln::generate::{Backend, LoadOptions, Model};

/// On these prompts' stored ids, the mean |Δ − s| of llama.cpp-equivalent roundings is
/// 0.88-1.10 times that of llama.cpp's batched evaluation (the fixture's values): llama.cpp
/// itself token by token 0.97-1.10 (1.099 on Qwen2.5), the float64 pass with llama.cpp's
/// roundings 0.88-1.07; kiln measured 0.98-1.10 (CPU) and 0.99-1.10 (GPU). Per prompt over the
/// full vocabulary the same spread is 0.90-1.10 (scripts/distance_report.py). 1.2 admits that
/// spread and fails a kiln whose rounding noise is 20% above llama.cpp's.
const MEAN_RATIO: f64 = 1.2;

/// The exact top-1/top-2 gap above which kiln must pick the exact top-1: over the 615 positions
/// of the reference prompts, no runtime or emulation (llama.cpp both ways, kiln CPU and GPU, the
/// float64 pass with llama.cpp's roundings) picked another token where the exact gap exceeded
/// 0.379 (kiln GPU, Gemma 3); llama.cpp itself up to 0.218.
const SAFE_GAP: f64 = 0.5;

/// The largest max |Δ − s| over the full vocabulary at all positions of the reference prompts
/// that llama.cpp (either path) or the float64 pass with llama.cpp's int8 activations reach on
/// each model: SmolLM2 1.404 (emulation), Gemma 3 1.405 (emulation), Qwen2.5 0.641 (llama.cpp
/// token by token). On the stored ids kiln reaches at most 0.58/0.80 (SmolLM2, CPU/GPU),
/// 0.66/0.76 (Gemma 3) and 0.41/0.32 (Qwen2.5), llama.cpp 0.73, 0.73 and 0.31.
fn max_centered(model: &str) -> f64 {
    match model {
        "smollm2" => 1.404,
        "gemma3" => 1.405,
        _ => 0.641,
    }
}

struct Position {
    ids: Vec<usize>,
    exact: Vec<f64>,
    llama: Vec<f64>,
    exact_top1: usize,
    exact_gap: f64,
}

fn load_fixture(model: &str) -> (String, Vec<u32>, Vec<Position>) {
    let v = common::fixture(&format!("exact/{model}.json"));
    let nums = |x: &serde_json::Value| -> Vec<f64> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_f64().unwrap())
            .collect()
    };
    let positions = v["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Position {
            ids: nums(&p["ids"]).iter().map(|&i| i as usize).collect(),
            exact: nums(&p["exact"]),
            llama: nums(&p["llama"]),
            exact_top1: p["exact_top1"].as_u64().unwrap() as usize,
            exact_gap: p["exact_gap"].as_f64().unwrap(),
        })
        .collect();
    let ids = nums(&v["prompt_ids"]).iter().map(|&i| i as u32).collect();
    (v["model"].as_str().unwrap().to_string(), ids, positions)
}

/// (mean, max) of |Δ − s| over the stored entries, `got(position, i)` giving the logit of the
/// position's i-th stored id.
fn centered(positions: &[Position], got: impl Fn(usize, usize) -> f64) -> (f64, f64) {
    let (mut sum, mut max, mut n) = (0.0f64, 0.0f64, 0usize);
    for (p, pos) in positions.iter().enumerate() {
        let d: Vec<f64> = (0..pos.ids.len())
            .map(|i| got(p, i) - pos.exact[i])
            .collect();
        let s = d.iter().sum::<f64>() / d.len() as f64;
        for x in d {
            sum += (x - s).abs();
            max = max.max((x - s).abs());
            n += 1;
        }
    }
    (sum / n as f64, max)
}

fn check(name: &str, backend: Backend) {
    let (file, ids, positions) = load_fixture(name);
    let Some(path) = common::model_file(&file, common::INSTALL_MODELS) else {
        return;
    };
    if backend == Backend::Gpu && common::gpu().is_none() {
        return;
    }
    let opts = LoadOptions {
        backend,
        context: 64,
        ..LoadOptions::default()
    };
    let mut model = Model::load(&path, &opts, &mut |_, _| {}).expect("load");
    let what = format!("{name} on {}", model.backend_name());
    let all: Vec<usize> = (0..ids.len()).collect();
    let logits = model.logits_at(&ids, &all, true).expect("logits");
    assert_eq!(logits.len(), positions.len());
    let (kiln_mean, kiln_max) = centered(&positions, |p, i| logits[p][positions[p].ids[i]] as f64);
    let (llama_mean, llama_max) = centered(&positions, |p, i| positions[p].llama[i]);
    eprintln!(
        "{what}: |Δ − s| over {} positions × 64 ids: kiln mean {kiln_mean:.4} max \
         {kiln_max:.4}; llama.cpp mean {llama_mean:.4} max {llama_max:.4}; ratio {:.3}",
        positions.len(),
        kiln_mean / llama_mean
    );
    assert!(
        kiln_mean <= MEAN_RATIO * llama_mean,
        "{what}: mean |Δ − s| {kiln_mean:.4} exceeds {MEAN_RATIO} × llama.cpp's {llama_mean:.4}"
    );
    assert!(
        kiln_max <= max_centered(name),
        "{what}: max |Δ − s| {kiln_max:.4} exceeds {}",
        max_centered(name)
    );
    for (p, pos) in positions.iter().enumerate() {
        let l = &logits[p];
        let top = (0..l.len()).fold(0, |b, i| if l[i] > l[b] { i } else { b });
        assert!(
            pos.exact_gap <= SAFE_GAP || top == pos.exact_top1,
            "{what}: position {p} picks {top}, exact top-1 is {} (gap {:.3})",
            pos.exact_top1,
            pos.exact_gap
        );
    }
}

#[test]
fn smollm2_cpu_near_exact() {
    check("smollm2", Backend::Cpu);
}

#[test]
fn gemma3_cpu_near_exact() {
    check("gemma3", Backend::Cpu);
}

#[test]
fn qwen2_cpu_near_exact() {
    check("qwen2", Backend::Cpu);
}

#[test]
fn smollm2_gpu_near_exact() {
    check("smollm2", Backend::Gpu);
}

#[test]
fn gemma3_gpu_near_exact() {
    check("gemma3", Backend::Gpu);
}

#[test]
fn qwen2_gpu_near_exact() {
    check("qwen2", Backend::Gpu);
}
