//! The CPU path gives the same logits whether a prompt runs as one step (several CHUNKs of up
//! to 32 tokens) or token by token. Gemma 3's q/k norms need scratch for q_dim (1024) per token,
//! wider than d_model (640): a step of more than 20 tokens once overran it and panicked.

mod common;

use kiln::gguf::GgufFile;
use kiln::model::Config;
use kiln::model::cpu::CpuModel;

/// Largest |difference| allowed between the two orders. Both run the same per-token kernels on
/// the same quantized activations, so only summation order inside a step could differ.
const TOL: f32 = 1e-3;

fn check(file: &str) {
    let Some(path) = common::model_file(file, "scripts/install-models.sh all") else {
        return;
    };
    let gguf = GgufFile::open(&path).expect("open");
    let cfg = Config::from_gguf(&gguf).expect("config");
    let mut model = CpuModel::load(gguf, &cfg, 128, 1, &mut |_, _| {}).expect("load");
    // 40 tokens: one full chunk of 32 plus 8, every id inside the vocabulary.
    let prompt: Vec<u32> = (0..40u32).map(|i| 1000 + i * 37).collect();
    let batched = model.step(&prompt, 0).expect("batched step").to_vec();
    let mut one_by_one = Vec::new();
    for (pos, tok) in prompt.iter().enumerate() {
        one_by_one = model.step(&[*tok], pos as u32).expect("step").to_vec();
    }
    assert_eq!(batched.len(), one_by_one.len());
    let (mut worst, mut at) = (0.0f32, 0);
    for (i, (a, b)) in batched.iter().zip(&one_by_one).enumerate() {
        assert!(
            a.is_finite() && b.is_finite(),
            "{file}: logit {i}: {a} vs {b}"
        );
        if (a - b).abs() > worst {
            (worst, at) = ((a - b).abs(), i);
        }
    }
    assert!(
        worst <= TOL,
        "{file}: logit {at} is {} batched but {} token by token",
        batched[at],
        one_by_one[at]
    );
}

#[test]
fn gemma3_long_prompt_batched_equals_token_by_token() {
    check("gemma-3-270m-q4_k_m.gguf");
}

#[test]
fn smollm2_long_prompt_batched_equals_token_by_token() {
    check("SmolLM2-135M-Instruct.Q4_1.gguf");
}
