//! Non-finite logits end a generation with `Error::NonFinite` on both paths, greedy and
//! sampled, at decode batches of 1 and 4, instead of a token chosen from garbage; the tokens
//! before the error are those of the intact model.

mod common;

use std::ops::ControlFlow;

use common::Rng;
use common::tiny::{D, VOCAB, byte_tokenizer, f32s, tiny};
use kiln::Error;
use kiln::generate::{Backend, GenerateOptions, LoadOptions, Model};
use kiln::gguf::{GgmlType, GgufFile, GgufWriter};

const PROMPT: [u32; 3] = [17, 3, 99];

/// The tiny llama with a tokenizer and an untied F32 output matrix (the residual stream carries
/// a NaN past the layers' int8-rounded activations; an F32 product keeps it), its tensor bytes
/// passed through `edit`.
fn model_file(edit: impl Fn(&str, &mut Vec<u8>)) -> GgufFile {
    let file = tiny("llama", GgmlType::Q8_0, 3);
    let mut w = GgufWriter::new();
    for (key, value) in file.header().metadata() {
        w.add(key, value.clone());
    }
    byte_tokenizer(&mut w);
    let output = f32s(&Rng::new(9).vec((D * VOCAB) as usize));
    let tensors = file
        .tensors()
        .iter()
        .map(|t| (t.name.as_str(), t.dims.clone(), t.ty, file.tensor_data(t)))
        .chain([("output.weight", vec![D, VOCAB], GgmlType::F32, &output[..])]);
    for (name, dims, ty, data) in tensors {
        let mut data = data.to_vec();
        edit(name, &mut data);
        w.add_tensor(name, &dims, ty, &data).expect("tensor");
    }
    GgufFile::from_bytes(w.to_bytes()).expect("a valid GGUF")
}

/// A Q8_0 row's blocks all scaled by an f16 NaN: the embedding of `id` is NaN.
fn nan_embedding(id: u32) -> impl Fn(&str, &mut Vec<u8>) {
    move |name, data| {
        if name == "token_embd.weight" {
            let row = GgmlType::Q8_0.row_bytes(D).expect("row") as usize;
            for block in data[id as usize * row..][..row].chunks_mut(34) {
                block[..2].copy_from_slice(&0x7e00u16.to_le_bytes());
            }
        }
    }
}

fn load(file: GgufFile, backend: Backend, decode_batch: u32) -> Option<Model> {
    if backend == Backend::Gpu && common::gpu().is_none() {
        return None;
    }
    let opts = LoadOptions {
        backend,
        context: 32,
        threads: 1,
        decode_batch: Some(decode_batch),
        // The load-time scan would refuse the NaN weights these files carry; what is tested
        // here is the check on the logits, which also catches activations that overflow.
        check_weights: false,
        ..LoadOptions::default()
    };
    Some(Model::from_gguf(file, &opts, &mut |_, _| {}).expect("load"))
}

fn settings(sampled: bool) -> GenerateOptions {
    GenerateOptions {
        max_tokens: 10,
        temperature: if sampled { 0.8 } else { 0.0 },
        top_k: 40,
        top_p: 0.9,
        repetition_penalty: 1.1,
        seed: 7,
        ..GenerateOptions::default()
    }
}

/// The tokens streamed before the generation ended, and its error (None if it finished).
fn run(model: &mut Model, opts: &GenerateOptions) -> (Vec<u32>, Option<Error>) {
    let mut got = Vec::new();
    let result = model.generate(&PROMPT, opts, |id, _| {
        got.push(id);
        ControlFlow::Continue(())
    });
    (got, result.err())
}

fn check(backend: Backend) {
    for batch in [1, 4] {
        for sampled in [false, true] {
            let what = format!("{backend:?} batch {batch} sampled {sampled}");
            let opts = settings(sampled);
            let Some(mut intact) = load(model_file(|_, _| {}), backend, batch) else {
                return;
            };
            let (reference, err) = run(&mut intact, &opts);
            assert!(err.is_none(), "{what}: the intact model failed: {err:?}");
            assert_eq!(reference.len(), 10, "{what}");

            // A NaN output norm: the first choice already fails, at the prompt's last position.
            let norm = |name: &str, data: &mut Vec<u8>| {
                if name == "output_norm.weight" {
                    data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
                }
            };
            let mut broken = load(model_file(norm), backend, batch).expect("loads like the intact");
            let (got, err) = run(&mut broken, &opts);
            assert!(got.is_empty(), "{what}: {got:?} from NaN logits");
            match err {
                Some(Error::NonFinite { position: 2 }) => {}
                other => panic!("{what}: NaN output norm gave {other:?}"),
            }

            // A NaN embedding of a token the generation first makes at step k: it runs as
            // before up to that token, then fails at the token's position.
            let k = (1..reference.len())
                .find(|&k| {
                    !PROMPT.contains(&reference[k]) && !reference[..k].contains(&reference[k])
                })
                .unwrap_or_else(|| panic!("{what}: no new token in {reference:?}"));
            let bad = reference[k];
            let mut broken = load(model_file(nan_embedding(bad)), backend, batch).expect("loads");
            let (got, err) = run(&mut broken, &opts);
            assert_eq!(
                got,
                reference[..=k],
                "{what}: the tokens before the NaN changed"
            );
            let position = (PROMPT.len() + k) as u32;
            match err {
                Some(Error::NonFinite { position: p }) if p == position => {
                    let msg = Error::NonFinite { position }.to_string();
                    assert!(
                        msg.contains(&format!("NaN or infinite logits at position {position}")),
                        "{msg}"
                    );
                }
                other => panic!("{what}: a NaN embedding gave {other:?}, not at {position}"),
            }
        }
    }
}

#[test]
fn cpu_path_refuses_non_finite_logits() {
    check(Backend::Cpu);
}

#[test]
fn gpu_path_refuses_non_finite_logits() {
    check(Backend::Gpu);
}
