//! Tiny random-weight models that the test writes itself (GGUF, one per architecture and weight
//! format): the GPU path and the CPU path must compute the same logits and greedy tokens, and
//! bad models must be refused with clear errors. No model download needed.

mod common;

use half::f16;
use kiln::gguf::{GgmlType, GgufFile, GgufWriter, Value};
use kiln::model::Config;
use kiln::model::cpu::CpuModel;
use kiln::model::gpu::{Choice, GpuModel, StepOutput};

const D: u64 = 64;
const HEADS: u64 = 4;
const KV_HEADS: u64 = 2;
const HEAD_DIM: u64 = 32;
const FF: u64 = 96;
const VOCAB: u64 = 160;
const LAYERS: u32 = 2;

/// Random but valid blocks of `ty` for `rows` rows of `k` weights.
fn blocks(rng: &mut common::Rng, ty: GgmlType, rows: u64, k: u64) -> Vec<u8> {
    let n = (ty.row_bytes(k).unwrap() * rows) as usize;
    let mut data: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
    let block = ty.type_size() as usize;
    let scale = |b: &mut [u8], o: usize, s: f32, rng: &mut common::Rng| {
        let v = f16::from_f32(s * (0.75 + 0.5 * rng.f32().abs()));
        b[o..o + 2].copy_from_slice(&v.to_le_bytes());
    };
    for b in data.chunks_exact_mut(block) {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 => scale(b, 0, 0.02, rng),
            // Q8_0's quants reach ±127 (Q4's ±8): a 16x smaller scale keeps the weights, and so
            // the activations and attention scores, the same size. Random models with larger
            // weights grow huge activations and near-one-hot attention, where last-bit
            // differences between two correct paths swing logits by percents (seen on an H100).
            GgmlType::Q8_0 => scale(b, 0, 0.02 / 16.0, rng),
            GgmlType::Q4_1 => {
                scale(b, 0, 0.02, rng);
                let m = f16::from_f32(-0.15);
                b[2..4].copy_from_slice(&m.to_le_bytes());
            }
            GgmlType::Q4_K => {
                scale(b, 0, 0.002, rng);
                scale(b, 2, 0.002, rng);
            }
            GgmlType::Q6_K => scale(b, 208, 0.001, rng),
            _ => unreachable!(),
        }
    }
    data
}

fn f32s(v: &[f32]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

/// A tiny model of `arch` whose matrices are `ty` (K-quants need rows of 256: those models use
/// `D = 256`-wide FFN inputs only where they fit, so keep K-quants to llama here).
fn tiny(arch: &str, ty: GgmlType, seed: u64) -> GgufFile {
    let mut rng = common::Rng::new(seed);
    let mut w = GgufWriter::new();
    let key = |k: &str| format!("{arch}.{k}");
    w.add("general.architecture", Value::String(arch.into()));
    w.add(&key("block_count"), Value::U32(LAYERS));
    w.add(&key("embedding_length"), Value::U32(D as u32));
    w.add(&key("feed_forward_length"), Value::U32(FF as u32));
    w.add(&key("attention.head_count"), Value::U32(HEADS as u32));
    w.add(&key("attention.head_count_kv"), Value::U32(KV_HEADS as u32));
    w.add(&key("attention.key_length"), Value::U32(HEAD_DIM as u32));
    w.add(&key("attention.layer_norm_rms_epsilon"), Value::F32(1e-6));
    w.add(&key("rope.freq_base"), Value::F32(10_000.0));
    w.add(&key("context_length"), Value::U32(256));
    if arch == "gemma3" {
        w.add(&key("attention.sliding_window"), Value::U32(4));
    }
    let q_dim = HEADS * HEAD_DIM;
    let kv_dim = KV_HEADS * HEAD_DIM;
    let norm = |rng: &mut common::Rng, n: u64| -> Vec<u8> {
        f32s(&(0..n).map(|_| 1.0 + 0.2 * rng.f32()).collect::<Vec<_>>())
    };
    let tensor = |w: &mut GgufWriter, name: &str, dims: &[u64], ty: GgmlType, data: &[u8]| {
        w.add_tensor(name, dims, ty, data).expect("tensor");
    };
    let emb = blocks(&mut rng, GgmlType::Q8_0, VOCAB, D);
    tensor(
        &mut w,
        "token_embd.weight",
        &[D, VOCAB],
        GgmlType::Q8_0,
        &emb,
    );
    let on = norm(&mut rng, D);
    tensor(&mut w, "output_norm.weight", &[D], GgmlType::F32, &on);
    for il in 0..LAYERS {
        let n = |s: &str| format!("blk.{il}.{s}");
        let mats = [
            ("attn_q.weight", D, q_dim),
            ("attn_k.weight", D, kv_dim),
            ("attn_v.weight", D, kv_dim),
            ("attn_output.weight", q_dim, D),
            ("ffn_gate.weight", D, FF),
            ("ffn_up.weight", D, FF),
            ("ffn_down.weight", FF, D),
        ];
        for (name, k, rows) in mats {
            let data = blocks(&mut rng, ty, rows, k);
            tensor(&mut w, &n(name), &[k, rows], ty, &data);
        }
        let mut norms = vec![("attn_norm.weight", D), ("ffn_norm.weight", D)];
        if arch == "gemma3" {
            norms.extend([
                ("attn_q_norm.weight", HEAD_DIM),
                ("attn_k_norm.weight", HEAD_DIM),
                ("post_attention_norm.weight", D),
                ("post_ffw_norm.weight", D),
            ]);
        }
        for (name, len) in norms {
            let data = norm(&mut rng, len);
            tensor(&mut w, &n(name), &[len], GgmlType::F32, &data);
        }
        if arch == "qwen2" {
            for (name, len) in [
                ("attn_q.bias", q_dim),
                ("attn_k.bias", kv_dim),
                ("attn_v.bias", kv_dim),
            ] {
                let b: Vec<f32> = (0..len).map(|_| 0.1 * rng.f32()).collect();
                tensor(&mut w, &n(name), &[len], GgmlType::F32, &f32s(&b));
            }
        }
    }
    GgufFile::from_bytes(w.to_bytes()).expect("a valid GGUF")
}

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
