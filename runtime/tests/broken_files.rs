//! A corpus of broken model files, each with the error it must produce, run through the whole
//! load path: `GgufFile::from_bytes`, `Config::from_gguf`, `Tokenizer::from_gguf`,
//! `check_weights`, `CpuModel::load`, `GpuModel::load` (when there is an adapter) and
//! `Model::from_gguf`. None
//! may panic; each must fail with an error holding its expected text (naming the key or tensor,
//! the value found and the value expected where the error has them), or load where the case
//! says the damage is harmless.
//!
//! The cases are variants of a complete tiny model (`common::tiny`, plus a small BPE tokenizer):
//! truncated at each section, wrong magic and version, lying counts, lengths, shapes, types and
//! offsets, bad alignment, metadata that contradicts the tensors, tokenizer metadata that
//! contradicts itself, and NaN or infinite weights.
//!
//! This test is also the corpus's generator: with `KILN_WRITE_CORPUS=DIR` it writes every case to
//! `DIR/NAME.gguf` and its expected error text to `DIR/NAME.expected` (empty for a file that must
//! load), e.g. to seed a fuzzer:
//!
//! ```sh
//! KILN_WRITE_CORPUS=/tmp/corpus cargo test --release -p kiln --test broken_files
//! ```

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use common::tiny::{VOCAB, tiny};
use kiln::Gpu;
use kiln::generate::{Backend, LoadOptions, Model};
use kiln::gguf::{Array, GgmlType, GgufFile, GgufWriter, Value};
use kiln::model::Config;
use kiln::model::config::check_weights;
use kiln::model::cpu::CpuModel;
use kiln::model::gpu::{AttnOptions, GpuLoader, GpuModel};
use kiln::ops::attention::KvType;
use kiln::tokenizer::Tokenizer;

type Meta = Vec<(String, Value)>;
type Tensors = Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>;

/// The tiny model of `arch` with a small gpt2 tokenizer, its metadata and tensors changed by
/// `edit` before it is written.
fn build(arch: &str, edit: impl FnOnce(&mut Meta, &mut Tensors)) -> Vec<u8> {
    let file = tiny(arch, GgmlType::Q8_0, 5);
    let mut meta: Meta = file.header().metadata().to_vec();
    let tokens: Vec<String> = (0..VOCAB).map(|i| format!("t{i}")).collect();
    for (k, v) in [
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("gpt-2".into())),
        ("tokenizer.ggml.tokens", Value::Array(Array::String(tokens))),
        (
            "tokenizer.ggml.token_type",
            Value::Array(Array::I32(vec![1; VOCAB as usize])),
        ),
        (
            "tokenizer.ggml.merges",
            Value::Array(Array::String(vec!["t1 0".into(), "t1 1".into()])),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
    ] {
        meta.push((k.into(), v));
    }
    let mut tensors: Tensors = file
        .tensors()
        .iter()
        .map(|t| {
            let data = file.tensor_data(t).to_vec();
            (t.name.clone(), t.dims.clone(), t.ty, data)
        })
        .collect();
    edit(&mut meta, &mut tensors);
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.add(&k, v);
    }
    for (name, dims, ty, data) in tensors {
        w.add_tensor(&name, &dims, ty, &data).expect("tensor");
    }
    w.to_bytes()
}

/// Sets `key` (replacing its value, or appending it).
fn set(meta: &mut Meta, key: &str, value: Value) {
    match meta.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => meta.push((key.into(), value)),
    }
}

/// The tiny model with one metadata value set.
fn with(arch: &str, key: &str, value: Value) -> Vec<u8> {
    build(arch, |m, _| set(m, key, value))
}

/// The tiny model with tensor `name` replaced by zeros of `dims` and `ty`.
fn retensor(arch: &str, name: &str, dims: &[u64], ty: GgmlType) -> Vec<u8> {
    build(arch, |_, ts| {
        let t = ts.iter_mut().find(|t| t.0 == name).expect("tensor present");
        let n = ty.row_bytes(dims[0]).unwrap() * dims[1..].iter().product::<u64>();
        *t = (name.into(), dims.to_vec(), ty, vec![0; n as usize]);
    })
}

