//! Memory and device limits: what a model needs on the GPU is computed from its header before
//! anything is created and covers what a load and a generation then create; a device whose
//! buffer limits are lowered (128 MiB, 32 MiB, an iOS-like 256 MiB per buffer with 1 GiB in all)
//! gets the weights split below them and decodes the same greedy tokens; a model over the
//! caller's budget or a KV cache over a binding limit is refused before the first buffer, with
//! an error that names the need, and `Backend::Auto` takes the CPU path instead.

mod common;

use kiln::generate::{Backend, GenerateOptions, LoadOptions, Model, Opened};
use kiln::gguf::GgufFile;
use kiln::{Error, Gpu, GpuOptions};

const MIB: u64 = 1 << 20;

fn options(max_buffer: Option<u64>, gpu_memory: Option<u64>, context: u32) -> LoadOptions {
    LoadOptions {
        backend: Backend::Gpu,
        context,
        gpu: GpuOptions {
            max_buffer_bytes: max_buffer,
            ..common::gpu_options()
        },
        gpu_memory,
        ..LoadOptions::default()
    }
}

/// Greedy ids of a fixed prompt.
fn greedy(model: &mut Model, n: u32) -> Vec<u32> {
    let prompt = model.encode_prompt("The three primary colors are");
    let opts = GenerateOptions {
        max_tokens: n,
        ignore_eog: true,
        ..GenerateOptions::default()
    };
    model
        .generate(&prompt, &opts, |_, _| std::ops::ControlFlow::Continue(()))
        .expect("generation")
        .tokens
}

/// The planned needs bound what a load and two generations create: at least the weights, KV
/// cache and scratch, at most that plus the allowance for plans and readbacks; the second
/// generation creates nothing (the KV cache and scratch are made once per context).
#[test]
fn memory_needs_cover_a_load() {
    if common::gpu().is_none() {
        return;
    }
    for (name, file) in common::MODELS {
        let Some(path) = common::model_file(file, common::INSTALL_MODELS) else {
            return;
        };
        let mut model = Model::load(&path, &options(None, None, 256), &mut |_, _| {}).unwrap();
        let needs = model.gpu_memory_needs().expect("a GPU model");
        greedy(&mut model, 8);
        let gpu = model.gpu().unwrap().clone();
        let after_one = gpu.counters();
        greedy(&mut model, 8);
        let after_two = gpu.counters();
        let created = after_one.bytes_created;
        eprintln!(
            "{name}: planned {needs} = {} B; created {created} B in {} buffers",
            needs.total(),
            after_one.buffers_created
        );
        assert!(
            created <= needs.total(),
            "{name}: created {created} B, more than the {} B planned ({needs})",
            needs.total()
        );
        // The scratch's share includes a 256 KiB allowance for plans, step parameters and
        // readbacks (66-96 KiB measured); everything else is created exactly as planned.
        assert!(
            created + (256 << 10) >= needs.total(),
            "{name}: created {created} B, far less than the {} B planned ({needs})",
            needs.total()
        );
        assert_eq!(
            (after_two - after_one).buffers_created,
            0,
            "{name}: a second generation created buffers"
        );
    }
}

/// Devices with lowered buffer limits: the weights (SmolLM2's 17 MiB embedding splits under
/// 4 MiB; Gemma 3's 170 MiB one, shared with the output, under each) are split below them and
/// the greedy tokens stay the same.
#[test]
fn lowered_limits_split_the_weights_and_agree() {
    if common::gpu().is_none() {
        return;
    }
    for (name, file) in &common::MODELS[..2] {
        let Some(path) = common::model_file(file, common::INSTALL_MODELS) else {
            return;
        };
        let mut model = Model::load(&path, &options(None, None, 256), &mut |_, _| {}).unwrap();
        let want = greedy(&mut model, 12);
        drop(model);
        for cap in [128 * MIB, 32 * MIB, 4 * MIB] {
            let mut model =
                Model::load(&path, &options(Some(cap), None, 256), &mut |_, _| {}).unwrap();
            let limits = model.gpu().unwrap().limits().clone();
            assert!(limits.max_buffer_size <= cap && limits.max_storage_buffer_binding_size <= cap);
            let created = model.gpu().unwrap().counters().buffers_created;
            eprintln!("{name} under {} MiB: {created} buffers", cap / MIB);
            assert_eq!(greedy(&mut model, 12), want, "{name} under {cap} B");
        }
    }
}

