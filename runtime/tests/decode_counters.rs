//! The GPU path's promises for a steady-state decode step, as counts (not times): one submit,
//! no buffer or pipeline creation, 4 bytes read back (the chosen token id), one CPU-GPU wait.

mod common;

use std::ops::ControlFlow;

use kiln::generate::{Backend, GenerateOptions, LoadOptions, Model};

#[test]
fn a_decode_step_is_one_submit_and_four_bytes() {
    let Some(path) = common::model_file(common::MODELS[0].1, common::INSTALL_MODELS) else {
        return;
    };
    let Some(_) = common::gpu() else { return };
    let opts = LoadOptions {
        backend: Backend::Gpu,
        context: 128,
        ..LoadOptions::default()
    };
    let mut model = Model::load(&path, &opts, &mut |_, _| {}).expect("load");
    let gpu = model.gpu().expect("a GPU model").clone();
    let prompt = model.encode_prompt("The capital of France is");
    let greedy = GenerateOptions {
        max_tokens: 6,
        temperature: 0.0,
        ignore_eog: true,
        ..GenerateOptions::default()
    };
    let mut snapshots = Vec::new();
    let generation = model
        .generate(&prompt, &greedy, |_, _| {
            snapshots.push(gpu.counters());
            ControlFlow::Continue(())
        })
        .expect("generate");
    assert_eq!(generation.tokens.len(), 6);
    // Between two tokens lies exactly one decode step.
    for pair in snapshots.windows(2) {
        let d = pair[1] - pair[0];
        assert_eq!(d.submits, 1, "{d:?}");
        assert_eq!(d.buffers_created, 0, "{d:?}");
        assert_eq!(d.pipelines_created, 0, "{d:?}");
        assert_eq!(d.bytes_read_back, 4, "{d:?}");
        assert_eq!(d.waits, 1, "{d:?}");
        assert!(d.dispatches > 0, "{d:?}");
    }
}

/// Sampling happens on the GPU too: still 4 bytes and one wait per token, and the same seed
/// gives the same tokens.
#[test]
fn sampled_decode_stays_on_the_gpu() {
    let Some(path) = common::model_file(common::MODELS[0].1, common::INSTALL_MODELS) else {
        return;
    };
    let Some(_) = common::gpu() else { return };
    let opts = LoadOptions {
        backend: Backend::Gpu,
        context: 128,
        ..LoadOptions::default()
    };
    let mut model = Model::load(&path, &opts, &mut |_, _| {}).expect("load");
    let gpu = model.gpu().expect("a GPU model").clone();
    let prompt = model.encode_prompt("My favourite colour is");
    let sampled = GenerateOptions {
        max_tokens: 6,
        temperature: 1.0,
        top_k: 40,
        top_p: 0.9,
        repetition_penalty: 1.1,
        seed: 3,
        ignore_eog: true,
        ..GenerateOptions::default()
    };
    let mut snapshots = Vec::new();
    let first = model
        .generate(&prompt, &sampled, |_, _| {
            snapshots.push(gpu.counters());
            ControlFlow::Continue(())
        })
        .expect("generate");
    for pair in snapshots.windows(2) {
        let d = pair[1] - pair[0];
        assert_eq!(
            (d.submits, d.bytes_read_back, d.waits, d.buffers_created),
            (1, 4, 1, 0),
            "{d:?}"
        );
    }
    let again = model
        .generate(&prompt, &sampled, |_, _| ControlFlow::Continue(()))
        .expect("generate");
    assert_eq!(
        first.tokens, again.tokens,
        "the same seed gave different tokens"
    );
    assert!(first.tokens.iter().all(|&t| t < model.config().vocab));
}
