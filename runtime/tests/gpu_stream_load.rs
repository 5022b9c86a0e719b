//! The GPU model loaded from a GGUF file fed in chunks (as a browser streams it): any chunk
//! sizes, and matrices split across several buffers, give the same logits as the whole file;
//! a truncated or overlong file is refused, naming what is wrong.

mod common;

use common::Rng;
use common::tiny::{VOCAB, tiny};
use kiln::gguf::{GgmlType, GgufFile};
use kiln::gpu::Gpu;
use kiln::model::Config;
use kiln::model::gpu::{AttnOptions, Choice, GpuLoader, GpuModel, StepOutput};
use kiln::ops::attention::KvType;

const CAPACITY: u32 = 64;

/// The logits of a 9-token prompt and of 3 greedy decode steps after it.
fn logits(model: &mut GpuModel) -> Vec<Vec<f32>> {
    let mut feed: Vec<u32> = (0..9).map(|i| (i * 37 + 5) % VOCAB as u32).collect();
    let mut pos = 0;
    let mut all = Vec::new();
    for _ in 0..4 {
        let n = feed.len() as u32;
        let StepOutput::Logits(l) = model.step(&feed, pos, n, &Choice::Logits).expect("step")
        else {
            panic!("logits were asked for")
        };
        assert!(l.iter().all(|v| v.is_finite()), "non-finite logits");
        pos += n;
        feed = vec![kiln_cpu::sample::argmax(&l).unwrap() as u32];
        all.push(l);
    }
    all
}

fn attn(gpu: &Gpu, cfg: &Config) -> AttnOptions {
    AttnOptions::for_gpu(gpu, cfg, KvType::F16)
}

/// The model from `file` fed in chunks of the sizes `next_size` gives, with parts of at most
/// `part_limit` bytes.
fn streamed(
    gpu: &Gpu,
    file: &GgufFile,
    part_limit: u64,
    mut next_size: impl FnMut() -> usize,
) -> kiln::Result<GpuModel> {
    let cfg = Config::from_header(file.header())?;
    let mut loader = GpuLoader::with_part_limit(
        gpu,
        file.header(),
        &cfg,
        CAPACITY,
        attn(gpu, &cfg),
        part_limit,
    )?;
    let mut rest = file.bytes();
    let mut last_done = 0;
    while !rest.is_empty() {
        let n = next_size().clamp(1, rest.len());
        loader.write(&rest[..n])?;
        rest = &rest[n..];
        let (done, total) = loader.progress();
        assert!(
            done >= last_done && done <= total,
            "progress {done}/{total}"
        );
        last_done = done;
    }
    assert_eq!(loader.received(), file.bytes().len() as u64);
    let (done, total) = loader.progress();
    assert_eq!(done, total, "every tensor complete");
    loader.finish()
}

/// The whole-file load's logits (the native path: the mapped file in one feed).
fn whole(gpu: &Gpu, file: &GgufFile) -> Vec<Vec<f32>> {
    let cfg = Config::from_gguf(file).expect("config");
    let mut model = GpuModel::load_with(gpu, file, &cfg, CAPACITY, attn(gpu, &cfg), &mut |_, _| {})
        .expect("whole-file load");
    logits(&mut model)
}

fn bits(l: &[Vec<f32>]) -> Vec<Vec<u32>> {
    l.iter()
        .map(|v| v.iter().map(|x| x.to_bits()).collect())
        .collect()
}

#[test]
fn any_chunk_sizes_give_the_whole_file_logits() {
    let Some(gpu) = common::gpu() else { return };
    // Llama with Q8_0 (tied output, 102-byte rows of the FFN's down projection: parts whose
    // length is not a multiple of 4), Qwen2 with Q5_0 (biases: more vectors on the CPU side).
    for (arch, ty) in [("llama", GgmlType::Q8_0), ("qwen2", GgmlType::Q5_0)] {
        let file = tiny(arch, ty, 5);
        let want = bits(&whole(&gpu, &file));
        for size in [1, 3, 7, 4093] {
            let mut model = streamed(&gpu, &file, u64::MAX, || size).expect("streamed load");
            assert_eq!(
                bits(&logits(&mut model)),
                want,
                "{arch} {ty:?}: chunks of {size} bytes"
            );
        }
        let mut rng = Rng::new(99);
        let mut model = streamed(&gpu, &file, u64::MAX, || {
            // Mostly small chunks, some larger than the loader's staging buffer.
            match rng.next_u64() % 8 {
                0 => 70_000 + (rng.next_u64() % 5000) as usize,
                _ => 1 + (rng.next_u64() % 3000) as usize,
            }
        })
        .expect("streamed load");
        assert_eq!(
            bits(&logits(&mut model)),
            want,
            "{arch} {ty:?}: random chunks"
        );
    }
}

