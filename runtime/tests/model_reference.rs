//! Real models against llama.cpp (fixtures made by scripts/make_references.py): greedy tokens
//! up to the first near-tie, and first-position logits, on the GPU path (lavapipe in CI).

mod common;

use kiln::generate::{Backend, GenerateOptions, LoadOptions, Model};

/// The top-1/top-2 gap (in llama.cpp's logits) below which two correct runtimes may pick
/// different tokens: greedy comparisons stop at the first such step. The issue asked for 0.1;
/// measured, llama.cpp disagrees with itself by more: evaluating the same context as one batch
/// or token by token moves the gap at step 5 of `smollm2/capital` from 0.33 to 0.19, and kiln's
/// int8 activations see the same flips of block roundings. 0.25 keeps every step with a clear
/// winner under test.
const NEAR_TIE: f64 = 0.25;

struct Case {
    name: String,
    prompt_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
    gaps: Vec<f64>,
    first_top: Vec<(u32, f32)>,
    sample: Vec<(u32, f32)>,
}

fn load_cases(model: &str) -> Vec<Case> {
    let path = format!(
        "{}/tests/fixtures/reference/{model}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("reference fixture");
    let v: serde_json::Value = serde_json::from_str(&text).expect("fixture JSON");
    let ids = |x: &serde_json::Value| -> Vec<u32> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as u32)
            .collect()
    };
    let pairs = |x: &serde_json::Value| -> Vec<(u32, f32)> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap() as u32, p[1].as_f64().unwrap() as f32))
            .collect()
    };
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            prompt_ids: ids(&c["prompt_ids"]),
            greedy_ids: ids(&c["greedy_ids"]),
            gaps: c["gaps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g.as_f64().unwrap())
                .collect(),
            first_top: pairs(&c["first_top"]),
            sample: pairs(&c["first_logits_sample"]),
        })
        .collect()
}

/// The model file, or a failure that says how to install it (a loud skip with
/// KILN_SKIP_MODEL_TESTS=1).
fn model_path(file: &str) -> Option<String> {
    let path = format!("{}/../models/{file}", env!("CARGO_MANIFEST_DIR"));
    if std::path::Path::new(&path).exists() {
        return Some(path);
    }
    if std::env::var("KILN_SKIP_MODEL_TESTS").is_ok_and(|v| v == "1") {
        common::skip(&format!("{path} is missing and KILN_SKIP_MODEL_TESTS=1"));
        return None;
    }
    panic!("{path} is missing: run `scripts/install-models.sh all` first");
}

/// Largest difference allowed between kiln's and llama.cpp's first-position logits, per model
/// (the 64 best, then the 256 sampled across the vocabulary). Both runtimes quantize activations
/// to int8 per block, so a last-bit difference upstream can flip a rounding and move a logit by
/// ~0.1 (llama.cpp's own logits move by ~0.15 between batched and one-by-one evaluation of the
/// same context). scripts/float_reference.py measures how far llama.cpp itself is from exact
/// float64 arithmetic on the same SmolLM2 weights: up to 0.96 over the top 64 and 1.40 over the
/// sampled ids, so these bounds are within llama.cpp's own rounding spread. Measured worst cases
/// are printed per case. Gemma 3's first-position logits sit -0.33 to +0.21 from llama.cpp's as a
/// whole, per prompt: a shift of all of a position's logits (which softmax ignores) that both
/// runtimes' int8 activations cause, each about as far from exact arithmetic (docs/correctness.md,
/// "Gemma 3: the offset from llama.cpp").
fn logit_tolerance(model: &str) -> (f32, f32) {
    match model {
        "gemma3" => (1.25, 1.75),
        _ => (1.0, 1.5),
    }
}

fn check_model(name: &str, file: &str, backend: Backend) {
    let (tol_top, tol_all) = logit_tolerance(name);
    let Some(path) = model_path(file) else { return };
    if backend == Backend::Gpu && common::gpu().is_none() {
        return;
    }
    let opts = LoadOptions {
        backend,
        context: 256,
        ..LoadOptions::default()
    };
    let mut model = Model::load(&path, &opts, &mut |_, _| {}).expect("load");
    for case in load_cases(name) {
        let what = format!("{name}/{} on {}", case.name, model.backend_name());
        // Tokenization of the prompt text is tested separately; here the ids are the input.
        let logits = model.prompt_logits(&case.prompt_ids).expect("logits");
        assert!(
            logits.iter().all(|l| l.is_finite()),
            "{what}: non-finite logits"
        );
        let (mut worst_top, mut worst_all) = (0.0f32, 0.0f32);
        for (i, &(id, want)) in case.first_top.iter().chain(&case.sample).enumerate() {
            let diff = (logits[id as usize] - want).abs();
            let tol = if i < case.first_top.len() {
                worst_top = worst_top.max(diff);
                tol_top
            } else {
                worst_all = worst_all.max(diff);
                tol_all
            };
            assert!(
                diff <= tol,
                "{what}: logit of {id} is {}, llama.cpp has {want}",
                logits[id as usize]
            );
        }
        // The top 5 agree, except where llama.cpp's own neighbours are within the tolerance.
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        for (rank, &(id, want)) in case.first_top.iter().take(5).enumerate() {
            let near = |other: f32| (other - want).abs() <= tol_top;
            let tied = case.first_top.iter().any(|&(o, l)| o != id && near(l));
            assert!(
                order[rank] == id || tied,
                "{what}: rank {rank} is {} (llama.cpp: {id})",
                order[rank]
            );
        }
        let greedy = GenerateOptions {
            max_tokens: case.greedy_ids.len() as u32,
            temperature: 0.0,
            ignore_eog: true,
            ..GenerateOptions::default()
        };
        let got = model
            .generate(&case.prompt_ids, &greedy, |_, _| {
                std::ops::ControlFlow::Continue(())
            })
            .expect("generate")
            .tokens;
        let stop = case
            .gaps
            .iter()
            .position(|&g| g < NEAR_TIE)
            .unwrap_or(case.gaps.len());
        if let Some(i) = got.iter().zip(&case.greedy_ids).position(|(a, b)| a != b) {
            eprintln!(
                "{what}: differs from step {i} (llama.cpp's gap there {:.3}; first near-tie at \
                 step {stop})",
                case.gaps[i]
            );
        }
        assert_eq!(
            got[..stop],
            case.greedy_ids[..stop],
            "{what}: greedy tokens differ before the first near-tie (step {stop})"
        );
        eprintln!(
            "{what}: {stop} greedy tokens match; first logits within {worst_top:.3} (top 64) \
             and {worst_all:.3} (sampled) of llama.cpp"
        );
    }
}

#[test]
fn smollm2_gpu_matches_llama_cpp() {
    check_model("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", Backend::Gpu);
}

#[test]
fn gemma3_gpu_matches_llama_cpp() {
    check_model("gemma3", "gemma-3-270m-q4_k_m.gguf", Backend::Gpu);
}

#[test]
fn qwen2_gpu_matches_llama_cpp() {
    check_model("qwen2", "qwen2.5-coder-0.5b-instruct.gguf", Backend::Gpu);
}

#[test]
fn smollm2_cpu_matches_llama_cpp() {
    check_model("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", Backend::Cpu);
}

#[test]
fn gemma3_cpu_matches_llama_cpp() {
    check_model("gemma3", "gemma-3-270m-q4_k_m.gguf", Backend::Cpu);
}

#[test]
fn qwen2_cpu_matches_llama_cpp() {
    check_model("qwen2", "qwen2.5-coder-0.5b-instruct.gguf", Backend::Cpu);
}
