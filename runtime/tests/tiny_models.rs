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

    // A missing tensor: the model loads its config, then refuses at the tensor.
    let full = tiny("llama", GgmlType::Q8_0, 1);
    let mut w = GgufWriter::new();
    for (k, v) in full.header().metadata() {
        w.add(k, v.clone());
    }
    for t in full
        .tensors()
        .iter()
        .filter(|t| t.name != "blk.1.ffn_up.weight")
    {
        w.add_tensor(&t.name, &t.dims, t.ty, full.tensor_data(t))
            .unwrap();
    }
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let cfg = Config::from_gguf(&f).unwrap();
    let err = CpuModel::load(f, &cfg, 16, 1, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("blk.1.ffn_up.weight"), "{err}");
}