/// An iOS-like device: 256 MiB per buffer and 1 GiB in all. Qwen2.5-0.5B at 2048 positions fits
/// and generates; with a budget one byte below its needs it is refused before any buffer is
/// created (the error gives the needs), and `Backend::Auto` loads it on the CPU path instead.
#[test]
fn a_budget_is_kept_before_anything_is_created() {
    let Some(gpu) = common::gpu() else {
        return;
    };
    let Some(path) = common::model_file(common::MODELS[2].1, common::INSTALL_MODELS) else {
        return;
    };
    let ios = options(Some(256 * MIB), Some(1 << 30), 2048);
    let mut model = Model::load(&path, &ios, &mut |_, _| {}).unwrap();
    let needs = model.gpu_memory_needs().unwrap();
    eprintln!("qwen2 at 2048 positions needs {needs}");
    assert!(needs.total() <= 1 << 30);
    assert_eq!(greedy(&mut model, 4).len(), 4);
    drop(model);

    let tight = LoadOptions {
        gpu_memory: Some(needs.total() - 1),
        ..options(None, None, 2048)
    };
    let file = GgufFile::open(&path).unwrap();
    let before = gpu.counters();
    let err = Model::gpu_stream(&gpu, file.header(), &tight).unwrap_err();
    assert_eq!(gpu.counters().buffers_created, before.buffers_created);
    eprintln!("{err}");
    match &err {
        Error::GpuMemory { needs: got, .. } => assert_eq!(*got, needs),
        other => panic!("expected GpuMemory, got {other}"),
    }
    assert!(err.to_string().contains("smaller context"), "{err}");

    let auto = LoadOptions {
        backend: Backend::Auto,
        ..tight
    };
    let opened = Opened {
        gpu: Some(gpu.clone()),
        reason: "the test's adapter".into(),
    };
    let model = Model::from_gguf_on(file, opened, &auto, &mut |_, _| {}).unwrap();
    assert_eq!(model.backend_name(), "cpu");
    assert!(
        model.backend_reason().contains("does not fit"),
        "{}",
        model.backend_reason()
    );
    assert_eq!(gpu.counters().buffers_created, before.buffers_created);
}

/// A KV cache layer over the binding limit (SmolLM2 at its 8192 positions: 3 MiB per layer,
/// under a 1 MiB limit) is refused before the first buffer, naming the cache and the limit.
#[test]
fn a_cache_over_the_binding_limit_is_refused_up_front() {
    let Some(path) = common::model_file(common::MODELS[0].1, common::INSTALL_MODELS) else {
        return;
    };
    let gpu = match Gpu::new_blocking(GpuOptions {
        max_buffer_bytes: Some(MIB),
        ..common::gpu_options()
    }) {
        Ok(gpu) => gpu,
        // common::gpu() records the missing adapter (a failure under KILN_REQUIRE_GPU=1).
        Err(Error::NoAdapter { .. }) if common::gpu().is_none() => return,
        Err(e) => panic!("a device with 1 MiB buffers: {e}"),
    };
    let file = GgufFile::open(&path).unwrap();
    let err = Model::gpu_stream(&gpu, file.header(), &options(None, None, 8192)).unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(&err, Error::BufferTooLarge { what, limit, .. } if what == "k cache" && *limit == MIB),
        "{err}"
    );
    assert_eq!(gpu.counters().buffers_created, 0);
    // Below the limit, the same device loads it.
    Model::gpu_stream(&gpu, file.header(), &options(None, None, 2048)).unwrap();
}

/// Sizes as people write them, and the options that take them.
#[test]
fn sizes_parse_and_bad_ones_are_named() {
    use kiln::gpu::context::parse_bytes;
    assert_eq!(parse_bytes("1048576"), Some(MIB));
    assert_eq!(parse_bytes("128MiB"), Some(128 * MIB));
    assert_eq!(parse_bytes("1g"), Some(1 << 30));
    assert_eq!(parse_bytes("256 MB"), Some(256 * MIB));
    assert_eq!(parse_bytes("12 parsecs"), None);
    assert_eq!(parse_bytes("99999999999999999999G"), None);
    let err = options(None, Some(0), 256).validate().unwrap_err();
    assert!(err.to_string().contains("KILN_GPU_MEMORY"), "{err}");
    let err = Gpu::new_blocking(GpuOptions {
        max_buffer_bytes: Some(1000),
        ..common::gpu_options()
    })
    .unwrap_err();
    assert!(err.to_string().contains("KILN_MAX_BUFFER"), "{err}");
}
