//! The GPU path's promises for a steady-state decode step, as counts (not times): one submit,
//! no buffer or pipeline creation, 4 bytes read back (the chosen token id), one CPU-GPU wait.

mod common;

use std::ops::ControlFlow;

use kiln::generate::{Backend, GenerateOptions, LoadOptions, Model};

/// SmolLM2 on the GPU, with its device handle for the counters (None: a loud skip).
fn smollm2_on_gpu() -> Option<(Model, kiln::Gpu)> {
    let path = common::model_file(common::MODELS[0].1, common::INSTALL_MODELS)?;
    common::gpu()?;
    let opts = LoadOptions {
        backend: Backend::Gpu,
        context: 128,
        ..LoadOptions::default()
    };
    let model = Model::load(&path, &opts, &mut |_, _| {}).expect("load");
    let gpu = model.gpu().expect("a GPU model").clone();
    Some((model, gpu))
}

#[test]
fn a_decode_step_is_one_submit_and_four_bytes() {
    let Some((mut model, gpu)) = smollm2_on_gpu() else {
        return;
    };
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
    let Some((mut model, gpu)) = smollm2_on_gpu() else {
        return;
    };
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

/// The first step persists wgpu's pipeline cache where the backend has one, so the next run
/// skips shader compilation.
#[test]
fn the_pipeline_cache_is_written_after_the_first_step() {
    let Some(path) = common::model_file(common::MODELS[0].1, common::INSTALL_MODELS) else {
        return;
    };
    let Some(probe) = common::gpu() else { return };
    let dir = std::env::temp_dir().join(format!("kiln-pcache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut opts = LoadOptions {
        backend: Backend::Gpu,
        context: 64,
        ..LoadOptions::default()
    };
    opts.gpu.cache_dir = Some(dir.clone());
    let mut model = Model::load(&path, &opts, &mut |_, _| {}).expect("load");
    let file = model
        .gpu()
        .unwrap()
        .pipeline_cache_file()
        .map(|f| f.to_path_buf());
    let prompt = model.encode_prompt("Hello");
    let greedy = GenerateOptions {
        max_tokens: 2,
        ..GenerateOptions::default()
    };
    model
        .generate(&prompt, &greedy, |_, _| ControlFlow::Continue(()))
        .expect("generate");
    let has_cache = probe
        .device()
        .features()
        .contains(wgpu::Features::PIPELINE_CACHE);
    match file {
        Some(f) => {
            let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
            assert!(len > 0, "{} was not written", f.display());
        }
        None => assert!(
            !has_cache,
            "the device has a pipeline cache but kiln kept none"
        ),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
