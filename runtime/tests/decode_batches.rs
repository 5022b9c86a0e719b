//! Several decode steps per submit change nothing a caller can see: with 1 or 8 steps per
//! submit a generation streams the same tokens and text, stops at the same token (end of
//! generation, an extra stop token, the budget, a cancel), and leaves the same KV cache for the
//! positions it kept; the steps computed past a stop are discarded. The largest batch (16)
//! streams the same tokens too.

mod common;

use std::ops::ControlFlow;

use kiln::generate::{Backend, GenerateOptions, Generation, LoadOptions, Model, StopReason};
use kiln::model::gpu::MAX_DECODE_BATCH;

fn smollm2() -> Option<Model> {
    let path = common::model_file(common::MODELS[0].1, common::INSTALL_MODELS)?;
    common::gpu()?;
    let opts = LoadOptions {
        backend: Backend::Gpu,
        context: 96,
        ..LoadOptions::default()
    };
    Some(Model::load(&path, &opts, &mut |_, _| {}).expect("load"))
}

/// A generation with `batch` steps per submit, cancelled after `cancel_after` tokens if given;
/// the tokens streamed and the KV cache of the positions it kept.
fn run(
    model: &mut Model,
    batch: u32,
    prompt: &[u32],
    opts: &GenerateOptions,
    cancel_after: Option<usize>,
) -> (Generation, Vec<u32>, Vec<u8>) {
    model.set_decode_batch(batch).expect("batch");
    let mut streamed = Vec::new();
    let g = model
        .generate(prompt, opts, |id, _| {
            streamed.push(id);
            if cancel_after == Some(streamed.len()) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .expect("generate");
    // The positions the kept tokens occupy: the prompt, then every kept token but the last
    // (a token is written to the cache by the step that reads it).
    let kept = prompt.len() + g.tokens.len().saturating_sub(1);
    let kv = model.kv_prefix(kept as u32).expect("kv");
    (g, streamed, kv)
}

fn same(
    what: &str,
    model: &mut Model,
    prompt: &[u32],
    opts: &GenerateOptions,
    cancel: Option<usize>,
) -> Generation {
    let (a, sa, kva) = run(model, 1, prompt, opts, cancel);
    let (b, sb, kvb) = run(model, 8, prompt, opts, cancel);
    assert_eq!(a.tokens, b.tokens, "{what}: tokens");
    assert_eq!(sa, sb, "{what}: streamed ids");
    assert_eq!(a.text, b.text, "{what}: text");
    assert_eq!(a.stop, b.stop, "{what}: stop reason");
    assert!(!kva.is_empty(), "{what}: a cache to compare");
    assert!(
        kva == kvb,
        "{what}: the KV cache of the kept positions differs"
    );
    a
}

#[test]
fn one_and_eight_steps_per_submit_agree() {
    let Some(mut model) = smollm2() else { return };
    let prompt = model.encode_prompt("Write a short list of fruits:");
    let greedy = GenerateOptions {
        max_tokens: 21,
        temperature: 0.0,
        ignore_eog: true,
        ..GenerateOptions::default()
    };
    let full = same("greedy", &mut model, &prompt, &greedy, None);
    assert_eq!(full.stop, StopReason::MaxTokens);
    assert_eq!(full.tokens.len(), 21);

    // An extra stop token in the middle of a batch of 8: both stop right there, and neither
    // hands out the tokens computed after it.
    let stop_at = full.tokens[10];
    let first = full.tokens.iter().position(|&t| t == stop_at).unwrap();
    let stopping = GenerateOptions {
        stop_tokens: vec![stop_at],
        ignore_eog: false,
        ..greedy.clone()
    };
    let g = same("stop token", &mut model, &prompt, &stopping, None);
    assert_eq!(g.stop, StopReason::EndOfGeneration);
    assert_eq!(
        g.tokens,
        full.tokens[..first],
        "stopped at the first {stop_at}"
    );

    // A cancel after 5 tokens.
    let g = same("cancel", &mut model, &prompt, &greedy, Some(5));
    assert_eq!(g.stop, StopReason::Cancelled);
    assert_eq!(g.tokens, full.tokens[..5]);

    // A budget that is not a multiple of the batch.
    let short = GenerateOptions {
        max_tokens: 11,
        ..greedy.clone()
    };
    let g = same("budget", &mut model, &prompt, &short, None);
    assert_eq!(g.tokens, full.tokens[..11]);

    // Sampling: the RNG's step and the penalty's window follow each step on the GPU.
    let sampled = GenerateOptions {
        max_tokens: 17,
        temperature: 0.9,
        top_k: 40,
        top_p: 0.95,
        repetition_penalty: 1.3,
        seed: 11,
        ignore_eog: true,
        ..GenerateOptions::default()
    };
    same("sampled", &mut model, &prompt, &sampled, None);

    // The largest batch: its steps' parameters fit the step arena on every device's uniform
    // alignment (lavapipe's 16 bytes once made 16 steps overflow it).
    for opts in [&greedy, &sampled] {
        let (a, _, _) = run(&mut model, 1, &prompt, opts, None);
        let (b, _, _) = run(&mut model, MAX_DECODE_BATCH, &prompt, opts, None);
        assert_eq!(a.tokens, b.tokens, "{MAX_DECODE_BATCH} steps per submit");
    }

    // The context's end: both stop at the same token when the cache is full.
    let long = GenerateOptions {
        max_tokens: 500,
        ..greedy
    };
    let g = same("context", &mut model, &prompt, &long, None);
    assert_eq!(g.stop, StopReason::ContextFull);
}
