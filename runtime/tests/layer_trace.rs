//! Tracing a prompt's intermediate activations (`kiln logits --trace`, scripts/layer_compare.py):
//! the CPU trace has every op of every layer under llama.cpp's names, leaves the logits as they
//! are, and its tensors are the ones the forward pass adds up; the GPU trace agrees with it.

mod common;

use common::tiny::{VOCAB, tiny};
use kiln::gguf::GgmlType;
use kiln::model::cpu::CpuModel;
use kiln::model::gpu::GpuModel;
use kiln::model::{Config, Traced};

/// 40 tokens: two CPU chunks (32 + 8), past Gemma's window of 4.
fn prompt() -> Vec<u32> {
    (0..40).map(|i| (i * 37 + 5) % VOCAB as u32).collect()
}

fn cpu(arch: &str) -> (Config, CpuModel) {
    let file = tiny(arch, GgmlType::Q8_0, 7);
    let cfg = Config::from_gguf(&file).expect("config");
    let m = CpuModel::load(file, &cfg, 64, 1, &mut |_, _| {}).expect("cpu load");
    (cfg, m)
}

fn get<'a>(trace: &'a [Traced], name: &str) -> &'a Traced {
    trace
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no `{name}` in the trace"))
}

/// ||a - b|| / ||b||.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        num += (f64::from(x) - f64::from(y)).powi(2);
        den += f64::from(y).powi(2);
    }
    (num / den).sqrt()
}

fn cpu_trace(arch: &str) {
    let (cfg, mut m) = cpu(arch);
    let ids = prompt();
    let plain = m.step(&ids, 0).expect("step").to_vec();
    m.set_trace(true);
    let traced = m.step(&ids, 0).expect("traced step").to_vec();
    let trace = m.take_trace();
    assert_eq!(plain, traced, "{arch}: tracing changed the logits");
    m.set_trace(false);
    m.step(&ids, 0).expect("step");
    assert!(
        m.take_trace().is_empty(),
        "{arch}: recorded with tracing off"
    );

    let gemma = arch == "gemma3";
    let (n, d, qd) = (ids.len(), cfg.d_model as usize, cfg.q_dim() as usize);
    let mut names = Vec::new();
    for il in 0..cfg.n_layer {
        for op in [
            "attn_norm",
            "kqv_out",
            "attn_post_norm",
            "sa_out",
            "ffn_norm",
            "ffn_out",
            "ffn_post_norm",
            "l_out",
        ] {
            if gemma || !op.ends_with("post_norm") {
                names.push(format!("{op}-{il}"));
            }
        }
    }
    names.push("result_norm".into());
    let got: Vec<&str> = trace.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(got, names, "{arch}: trace names");
    for t in &trace {
        let width = if t.name.starts_with("kqv_out") { qd } else { d };
        assert_eq!((t.n_tok, t.width), (n, width), "{arch}: {} shape", t.name);
        assert_eq!(t.data.len(), n * width, "{arch}: {} data", t.name);
        assert!(t.data.iter().all(|v| v.is_finite()), "{arch}: {}", t.name);
    }
    // The residual stream is the sum of the traced block outputs, bit for bit.
    let (attn_out, ffn_out) = if gemma {
        ("attn_post_norm", "ffn_post_norm")
    } else {
        ("kqv_out", "ffn_out")
    };
    for il in 0..cfg.n_layer as usize {
        let sa = get(&trace, &format!("sa_out-{il}"));
        let f = get(&trace, &format!("{ffn_out}-{il}"));
        let l = get(&trace, &format!("l_out-{il}"));
        let sum: Vec<f32> = sa.data.iter().zip(&f.data).map(|(a, b)| a + b).collect();
        assert_eq!(sum, l.data, "{arch}: l_out-{il} != sa_out + {ffn_out}");
        if il > 0 && gemma {
            let prev = get(&trace, &format!("l_out-{}", il - 1));
            let a = get(&trace, &format!("{attn_out}-{il}"));
            let sum: Vec<f32> = prev.data.iter().zip(&a.data).map(|(x, y)| x + y).collect();
            assert_eq!(sum, sa.data, "{arch}: sa_out-{il} != l_out + {attn_out}");
        }
    }
    // result_norm is the last residual stream RMS-normed: row by row proportional to it.
    let last = get(&trace, &format!("l_out-{}", cfg.n_layer - 1));
    let normed = get(&trace, "result_norm");
    for (x, y) in last.data.chunks(d).zip(normed.data.chunks(d)) {
        let rms = (x.iter().map(|v| v * v).sum::<f32>() / d as f32).sqrt();
        let unit: Vec<f32> = x.iter().map(|v| v / rms).collect();
        // The tiny models' output norm weights are 1 + 0.2 * [-1, 1).
        for (u, v) in unit.iter().zip(y) {
            assert!(
                (v - u).abs() <= 0.2 * u.abs() + 1e-3,
                "{arch}: result_norm {v} for a normed {u}"
            );
        }
    }
}

#[test]
fn cpu_trace_names_every_op_and_leaves_the_logits() {
    cpu_trace("llama");
    cpu_trace("gemma3");
}

#[test]
fn gpu_trace_agrees_with_the_cpu_trace() {
    let Some(gpu) = common::gpu() else { return };
    for arch in ["llama", "gemma3"] {
        let (cfg, mut c) = cpu(arch);
        let file = tiny(arch, GgmlType::Q8_0, 7);
        let mut g = GpuModel::load(&gpu, &file, &cfg, 64, &mut |_, _| {}).expect("gpu load");
        let ids = prompt();
        c.set_trace(true);
        c.step(&ids, 0).expect("cpu step");
        let want = c.take_trace();
        let got = pollster::block_on(g.trace_prompt(&ids)).expect("gpu trace");
        let mut names = Vec::new();
        for il in 0..cfg.n_layer {
            for op in ["kqv_out", "sa_out", "ffn_out", "l_out"] {
                names.push(format!("{op}-{il}"));
            }
        }
        names.push("result_norm".into());
        let mut got_names: Vec<&str> = got.iter().map(|t| t.name.as_str()).collect();
        let mut sorted = names.clone();
        got_names.sort_unstable();
        sorted.sort_unstable();
        assert_eq!(got_names, sorted, "{arch}: GPU trace names");
        for name in &names {
            let (a, b) = (get(&got, name), get(&want, name));
            assert_eq!(
                (a.n_tok, a.width),
                (b.n_tok, b.width),
                "{arch}: {name} shape"
            );
            // The same int8 arithmetic; an ulp of GPU division can flip an int8 rounding
            // (see tiny_models.rs), which moves these random models' activations by up to 2%.
            let e = rel(&a.data, &b.data);
            eprintln!("{arch} {name}: GPU vs CPU relative RMS {e:.2e}");
            assert!(e <= 0.03, "{arch}: {name} GPU vs CPU relative RMS {e}");
        }
    }
}
