//! Tiny random-weight models that the test writes itself (GGUF, one per architecture and weight
//! format): the GPU path and the CPU path must compute the same logits and greedy tokens, and
//! bad models must be refused with clear errors. No model download needed.

mod common;

use common::tiny::{VOCAB, tiny};
use kiln::gguf::{GgmlType, GgufFile, GgufWriter, Value};
use kiln::model::Config;
use kiln::model::cpu::CpuModel;
use kiln::model::gpu::{Choice, GpuModel, StepOutput};

fn gpu_vs_cpu(arch: &str, ty: GgmlType) {
    let Some(gpu) = common::gpu() else { return };
    let file = tiny(arch, ty, 11);
    let cfg = Config::from_gguf(&file).expect("config");
    let mut g = GpuModel::load(&gpu, &file, &cfg, 64, &mut |_, _| {}).expect("gpu load");
    let mut c = CpuModel::load(tiny(arch, ty, 11), &cfg, 64, 1, &mut |_, _| {}).expect("cpu load");
    // A prompt of 9 crosses Gemma's window of 4; then 6 decode steps fed the same tokens
    // (the CPU's greedy choices), comparing the logits of every step.
    let prompt: Vec<u32> = (0..9).map(|i| (i * 37 + 5) % VOCAB as u32).collect();
    let mut feed = prompt.clone();
    let mut pos = 0;
    for step in 0..7 {
        let n = feed.len() as u32;
        let StepOutput::Logits(gl) = g.step(&feed, pos, n, &Choice::Logits).expect("gpu step")
        else {
            panic!("logits were asked for")
        };
        let cl = c.step(&feed, pos).expect("cpu step").to_vec();
        assert!(
            gl.iter().all(|v| v.is_finite()),
            "{arch} {ty:?}: non-finite GPU logits"
        );
        let scale = cl.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
        let worst = gl
            .iter()
            .zip(&cl)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // The same int8 arithmetic on both paths, but GPU division may be off by an ulp
        // (WGSL allows 2.5), which can flip a rounding of an activation to int8 and move
        // the logits of these random models (scale 30-90) by a percent or two.
        let tol = 0.03 * scale;
        assert!(
            worst <= tol,
            "{arch} {ty:?} step {step}: GPU and CPU logits differ by {worst} (scale {scale})"
        );
        // The GPU's best id is the CPU's, unless the CPU's runner-up is within the tolerance.
        let best = |l: &[f32]| kiln_cpu::sample::argmax(l).unwrap() as usize;
        let (gb, cb) = (best(&gl), best(&cl));
        assert!(
            gb == cb || cl[cb] - cl[gb] <= 2.0 * tol,
            "{arch} {ty:?} step {step}: GPU picks {gb}, CPU {cb}"
        );
        pos += n;
        feed = vec![cb as u32];
    }
}

#[test]
fn llama_gpu_equals_cpu_for_every_weight_format() {
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
    ] {
        gpu_vs_cpu("llama", ty);
    }
}

#[test]
fn qwen2_and_gemma3_gpu_equal_cpu() {
    gpu_vs_cpu("qwen2", GgmlType::Q5_0);
    gpu_vs_cpu("gemma3", GgmlType::Q8_0);
}

#[test]
fn bad_models_are_refused_clearly() {
    // An architecture kiln does not run.
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::String("mamba".into()));
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let err = Config::from_gguf(&f).unwrap_err().to_string();
    assert!(err.contains("mamba") && err.contains("llama"), "{err}");

    // A head count that does not divide into the kv heads.
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::String("llama".into()));
    for (k, v) in [
        ("block_count", 1),
        ("embedding_length", 64),
        ("feed_forward_length", 64),
        ("attention.head_count", 3),
        ("attention.head_count_kv", 2),
    ] {
        w.add(&format!("llama.{k}"), Value::U32(v));
    }
    w.add("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    let emb = vec![0u8; GgmlType::Q8_0.row_bytes(64).unwrap() as usize * 8];
    w.add_tensor("token_embd.weight", &[64, 8], GgmlType::Q8_0, &emb)
        .unwrap();
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let err = Config::from_gguf(&f).unwrap_err().to_string();
    assert!(err.contains("cannot take"), "{err}");

    // A missing tensor: refused with the config, before any backend loads.
    let err = refused(rewrite(|_, _| None, |t| t != "blk.1.ffn_up.weight", None));
    assert!(err.contains("blk.1.ffn_up.weight"), "{err}");
}