/// Where each part of a GGUF file starts, found by walking its bytes.
struct Layout {
    /// Per key: the key, where its length starts, where its value starts.
    kv: Vec<(String, usize, usize)>,
    /// Per tensor info: the name, where its dims count, type id and offset start.
    infos: Vec<(String, usize, usize, usize)>,
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The end of a value of type id `ty` starting at `at`.
fn skip_value(b: &[u8], at: usize, ty: u32) -> usize {
    match ty {
        0 | 1 | 7 => at + 1,
        2 | 3 => at + 2,
        4..=6 => at + 4,
        10..=12 => at + 8,
        8 => at + 8 + read_u64(b, at) as usize,
        9 => {
            let (inner, n) = (read_u32(b, at), read_u64(b, at + 4));
            (0..n).fold(at + 12, |p, _| skip_value(b, p, inner))
        }
        _ => unreachable!("a file the writer wrote"),
    }
}

fn layout(b: &[u8]) -> Layout {
    let (n_tensors, n_kv) = (read_u64(b, 8), read_u64(b, 16));
    let mut pos = 24;
    let mut kv = Vec::new();
    for _ in 0..n_kv {
        let len = read_u64(b, pos) as usize;
        let key = String::from_utf8(b[pos + 8..pos + 8 + len].to_vec()).unwrap();
        let ty = read_u32(b, pos + 8 + len);
        let value = pos + 12 + len;
        kv.push((key, pos, value));
        pos = skip_value(b, value, ty);
    }
    let mut infos = Vec::new();
    for _ in 0..n_tensors {
        let len = read_u64(b, pos) as usize;
        let name = String::from_utf8(b[pos + 8..pos + 8 + len].to_vec()).unwrap();
        let dims = pos + 8 + len;
        let ty = dims + 4 + 8 * read_u32(b, dims) as usize;
        infos.push((name, dims, ty, ty + 4));
        pos = ty + 12;
    }
    Layout { kv, infos }
}

impl Layout {
    fn key(&self, key: &str) -> (usize, usize) {
        let k = self.kv.iter().find(|k| k.0 == key).expect("key present");
        (k.1, k.2)
    }

    fn info(&self, name: &str) -> (usize, usize, usize) {
        let t = self.infos.iter().find(|t| t.0 == name).expect("tensor");
        (t.1, t.2, t.3)
    }
}

/// `bytes` with `value` written at `at`.
fn patch(bytes: &[u8], at: usize, value: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + value.len()].copy_from_slice(value);
    b
}

/// One broken file: its name, its bytes and the text its error must hold (None: it must load).
struct Case {
    name: String,
    bytes: Vec<u8>,
    expect: Option<String>,
}

fn case(name: &str, bytes: Vec<u8>, expect: impl Into<String>) -> Case {
    Case {
        name: name.into(),
        bytes,
        expect: Some(expect.into()),
    }
}

fn loads(name: &str, bytes: Vec<u8>) -> Case {
    Case {
        name: name.into(),
        bytes,
        expect: None,
    }
}

