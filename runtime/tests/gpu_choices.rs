//! Choices the GPU path makes for the user: `auto` passes over a software adapter (lavapipe,
//! SwiftShader, WARP: slower than the SIMD CPU path) and says so; a long prompt is split over
//! several submits so that none runs long enough to trip a driver's timeout, without changing
//! its logits.

mod common;

use common::tiny::{VOCAB, tiny};
use kiln::generate::{Backend, LoadOptions, Model};
use kiln::gguf::GgmlType;
use kiln::model::Config;
use kiln::model::gpu::{Choice, GpuModel, StepOutput};

#[test]
fn auto_passes_over_a_software_adapter_and_says_why() {
    let Some(path) = common::model_file(common::MODELS[0].1, common::INSTALL_MODELS) else {
        return;
    };
    let Some(gpu) = common::gpu() else { return };
    let software = gpu.adapter_info().device_type == wgpu::DeviceType::Cpu;
    let load = |backend| {
        let opts = LoadOptions {
            backend,
            context: 64,
            ..LoadOptions::default()
        };
        Model::load(&path, &opts, &mut |_, _| {}).expect("load")
    };
    let auto = load(Backend::Auto);
    let reason = auto.backend_reason().to_string();
    eprintln!("auto: {} ({reason})", auto.backend_name());
    if software {
        assert_eq!(auto.backend_name(), "cpu", "{reason}");
        assert!(reason.contains("software"), "{reason}");
        assert!(reason.contains(&gpu.adapter_info().name), "{reason}");
    } else {
        assert_eq!(auto.backend_name(), "gpu", "{reason}");
    }
    // Asking for the GPU still gets it, software or not.
    let forced = load(Backend::Gpu);
    assert_eq!(forced.backend_name(), "gpu");
    assert!(forced.backend_reason().contains("as asked"));
    assert_eq!(load(Backend::Cpu).backend_name(), "cpu");
}

/// The first long prompt a model sees submits its first chunk alone and waits for it, to learn
/// how long a chunk takes; later submits hold as many chunks as fit in about a quarter second.
/// The logits are those of the same prompt run again.
#[test]
fn a_long_prompt_is_split_over_submits() {
    let Some(gpu) = common::gpu() else { return };
    let file = tiny("llama", GgmlType::Q4_0, 5);
    let cfg = Config::from_gguf(&file).expect("config");
    let mut model = GpuModel::load(&gpu, &file, &cfg, 512, &mut |_, _| {}).expect("load");
    // More than two chunks on every adapter (32 tokens on CPU adapters, 128 on GPUs).
    let prompt: Vec<u32> = (0..300).map(|i| (i * 37 + 5) % VOCAB as u32).collect();
    let run = |model: &mut GpuModel| {
        let before = gpu.counters();
        let StepOutput::Logits(l) = model
            .step(&prompt, 0, prompt.len() as u32, &Choice::Logits)
            .expect("step")
        else {
            panic!("logits were asked for")
        };
        (l, gpu.counters() - before)
    };
    let (first, c) = run(&mut model);
    assert!(
        c.submits >= 2 && c.waits >= 2,
        "the first chunk is submitted and timed alone: {c:?}"
    );
    let (again, _) = run(&mut model);
    assert!(first.iter().all(|v| v.is_finite()));
    assert_eq!(first, again, "the split changed the logits");
}
