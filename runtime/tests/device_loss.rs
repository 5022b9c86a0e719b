//! A GPU device lost mid-generation (forced with `Device::destroy`, as a driver reset or a
//! browser's `device.destroy()` would): the generation reports it, the model comes back on a new
//! device (or on the CPU path) and the caller's generation finishes with the greedy tokens of a
//! run that was never interrupted; a loss between generations is recovered the same way; a
//! caller that asked to fail gets `Error::DeviceLost`.

mod common;

use std::ops::ControlFlow;

use kiln::Error;
use kiln::generate::{Backend, GenerateOptions, LoadOptions, Model, OnDeviceLost};
use kiln::gguf::GgufFile;

const PROMPT: &str = "The capital of France is";
const TOKENS: u32 = 24;

fn load(backend: Backend, on_device_lost: OnDeviceLost) -> Option<Model> {
    let path = common::model_file(common::MODELS[0].1, common::INSTALL_MODELS)?;
    let opts = LoadOptions {
        backend,
        context: 256,
        on_device_lost,
        ..LoadOptions::default()
    };
    Some(Model::load(path, &opts, &mut |_, _| {}).unwrap())
}

fn greedy() -> GenerateOptions {
    GenerateOptions {
        max_tokens: TOKENS,
        ignore_eog: true,
        ..GenerateOptions::default()
    }
}

/// Greedy tokens; the device is destroyed after the `lose_after`-th token is handed out.
fn generate(model: &mut Model, lose_after: Option<usize>) -> kiln::Result<Vec<u32>> {
    generate_with(model, &greedy(), lose_after)
}

fn generate_with(
    model: &mut Model,
    opts: &GenerateOptions,
    lose_after: Option<usize>,
) -> kiln::Result<Vec<u32>> {
    let gpu = model.gpu().cloned();
    let prompt = model.encode_prompt(PROMPT);
    let mut n = 0;
    let g = model.generate(&prompt, opts, |_, _| {
        n += 1;
        if Some(n) == lose_after {
            gpu.as_ref().expect("a GPU model").device().destroy();
        }
        ControlFlow::Continue(())
    })?;
    Ok(g.tokens)
}

/// Lost after the 6th token (mid-batch: decode batches hold 4), then again between two
/// generations, then in a sampled generation: each time the model comes back on a new device
/// and the tokens are those of an uninterrupted run.
#[test]
fn a_lost_device_is_reloaded_and_the_generation_goes_on() {
    if common::gpu().is_none() {
        return;
    }
    let Some(mut model) = load(Backend::Gpu, OnDeviceLost::Reload) else {
        return;
    };
    let want = generate(&mut model, None).unwrap();
    assert!(model.take_warnings().is_empty());

    let first = model.gpu().unwrap().clone();
    let got = generate(&mut model, Some(6)).unwrap();
    assert_eq!(got, want, "tokens after a loss at token 6");
    let warnings = model.take_warnings();
    eprintln!("{warnings:?}\nbackend: {}", model.backend_reason());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("lost"), "{warnings:?}");
    assert_eq!(model.backend_name(), "gpu");
    let second = model.gpu().unwrap().clone();
    assert!(first.lost_reason().is_some());
    assert!(second.lost_reason().is_none());

    // Lost between generations: the next one recovers at its first step.
    second.device().destroy();
    assert_eq!(generate(&mut model, None).unwrap(), want);
    assert_eq!(model.take_warnings().len(), 1);
    assert_eq!(model.backend_name(), "gpu");

    // Sampled on the GPU: its random numbers are keyed by the step, so the tokens after a loss
    // are those of an uninterrupted run too.
    let sampled = GenerateOptions {
        temperature: 0.9,
        seed: 11,
        ..greedy()
    };
    let want = generate_with(&mut model, &sampled, None).unwrap();
    assert_eq!(generate_with(&mut model, &sampled, Some(10)).unwrap(), want);
}

/// Asked to continue on the CPU path, the generation goes on there with the same tokens (the
/// two paths agree on this prompt: checked first).
#[test]
fn a_lost_device_can_hand_over_to_the_cpu_path() {
    if common::gpu().is_none() {
        return;
    }
    let Some(mut cpu) = load(Backend::Cpu, OnDeviceLost::Reload) else {
        return;
    };
    let want = generate(&mut cpu, None).unwrap();
    drop(cpu);
    let mut model = load(Backend::Gpu, OnDeviceLost::Cpu).unwrap();
    assert_eq!(
        generate(&mut model, None).unwrap(),
        want,
        "GPU and CPU paths"
    );
    assert_eq!(generate(&mut model, Some(9)).unwrap(), want);
    assert_eq!(model.backend_name(), "cpu");
    let warnings = model.take_warnings();
    assert!(warnings[0].contains("CPU path"), "{warnings:?}");
    // And it stays usable there.
    assert_eq!(generate(&mut model, None).unwrap(), want);
}

/// `OnDeviceLost::Fail`, and a model streamed to its GPU (no file to reload from): the
/// generation ends with `Error::DeviceLost`, the tokens before it handed out.
#[test]
fn a_lost_device_is_reported_when_it_cannot_be_recovered() {
    let Some(gpu) = common::gpu() else {
        return;
    };
    let Some(mut model) = load(Backend::Gpu, OnDeviceLost::Fail) else {
        return;
    };
    let err = generate(&mut model, Some(3)).unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, Error::DeviceLost { .. }), "{err}");
    // Failing is for generations; the caller's Model::recover still brings it back.
    model.recover().unwrap();
    let fresh = generate(&mut model, None).unwrap();
    assert_eq!(fresh.len(), TOKENS as usize);
    assert!(model.take_warnings()[0].contains("loaded again"));

    let path = common::model_file(common::MODELS[0].1, common::INSTALL_MODELS).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let opts = LoadOptions {
        context: 256,
        ..LoadOptions::default()
    };
    let mut stream = Model::gpu_stream(&gpu, file.header(), &opts).unwrap();
    stream.write(file.bytes()).unwrap();
    let mut model = stream.finish().unwrap();
    let err = generate(&mut model, Some(3)).unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(&err, Error::DeviceLost { reason } if reason.contains("no file to reload")),
        "{err}"
    );
}

/// A generation continued after its first tokens (how kiln-web goes on after a reload) hands out
/// the tokens an uninterrupted run would, on both paths.
#[test]
fn a_generation_continues_where_it_stopped() {
    let mut backends = vec![Backend::Cpu];
    if common::gpu().is_some() {
        backends.push(Backend::Gpu);
    }
    for backend in backends {
        let Some(mut model) = load(backend, OnDeviceLost::Reload) else {
            return;
        };
        let prompt = model.encode_prompt(PROMPT);
        for opts in [
            greedy(),
            GenerateOptions {
                temperature: 0.9,
                seed: 5,
                ..greedy()
            },
        ] {
            let want = generate_with(&mut model, &opts, None).unwrap();
            let rest: Vec<u32> = model
                .stream_continuing(&prompt, &want[..7], &opts)
                .unwrap()
                .map(|t| t.unwrap().id)
                .collect();
            assert_eq!(
                rest,
                want[7..],
                "{backend:?}, temperature {}",
                opts.temperature
            );
        }
    }
}
