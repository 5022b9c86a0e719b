//! The generation API on the CPU path with a real model: the iterator and the callback agree,
//! cancellation, stop tokens, token budgets and seeded sampling.

mod common;

use std::ops::ControlFlow;

use kiln::generate::{Backend, GenerateOptions, LoadOptions, Model, StopReason};

fn model() -> Option<Model> {
    let path = common::model_file(common::MODELS[0].1, common::INSTALL_MODELS)?;
    let opts = LoadOptions {
        backend: Backend::Cpu,
        context: 128,
        threads: 2,
        ..LoadOptions::default()
    };
    Some(Model::load(&path, &opts, &mut |_, _| {}).expect("load"))
}

fn greedy(n: u32) -> GenerateOptions {
    GenerateOptions {
        max_tokens: n,
        temperature: 0.0,
        ignore_eog: true,
        ..GenerateOptions::default()
    }
}

#[test]
fn iterator_callback_cancel_and_stop_tokens() {
    let Some(mut model) = model() else { return };
    let prompt = model.encode_prompt("Once upon a time");
    let all = model
        .generate(&prompt, &greedy(8), |_, _| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(all.tokens.len(), 8);
    assert_eq!(all.stop, StopReason::MaxTokens);
    assert!(!all.text.is_empty());
    assert!(all.stats.ttft.as_nanos() > 0 && all.stats.decode_tok_s > 0.0);

    let streamed: Vec<u32> = model
        .stream(&prompt, &greedy(8))
        .unwrap()
        .map(|t| t.unwrap().id)
        .collect();
    assert_eq!(streamed, all.tokens, "iterator and callback differ");

    let mut seen = 0;
    let cut = model
        .generate(&prompt, &greedy(8), |_, _| {
            seen += 1;
            if seen == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(cut.stop, StopReason::Cancelled);
    assert_eq!(cut.tokens, all.tokens[..3]);

    let stop_at = GenerateOptions {
        stop_tokens: vec![all.tokens[2]],
        ignore_eog: false,
        ..greedy(8)
    };
    let stopped = model
        .generate(&prompt, &stop_at, |_, _| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(stopped.stop, StopReason::EndOfGeneration);
    let first = all.tokens.iter().position(|&t| t == all.tokens[2]).unwrap();
    assert_eq!(stopped.tokens, all.tokens[..first]);
}

#[test]
fn seeded_sampling_is_reproducible() {
    let Some(mut model) = model() else { return };
    let prompt = model.encode_prompt("My favourite colour is");
    let sample = |model: &mut Model, seed| {
        let opts = GenerateOptions {
            max_tokens: 12,
            temperature: 1.2,
            top_k: 50,
            top_p: 0.95,
            repetition_penalty: 1.1,
            seed,
            ignore_eog: true,
            ..GenerateOptions::default()
        };
        model
            .generate(&prompt, &opts, |_, _| ControlFlow::Continue(()))
            .unwrap()
            .tokens
    };
    let a = sample(&mut model, 7);
    let b = sample(&mut model, 7);
    assert_eq!(a, b, "the same seed gave different tokens");
    let others: Vec<Vec<u32>> = (8..12).map(|s| sample(&mut model, s)).collect();
    assert!(
        others.iter().any(|o| *o != a),
        "five seeds gave the same 12 tokens at temperature 1.2"
    );
}

#[test]
fn bad_requests_get_errors() {
    let Some(mut model) = model() else { return };
    assert!(
        model
            .generate(&[], &greedy(4), |_, _| ControlFlow::Continue(()))
            .is_err()
    );
    let too_long = vec![1u32; 200];
    let err = model
        .generate(&too_long, &greedy(4), |_, _| ControlFlow::Continue(()))
        .unwrap_err();
    assert!(err.to_string().contains("context is full"), "{err}");
    let err = model
        .generate(
            &[u32::MAX - 1],
            &greedy(4),
            |_, _| ControlFlow::Continue(()),
        )
        .unwrap_err();
    assert!(err.to_string().contains("vocabulary"), "{err}");
}

/// Options out of range are refused before a generation starts, naming the option and the
/// value (the CLI and kiln-web check theirs when parsed; a library caller gets the same).
#[test]
fn options_out_of_range_are_refused() {
    let ok = GenerateOptions::default();
    ok.validate().expect("the defaults are valid");
    for (opts, option, value) in [
        (
            GenerateOptions {
                top_p: 7.0,
                ..ok.clone()
            },
            "top_p",
            "7",
        ),
        (
            GenerateOptions {
                temperature: f32::NAN,
                ..ok.clone()
            },
            "temperature",
            "NaN",
        ),
        (
            GenerateOptions {
                temperature: -1.0,
                ..ok.clone()
            },
            "temperature",
            "-1",
        ),
        (
            GenerateOptions {
                repetition_penalty: 0.0,
                ..ok.clone()
            },
            "repetition_penalty",
            "0",
        ),
    ] {
        let err = opts.validate().unwrap_err().to_string();
        assert!(
            err.contains(&format!("`{option}`")) && err.contains(value),
            "{err}"
        );
    }
}
