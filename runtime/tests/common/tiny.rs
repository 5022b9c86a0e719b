//! Tiny random-weight GGUF models written in memory (one per architecture and weight format),
//! for tests that need a whole model without a download.

use half::f16;
use kiln::gguf::{Array, GgmlType, GgufFile, GgufWriter, Value};

use super::Rng;

pub const D: u64 = 64;
pub const HEADS: u64 = 4;
pub const KV_HEADS: u64 = 2;
pub const HEAD_DIM: u64 = 32;
pub const FF: u64 = 96;
pub const VOCAB: u64 = 160;
pub const LAYERS: u32 = 2;

/// Random but valid blocks of `ty` for `rows` rows of `k` weights.
pub fn blocks(rng: &mut Rng, ty: GgmlType, rows: u64, k: u64) -> Vec<u8> {
    let n = (ty.row_bytes(k).unwrap() * rows) as usize;
    let mut data: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
    let block = ty.type_size() as usize;
    let scale = |b: &mut [u8], o: usize, s: f32, rng: &mut Rng| {
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

pub fn f32s(v: &[f32]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

/// A tiny model of `arch` whose matrices are `ty` (K-quants need rows of 256: those models use
/// `D = 256`-wide FFN inputs only where they fit, so keep K-quants to llama here).
pub fn tiny(arch: &str, ty: GgmlType, seed: u64) -> GgufFile {
    let mut rng = Rng::new(seed);
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
    let norm = |rng: &mut Rng, n: u64| -> Vec<u8> {
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

/// A GPT-2 style tokenizer for the tiny models (the generation API needs one): one byte char per
/// id, no merges and no end-of-generation token.
pub fn byte_tokenizer(w: &mut GgufWriter) {
    // GPT-2's byte chars: printable bytes are themselves, the rest U+0100.. in byte order.
    let mut next = 256;
    let tokens: Vec<String> = (0..=255u8)
        .map(|b| {
            if matches!(b, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff) {
                char::from(b)
            } else {
                next += 1;
                char::from_u32(next - 1).expect("a char")
            }
        })
        .take(VOCAB as usize)
        .map(String::from)
        .collect();
    w.add("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.add("tokenizer.ggml.pre", Value::String("gpt-2".into()));
    w.add("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
}