#[test]
fn matrices_split_across_buffers_give_the_same_logits() {
    let Some(gpu) = common::gpu() else { return };
    let file = tiny("llama", GgmlType::Q8_0, 5);
    let want = bits(&whole(&gpu, &file));
    let before = gpu.counters().buffers_created;
    let whole_file = streamed(&gpu, &file, u64::MAX, || 1 << 20).expect("unsplit load");
    let unsplit = gpu.counters().buffers_created - before;
    drop(whole_file);
    // 1000 bytes a part: the embedding (68-byte rows) in parts of 14 rows, the down projection
    // (102-byte rows) in parts of 9 (918 bytes, not a multiple of 4), gate and up together in
    // parts of a few rows each; fed in 7-byte chunks.
    let before = gpu.counters().buffers_created;
    let mut model = streamed(&gpu, &file, 1000, || 7).expect("split load");
    let split = gpu.counters().buffers_created - before;
    assert!(
        split > unsplit + 20,
        "parts of 1000 bytes should need many more buffers ({split} vs {unsplit})"
    );
    assert_eq!(bits(&logits(&mut model)), want, "split matrices");

    // A part limit below one row is refused with the limit.
    let err = streamed(&gpu, &file, 60, || 4096).unwrap_err().to_string();
    assert!(
        err.contains("row of a weight matrix") && err.contains("60"),
        "{err}"
    );
}

#[test]
fn a_truncated_file_names_the_missing_tensor() {
    let Some(gpu) = common::gpu() else { return };
    let file = tiny("llama", GgmlType::Q8_0, 5);
    let cfg = Config::from_gguf(&file).unwrap();
    let bytes = file.bytes();
    for name in [
        "blk.1.attn_k.weight",
        "blk.0.ffn_norm.weight",
        "token_embd.weight",
    ] {
        let t = file.tensor(name).unwrap();
        // Cut in the middle of the tensor, and right at its start.
        for cut in [t.offset + t.n_bytes / 2, t.offset] {
            let mut loader =
                GpuLoader::new(&gpu, file.header(), &cfg, CAPACITY, attn(&gpu, &cfg)).unwrap();
            for chunk in bytes[..cut as usize].chunks(777) {
                loader.write(chunk).unwrap();
            }
            let err = loader.finish().unwrap_err().to_string();
            assert!(
                err.contains(&format!("`{name}`")) && err.contains("truncated"),
                "cut at {cut} in {name}: {err}"
            );
        }
    }
}

#[test]
fn bytes_past_the_end_are_refused() {
    let Some(gpu) = common::gpu() else { return };
    let file = tiny("llama", GgmlType::Q8_0, 5);
    let cfg = Config::from_gguf(&file).unwrap();
    let bytes = file.bytes();
    assert_eq!(file.header().data_end(), bytes.len() as u64);
    let mut loader = GpuLoader::new(&gpu, file.header(), &cfg, CAPACITY, attn(&gpu, &cfg)).unwrap();
    loader.write(bytes).unwrap();
    let err = loader.write(&[0]).unwrap_err().to_string();
    assert!(err.contains("longer than its header says"), "{err}");
    // In one chunk too.
    let mut longer = bytes.to_vec();
    longer.extend_from_slice(&[0; 5]);
    let mut loader = GpuLoader::new(&gpu, file.header(), &cfg, CAPACITY, attn(&gpu, &cfg)).unwrap();
    let err = loader.write(&longer).unwrap_err().to_string();
    assert!(err.contains("longer than its header says"), "{err}");
}