fn cases() -> Vec<Case> {
    let good = build("llama", |_, _| {});
    let lay = layout(&good);
    let file = GgufFile::from_bytes(good.clone()).unwrap();
    let data_start = file.header().data_offset() as usize;
    let tensor = |name: &str| file.tensor(name).expect("tensor").clone();
    let last = file.tensors().last().unwrap().clone();
    let data_end = (last.offset + last.n_bytes) as usize;
    let cut = |n: usize| good[..n].to_vec();
    let u32b = |v: u32| v.to_le_bytes();
    let u64b = |v: u64| v.to_le_bytes();
    let huge = 1u64 << 40;

    let mut c = vec![
        loads("valid_llama", good.clone()),
        loads("valid_qwen2", build("qwen2", |_, _| {})),
        loads("valid_gemma3", build("gemma3", |_, _| {})),
    ];

    // Truncated at each section.
    let (arch_key, _) = lay.key("general.architecture");
    // The last key: the key count's bound does not fail before it.
    let (eos_key, eos_value) = lay.key("tokenizer.ggml.eos_token_id");
    let (_, tokens_value) = lay.key("tokenizer.ggml.tokens");
    let (last_dims, _, _) = lay.info(&last.name);
    let ffn_up = tensor("blk.0.ffn_up.weight");
    let embd = tensor("token_embd.weight");
    c.extend([
        case("cut_in_magic", cut(2), "while reading the magic"),
        case(
            "cut_after_version",
            cut(8),
            "while reading the tensor count",
        ),
        case("cut_in_counts", cut(20), "while reading the metadata count"),
        // Near the start, the bound on the key count (13 bytes each at least) is what fails.
        case(
            "cut_in_first_key",
            cut(arch_key + 11),
            "while reading the metadata",
        ),
        case(
            "cut_in_key",
            cut(eos_key + 11),
            format!("while reading metadata key {}", lay.kv.len() - 1),
        ),
        case(
            "cut_in_scalar_value",
            cut(eos_value + 2),
            "while reading the value of `tokenizer.ggml.eos_token_id`",
        ),
        case(
            "cut_in_array_value",
            cut(tokens_value + 40),
            "`tokenizer.ggml.tokens`",
        ),
        case(
            "cut_in_tensor_infos",
            cut(last_dims + 6),
            format!("while reading tensor `{}`", last.name),
        ),
        case(
            "cut_after_header",
            cut(data_start),
            format!(
                "tensor `token_embd.weight` occupies bytes {}..{} but the file has {data_start} \
                 bytes",
                embd.offset,
                embd.offset + embd.n_bytes
            ),
        ),
        case(
            "cut_in_tensor_data",
            cut((ffn_up.offset + ffn_up.n_bytes / 2) as usize),
            "tensor `blk.0.ffn_up.weight` occupies bytes",
        ),
        case(
            "one_byte_short",
            cut(data_end - 1),
            format!("tensor `{}` occupies bytes", last.name),
        ),
    ]);

    // Magic and version.
    c.extend([
        case("wrong_magic", patch(&good, 0, b"GGML"), "not a GGUF file"),
        case(
            "version_1",
            patch(&good, 4, &u32b(1)),
            "GGUF version 1 is not supported",
        ),
        case(
            "version_4",
            patch(&good, 4, &u32b(4)),
            "GGUF version 4 is not supported",
        ),
        case(
            "version_big_endian",
            patch(&good, 4, &u32b(3u32.swap_bytes())),
            "big-endian",
        ),
    ]);
    // Version 2 has the same layout as 3 (64-bit counts and lengths): it loads.
    c.push(loads("version_2", patch(&good, 4, &u32b(2))));

    // Lying counts and lengths.
    let n_tensors = file.tensors().len() as u64;
    let n_kv = lay.kv.len() as u64;
    c.extend([
        // The extra info is read from the zero padding before the data: an empty name.
        case(
            "tensor_count_plus_1",
            patch(&good, 8, &u64b(n_tensors + 1)),
            format!("tensor {n_tensors} has an empty name"),
        ),
        case(
            "tensor_count_plus_2_40",
            patch(&good, 8, &u64b(n_tensors + huge)),
            "while reading the tensor infos",
        ),
        // The first tensor info is read as a key and value, then the tensor infos from the
        // wrong place: the name length found there lies past the file.
        case(
            "kv_count_plus_1",
            patch(&good, 16, &u64b(n_kv + 1)),
            "while reading the name of tensor 0",
        ),
        case(
            "kv_count_plus_2_40",
            patch(&good, 16, &u64b(n_kv + huge)),
            "while reading the metadata",
        ),
        case(
            "key_length_past_end",
            patch(&good, arch_key, &u64b(huge)),
            "while reading metadata key 0",
        ),
        case(
            "string_length_past_end",
            patch(&good, lay.key("general.architecture").1, &u64b(huge)),
            "while reading the value of `general.architecture`",
        ),
        case(
            "array_length_huge",
            patch(&good, tokens_value + 4, &u64b(huge)),
            "while reading the array `tokenizer.ggml.tokens`",
        ),
    ]);

    // Lying shapes.
    let (q_dims, _, _) = lay.info("blk.0.attn_q.weight");
    c.extend([
        case(
            "shape_rows_swapped",
            patch(
                &patch(&good, q_dims + 4, &u64b(128)),
                q_dims + 12,
                &u64b(64),
            ),
            "tensor `blk.0.attn_q.weight` has shape [128, 64], but the metadata says [64, 128]",
        ),
        case(
            "shape_extra_dimension",
            retensor("llama", "blk.1.attn_v.weight", &[64, 64, 1], GgmlType::Q8_0),
            "tensor `blk.1.attn_v.weight` has shape [64, 64, 1], but the metadata says [64, 64]",
        ),
        case(
            "shape_zero_rows",
            retensor("llama", "blk.0.ffn_gate.weight", &[64, 0], GgmlType::Q8_0),
            "tensor `blk.0.ffn_gate.weight` has shape [64, 0], but the metadata says [64, 96]",
        ),
        case(
            "shape_zero_vocabulary",
            retensor("llama", "token_embd.weight", &[64, 0], GgmlType::Q8_0),
            "tensor `token_embd.weight` has no rows: a vocabulary of 0 tokens",
        ),
        case(
            "shape_size_overflows",
            patch(&good, q_dims + 12, &u64b(1 << 62)),
            "size of tensor `blk.0.attn_q.weight` overflows 64 bits",
        ),
    ]);

    // Lying types.
    let (_, k_ty, _) = lay.info("blk.0.attn_k.weight");
    c.extend([
        case(
            "type_unknown_id",
            patch(&good, k_ty, &u32b(99)),
            "tensor `blk.0.attn_k.weight` has unknown ggml type id 99",
        ),
        case(
            "type_q5_1_matrix",
            retensor("llama", "blk.0.attn_k.weight", &[64, 64], GgmlType::Q5_1),
            "tensor `blk.0.attn_k.weight` is stored as Q5_1, which kiln has no kernel for",
        ),
        case(
            "type_iq4_nl_matrix",
            retensor("llama", "blk.1.ffn_up.weight", &[64, 96], GgmlType::IQ4_NL),
            "tensor `blk.1.ffn_up.weight` is stored as IQ4_NL, which kiln has no kernel for",
        ),
        case(
            "type_f16_norm",
            build("llama", |_, ts| {
                let t = ts
                    .iter_mut()
                    .find(|t| t.0 == "blk.0.ffn_norm.weight")
                    .unwrap();
                *t = (t.0.clone(), vec![64], GgmlType::F16, vec![0; 128]);
            }),
            "tensor `blk.0.ffn_norm.weight` is F16 [64], expected 64 f32 values",
        ),
    ]);

    // Lying offsets and alignment.
    let (_, _, last_offset) = lay.info(&last.name);
    let (_, _, k_offset) = lay.info("blk.0.attn_k.weight");
    let q_rel = tensor("blk.0.attn_q.weight").offset - data_start as u64;
    let k_rel = tensor("blk.0.attn_k.weight").offset - data_start as u64;
    c.extend([
        case(
            "offset_past_end",
            patch(&good, last_offset, &u64b(huge)),
            format!("tensor `{}` occupies bytes", last.name),
        ),
        case(
            "offset_misaligned",
            patch(&good, k_offset, &u64b(k_rel + 16)),
            "tensor `blk.0.attn_k.weight` starts at data offset",
        ),
        case(
            "alignment_0",
            with("llama", "general.alignment", Value::U32(0)),
            "general.alignment is U32(0)",
        ),
        case(
            "alignment_3",
            with("llama", "general.alignment", Value::U32(3)),
            "general.alignment is U32(3)",
        ),
        case(
            "alignment_2_40",
            with("llama", "general.alignment", Value::U64(huge)),
            "general.alignment is U64(1099511627776)",
        ),
    ]);
    // Overlapping tensors (attn_k's data read from attn_q's bytes) are refused by the reader:
    // llama.cpp accepts them, but a streaming loader writes each byte into one buffer only, so
    // the GPU path refused them while the CPU path loaded them, until the reader judged both.
    c.push(case(
        "offset_overlapping",
        patch(&good, k_offset, &u64b(q_rel)),
        "tensor `blk.0.attn_k.weight`: its data overlaps that of `blk.0.attn_q.weight`",
    ));

    // Metadata that contradicts the tensors or the kernels.
    c.extend([
        case(
            "head_count_kv_not_dividing",
            with("llama", "llama.attention.head_count_kv", Value::U32(3)),
            "`attention.head_count` is 4, not a multiple of `attention.head_count_kv` 3",
        ),
        case(
            "head_count_kv_zero",
            with("llama", "llama.attention.head_count_kv", Value::U32(0)),
            "`attention.head_count_kv` is 0",
        ),
        case(
            "key_length_above_kernels",
            with("llama", "llama.attention.key_length", Value::U32(512)),
            "is 512; kiln's kernels take an even head size of at most 256",
        ),
        case(
            "rope_dims_above_head_dim",
            with("llama", "llama.rope.dimension_count", Value::U32(64)),
            "`rope.dimension_count` is 64, above the head size 32",
        ),
        case(
            "embedding_length_contradicts_token_embd",
            with("llama", "llama.embedding_length", Value::U32(96)),
            "tensor `token_embd.weight` has shape [64, 160], but the metadata says [96, 160]",
        ),
        case(
            "block_count_zero",
            with("llama", "llama.block_count", Value::U32(0)),
            "`block_count` is 0",
        ),
        case(
            "block_count_larger",
            with("llama", "llama.block_count", Value::U32(3)),
            "the model has no tensor `blk.2.attn_q.weight`",
        ),
        case(
            "block_count_wrong_type",
            with("llama", "llama.block_count", Value::String("2".into())),
            "metadata key `llama.block_count` is string, expected an integer",
        ),
    ]);
    // Fewer layers than the file holds: kiln loads the layers the metadata names and ignores
    // the rest. llama.cpp refuses such a file ("wrong number of tensors"); ignoring unused
    // tensors reads nothing out of bounds and sizes nothing by them, so kiln accepts it.
    c.push(loads(
        "block_count_smaller",
        with("llama", "llama.block_count", Value::U32(1)),
    ));

    // Tokenizer metadata that contradicts itself.
    c.extend([
        case(
            "token_type_short",
            with(
                "llama",
                "tokenizer.ggml.token_type",
                Value::Array(Array::I32(vec![1; VOCAB as usize - 1])),
            ),
            "159 token types for 160 tokens",
        ),
        case(
            "bos_beyond_vocabulary",
            with("llama", "tokenizer.ggml.bos_token_id", Value::U32(160)),
            "tokenizer.ggml.bos_token_id = 160, but there are 160 tokens",
        ),
        case(
            "eos_beyond_vocabulary",
            with("llama", "tokenizer.ggml.eos_token_id", Value::U32(u32::MAX)),
            "tokenizer.ggml.eos_token_id = 4294967295, but there are 160 tokens",
        ),
        case(
            "scores_wrong_length",
            build("llama", |m, _| {
                set(m, "tokenizer.ggml.model", Value::String("llama".into()));
                set(
                    m,
                    "tokenizer.ggml.scores",
                    Value::Array(Array::F32(vec![0.0; 3])),
                );
            }),
            "3 scores for 160 tokens",
        ),
        case(
            "tokens_empty",
            with(
                "llama",
                "tokenizer.ggml.tokens",
                Value::Array(Array::String(Vec::new())),
            ),
            "the tokenizer vocabulary is invalid: 0 tokens",
        ),
    ]);
    // Merges of tokens the vocabulary lacks, or without the space between their halves, can
    // never apply: they are dropped, as llama.cpp drops the first (it aborts on the second).
    c.push(loads(
        "merges_unknown_tokens",
        with(
            "llama",
            "tokenizer.ggml.merges",
            Value::Array(Array::String(vec![
                "x y".into(),
                "t1 zz".into(),
                "nospace".into(),
            ])),
        ),
    ));

    // The other architectures' own tensors.
    c.extend([
        case(
            "qwen2_missing_bias",
            build("qwen2", |_, ts| ts.retain(|t| t.0 != "blk.1.attn_v.bias")),
            "the model has no tensor `blk.1.attn_v.bias`",
        ),
        case(
            "qwen2_bias_wrong_length",
            build("qwen2", |_, ts| {
                let t = ts.iter_mut().find(|t| t.0 == "blk.0.attn_k.bias").unwrap();
                *t = (t.0.clone(), vec![32], GgmlType::F32, vec![0; 128]);
            }),
            "tensor `blk.0.attn_k.bias` is F32 [32], expected 64 f32 values",
        ),
        case(
            "qwen2_head_count_kv_not_dividing",
            with("qwen2", "qwen2.attention.head_count_kv", Value::U32(3)),
            "`attention.head_count` is 4, not a multiple of `attention.head_count_kv` 3",
        ),
        case(
            "gemma3_q_norm_wrong_length",
            build("gemma3", |_, ts| {
                let t = ts
                    .iter_mut()
                    .find(|t| t.0 == "blk.1.attn_q_norm.weight")
                    .unwrap();
                *t = (t.0.clone(), vec![64], GgmlType::F32, vec![0; 256]);
            }),
            "tensor `blk.1.attn_q_norm.weight` is F32 [64], expected 32 f32 values",
        ),
        case(
            "gemma3_missing_post_norm",
            build("gemma3", |_, ts| {
                ts.retain(|t| t.0 != "blk.0.post_ffw_norm.weight")
            }),
            "the model has no tensor `blk.0.post_ffw_norm.weight`",
        ),
        case(
            "gemma3_block_count_larger",
            with("gemma3", "gemma3.block_count", Value::U32(4)),
            "the model has no tensor `blk.2.attn_q.weight`",
        ),
    ]);

    // NaN and infinite weights: the scale of a quantized matrix's 4th block, a norm weight.
    let q = tensor("blk.0.attn_q.weight");
    let norm = tensor("blk.1.attn_norm.weight");
    c.extend([
        case(
            "nan_scale_in_attn_q",
            patch(&good, q.offset as usize + 3 * 34, &[0x00, 0x7e]),
            "tensor `blk.0.attn_q.weight` holds a NaN or infinite value (element 96)",
        ),
        case(
            "inf_in_norm_weight",
            patch(
                &good,
                norm.offset as usize + 5 * 4,
                &f32::INFINITY.to_le_bytes(),
            ),
            "tensor `blk.1.attn_norm.weight` holds a NaN or infinite value (element 5)",
        ),
    ]);
    c
}