/// The tiny llama model rewritten: metadata values through `meta` (None keeps a value), only
/// the tensors `keep` accepts, and one tensor replaced by (name, dims, bytes) of Q8_0.
fn rewrite(
    meta: impl Fn(&str, &Value) -> Option<Value>,
    keep: impl Fn(&str) -> bool,
    replace: Option<(&str, [u64; 2])>,
) -> GgufFile {
    let full = tiny("llama", GgmlType::Q8_0, 1);
    let mut w = GgufWriter::new();
    for (k, v) in full.header().metadata() {
        w.add(k, meta(k, v).unwrap_or_else(|| v.clone()));
    }
    for t in full.tensors().iter().filter(|t| keep(&t.name)) {
        match replace {
            Some((name, [k, rows])) if name == t.name => {
                let bytes = GgmlType::Q8_0.row_bytes(k).unwrap() * rows;
                w.add_tensor(name, &[k, rows], GgmlType::Q8_0, &vec![0; bytes as usize])
                    .unwrap();
            }
            _ => {
                w.add_tensor(&t.name, &t.dims, t.ty, full.tensor_data(t))
                    .unwrap();
            }
        }
    }
    GgufFile::from_bytes(w.to_bytes()).unwrap()
}

/// The error `Config::from_gguf` gives for `f` (which must fail).
fn refused(f: GgufFile) -> String {
    match Config::from_gguf(&f) {
        Ok(cfg) => panic!("an inconsistent file was accepted: {cfg:?}"),
        Err(e) => e.to_string(),
    }
}

/// Weights whose shapes contradict the metadata, and metadata far outside any model, are refused
/// with the config (naming the tensor or key, what was found and what was expected), before a
/// backend slices or allocates by them: before this check an oversized `attn_q` panicked in
/// the CPU path's slicing and a huge `feed_forward_length` aborted on allocation.
#[test]
fn tensors_that_contradict_the_metadata_are_refused() {
    use common::tiny::{D, FF, HEAD_DIM, HEADS};
    let all = |_: &str| true;
    let keep = |_: &str, _: &Value| None;
    // An attn_q twice as tall as head_count x key_length.
    let err = refused(rewrite(
        keep,
        all,
        Some(("blk.0.attn_q.weight", [D, 2 * HEADS * HEAD_DIM])),
    ));
    assert!(
        err.contains("blk.0.attn_q.weight")
            && err.contains("[64, 256]")
            && err.contains("[64, 128]"),
        "{err}"
    );
    // A row length that is not the embedding length.
    let err = refused(rewrite(
        keep,
        all,
        Some(("blk.1.ffn_down.weight", [FF, 2 * D])),
    ));
    assert!(err.contains("blk.1.ffn_down.weight"), "{err}");
    // feed_forward_length lying upwards, within the bound: the FFN tensors contradict it.
    let ff = |k: &str, _: &Value| (k == "llama.feed_forward_length").then_some(Value::U32(96_000));
    let err = refused(rewrite(ff, all, None));
    assert!(
        err.contains("blk.0.ffn_gate.weight") && err.contains("96000"),
        "{err}"
    );
    // Far beyond any model: refused by value, naming the key.
    for (key, value) in [
        ("llama.feed_forward_length", 1u32 << 30),
        ("llama.block_count", 1 << 20),
        ("llama.attention.head_count", 1 << 24),
        ("llama.embedding_length", u32::MAX),
    ] {
        let err = refused(rewrite(
            |k, _| (k == key).then_some(Value::U32(value)),
            all,
            None,
        ));
        let short = key.trim_start_matches("llama.");
        assert!(
            err.contains(short) && err.contains(&value.to_string()),
            "{key}: {err}"
        );
    }
    // More layers than the file holds: the first missing one is named.
    let err = refused(rewrite(
        |k, _| (k == "llama.block_count").then_some(Value::U32(3)),
        all,
        None,
    ));
    assert!(err.contains("blk.2."), "{err}");
}
