//! The GPU path's promises for steady-state decoding, as counts (not times), for all three
//! models: with the fused GEMVs (the GPUs' default) at most 8 dispatches per layer plus 4 per
//! token (embedding, final norm, head, choice); unfused (CPU adapters' default) at most 10 per
//! layer plus 4; at most one submit and one CPU-GPU wait per 4 tokens with the default batch,
//! 4 bytes read back per token, and no buffer, pipeline or bind group created.

mod common;

use std::ops::ControlFlow;

use kiln::generate::{Backend, GenerateOptions, LoadOptions, Model};
use kiln::gpu::Counters;
use kiln::model::gpu::DECODE_BATCH;

/// Model `i` of [`common::MODELS`] on the GPU, with its device handle for the counters (None:
/// a loud skip).
fn on_gpu(i: usize) -> Option<(Model, kiln::Gpu)> {
    let path = common::model_file(common::MODELS[i].1, common::INSTALL_MODELS)?;
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

/// The work of a generation of `max_tokens` from `prompt`.
fn work(model: &mut Model, gpu: &kiln::Gpu, prompt: &[u32], opts: &GenerateOptions) -> Counters {
    let before = gpu.counters();
    let g = model
        .generate(prompt, opts, |_, _| ControlFlow::Continue(()))
        .expect("generate");
    assert_eq!(g.tokens.len() as u32, opts.max_tokens);
    gpu.counters() - before
}

/// The decode steps' share of a generation: a generation of 1 + `steps` tokens minus one of
/// the prompt's token alone (same prompt), after a warm-up that fills the buffer pool.
fn per_decode(model: &mut Model, gpu: &kiln::Gpu, opts: &GenerateOptions, steps: u32) -> Counters {
    let prompt = model.encode_prompt("The capital of France is");
    let one = GenerateOptions {
        max_tokens: 1,
        ..opts.clone()
    };
    let all = GenerateOptions {
        max_tokens: 1 + steps,
        ..opts.clone()
    };
    work(model, gpu, &prompt, &all);
    let prefill = work(model, gpu, &prompt, &one);
    work(model, gpu, &prompt, &all) - prefill
}

/// Checks the per-token counts with the fused GEMVs on or off (`fused`).
fn check_budget(
    name: &str,
    model: &mut Model,
    gpu: &kiln::Gpu,
    opts: &GenerateOptions,
    fused: bool,
) {
    model.set_fused(fused).expect("plans");
    let per_layer = if fused { 8 } else { 10 };
    let name = &format!("{name} ({})", if fused { "fused" } else { "unfused" });
    let layers = u64::from(model.config().n_layer);
    let steps = 8 * DECODE_BATCH;
    let d = per_decode(model, gpu, opts, steps);
    let n = u64::from(steps);
    eprintln!(
        "{name}: per decoded token {:.1} dispatches ({} layers; budget {}), {:.3} submits, \
         {:.3} waits, {:.1} bytes back, {:.0} us recording; {d:?}",
        d.dispatches as f64 / n as f64,
        layers,
        per_layer * layers + 4,
        d.submits as f64 / n as f64,
        d.waits as f64 / n as f64,
        d.bytes_read_back as f64 / n as f64,
        d.record_ns as f64 / n as f64 / 1000.0,
    );
    assert_eq!(
        d.dispatches % n,
        0,
        "{name}: steps differ in dispatches: {d:?}"
    );
    assert!(
        d.dispatches / n <= per_layer * layers + 4,
        "{name}: {} dispatches per token over the budget of {}",
        d.dispatches / n,
        per_layer * layers + 4
    );
    assert!(d.submits * 4 <= n, "{name}: {d:?}");
    assert!(d.waits * 4 <= n, "{name}: {d:?}");
    assert_eq!(d.bytes_read_back, 4 * n, "{name}: {d:?}");
    assert_eq!(
        (
            d.buffers_created,
            d.pipelines_created,
            d.bind_groups_created
        ),
        (0, 0, 0),
        "{name}: {d:?}"
    );
    assert!(d.record_ns > 0, "{name}: recording time is measured");
}

fn greedy() -> GenerateOptions {
    GenerateOptions {
        temperature: 0.0,
        ignore_eog: true,
        ..GenerateOptions::default()
    }
}

#[test]
fn smollm2_decode_within_the_budget() {
    let Some((mut model, gpu)) = on_gpu(0) else {
        return;
    };
    check_budget("smollm2", &mut model, &gpu, &greedy(), true);
    check_budget("smollm2", &mut model, &gpu, &greedy(), false);
}

#[test]
fn gemma3_decode_within_the_budget() {
    let Some((mut model, gpu)) = on_gpu(1) else {
        return;
    };
    check_budget("gemma3", &mut model, &gpu, &greedy(), true);
}

#[test]
fn qwen2_decode_within_the_budget() {
    let Some((mut model, gpu)) = on_gpu(2) else {
        return;
    };
    check_budget("qwen2", &mut model, &gpu, &greedy(), true);
}

/// Sampling happens on the GPU too, inside the same budget, and the same seed gives the same
/// tokens.
#[test]
fn sampled_decode_stays_on_the_gpu() {
    let Some((mut model, gpu)) = on_gpu(0) else {
        return;
    };
    let sampled = GenerateOptions {
        temperature: 1.0,
        top_k: 40,
        top_p: 0.9,
        repetition_penalty: 1.1,
        seed: 3,
        ignore_eog: true,
        ..GenerateOptions::default()
    };
    check_budget("smollm2 sampled", &mut model, &gpu, &sampled, true);
    let prompt = model.encode_prompt("My favourite colour is");
    let opts = GenerateOptions {
        max_tokens: 10,
        ..sampled
    };
    let run = |model: &mut Model| {
        model
            .generate(&prompt, &opts, |_, _| ControlFlow::Continue(()))
            .expect("generate")
            .tokens
    };
    let first = run(&mut model);
    assert_eq!(
        first,
        run(&mut model),
        "the same seed gave different tokens"
    );
    assert!(first.iter().all(|&t| t < model.config().vocab));
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

/// A pipeline cache that cannot be written is a warning, never a failed generation; two models
/// saving into one folder at once both finish and leave a whole file (each writes its own
/// temporary file and renames it).
#[test]
fn the_pipeline_cache_never_stops_generation() {
    let Some(path) = common::model_file(common::MODELS[0].1, common::INSTALL_MODELS) else {
        return;
    };
    let Some(probe) = common::gpu() else { return };
    if !probe
        .device()
        .features()
        .contains(wgpu::Features::PIPELINE_CACHE)
    {
        common::skip_feature("this adapter has no pipeline cache to write");
        return;
    }
    let root = std::env::temp_dir().join(format!("kiln-pcache-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    // A folder inside a regular file cannot be created.
    let blocker = root.join("a-file");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let load = |dir: std::path::PathBuf| {
        let mut opts = LoadOptions {
            backend: Backend::Gpu,
            context: 64,
            ..LoadOptions::default()
        };
        opts.gpu.cache_dir = Some(dir);
        Model::load(&path, &opts, &mut |_, _| {}).expect("load")
    };
    let greedy = GenerateOptions {
        max_tokens: 3,
        temperature: 0.0,
        ..GenerateOptions::default()
    };
    let run = |model: &mut Model| {
        let prompt = model.encode_prompt("Hello");
        model
            .generate(&prompt, &greedy, |_, _| ControlFlow::Continue(()))
            .expect("generation goes on whatever happens to the cache")
            .tokens
    };
    let mut model = load(blocker.join("cache"));
    let tokens = run(&mut model);
    assert_eq!(tokens.len(), 3);
    let warnings = model.take_warnings();
    assert!(
        warnings.iter().any(|w| w.contains("pipeline cache")),
        "no warning about the unwritable cache: {warnings:?}"
    );
    assert!(model.take_warnings().is_empty(), "warnings are taken once");

    let shared = root.join("shared");
    let (mut a, mut b) = (load(shared.clone()), load(shared.clone()));
    let (ta, tb) = std::thread::scope(|s| {
        let ja = s.spawn(|| run(&mut a));
        let jb = s.spawn(|| run(&mut b));
        (ja.join().unwrap(), jb.join().unwrap())
    });
    assert_eq!(ta, tb, "two models in one process decode alike");
    assert!(a.take_warnings().is_empty() && b.take_warnings().is_empty());
    let file = a
        .gpu()
        .unwrap()
        .pipeline_cache_file()
        .unwrap()
        .to_path_buf();
    assert!(std::fs::metadata(&file).is_ok_and(|m| m.len() > 0));
    let leftovers: Vec<_> = std::fs::read_dir(&shared)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let _ = std::fs::remove_dir_all(&root);
}