/// The GPU loader finds the same NaN and infinities in a file streamed in 7-byte chunks (so
/// that blocks are split between chunks).
#[test]
fn the_gpu_loader_refuses_non_finite_weights_as_they_stream() {
    let Some(gpu) = common::gpu() else {
        return;
    };
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|c| c.name == "nan_scale_in_attn_q" || c.name == "inf_in_norm_weight")
        .collect();
    assert_eq!(cases.len(), 2);
    for c in cases {
        let file = GgufFile::from_bytes(c.bytes.clone()).unwrap();
        let cfg = Config::from_gguf(&file).unwrap();
        let attn = AttnOptions::for_gpu(&gpu, &cfg, KvType::F16);
        let mut loader = GpuLoader::new(&gpu, file.header(), &cfg, 64, attn).unwrap();
        loader.check_weights(true);
        let err = c
            .bytes
            .chunks(7)
            .try_for_each(|chunk| loader.write(chunk))
            .and_then(|()| loader.finish().map(drop))
            .unwrap_err()
            .to_string();
        let want = c.expect.unwrap();
        assert!(err.contains(&want), "{}: `{err}` lacks `{want}`", c.name);
    }
}

/// Every stage of the load path on `bytes`: the first error, named by its stage.
fn load_path(bytes: &[u8], gpu: Option<&Gpu>) -> Result<(), String> {
    let file = GgufFile::from_bytes(bytes.to_vec()).map_err(|e| format!("from_bytes: {e}"))?;
    // The tokenizer runs even where the config fails: both read the same header.
    let cfg = Config::from_gguf(&file);
    let tok = Tokenizer::from_gguf(&file);
    let cfg = cfg.map_err(|e| format!("Config::from_gguf: {e}"))?;
    tok.map_err(|e| format!("Tokenizer::from_gguf: {e}"))?;
    check_weights(&file, &cfg).map_err(|e| format!("check_weights: {e}"))?;
    let copy = GgufFile::from_bytes(bytes.to_vec()).expect("parsed once already");
    CpuModel::load(copy, &cfg, 64, 1, &mut |_, _| {})
        .map_err(|e| format!("CpuModel::load: {e}"))?;
    if let Some(gpu) = gpu {
        GpuModel::load(gpu, &file, &cfg, 64, &mut |_, _| {})
            .map_err(|e| format!("GpuModel::load: {e}"))?;
    }
    Ok(())
}

/// The library's entry point on `bytes`, on the CPU path.
fn entry_point(bytes: &[u8]) -> Result<(), String> {
    let file = GgufFile::from_bytes(bytes.to_vec()).map_err(|e| e.to_string())?;
    let opts = LoadOptions {
        backend: Backend::Cpu,
        context: 64,
        threads: 1,
        ..LoadOptions::default()
    };
    Model::from_gguf(file, &opts, &mut |_, _| {})
        .map(drop)
        .map_err(|e| e.to_string())
}

/// What is wrong with the outcome of `case`, if anything.
fn check(case: &Case, gpu: Option<&Gpu>) -> Option<String> {
    let run = |f: &dyn Fn() -> Result<(), String>| {
        catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
            let msg = p
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("?");
            format!("PANICKED: {msg}")
        })
    };
    let path = run(&|| load_path(&case.bytes, gpu));
    let entry = run(&|| entry_point(&case.bytes));
    let (path, entry) = match (path, entry) {
        (Err(p), _) | (_, Err(p)) => return Some(p),
        (Ok(a), Ok(b)) => (a, b),
    };
    match (&case.expect, path, entry) {
        (None, Ok(()), Ok(())) => None,
        (None, Err(e), _) | (None, _, Err(e)) => Some(format!("must load, but: {e}")),
        (Some(want), Ok(()), _) => Some(format!("loaded, but must fail with `{want}`")),
        (Some(want), Err(e), entry) => {
            if !e.contains(want.as_str()) {
                return Some(format!("error `{e}` lacks `{want}`"));
            }
            // The entry point runs the same stages (the CPU path): the same error.
            match entry {
                Err(m) if m.contains(want.as_str()) => None,
                Err(m) => Some(format!("Model::from_gguf: error `{m}` lacks `{want}`")),
                Ok(()) if e.starts_with("GpuModel::load") => None,
                Ok(()) => Some(format!(
                    "Model::from_gguf loaded, but must fail with `{want}`"
                )),
            }
        }
    }
}

#[test]
fn every_broken_file_fails_with_its_error_and_none_panics() {
    let cases = cases();
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        assert!(names.insert(c.name.as_str()), "two cases named {}", c.name);
    }
    if let Some(dir) = std::env::var_os("KILN_WRITE_CORPUS") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        for c in &cases {
            std::fs::write(dir.join(format!("{}.gguf", c.name)), &c.bytes).unwrap();
            let expect = c.expect.as_deref().unwrap_or("");
            std::fs::write(dir.join(format!("{}.expected", c.name)), expect).unwrap();
        }
        eprintln!("wrote {} cases to {}", cases.len(), dir.display());
    }
    let gpu = common::gpu();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| check(c, gpu.as_ref()).map(|why| format!("{}: {why}", c.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
