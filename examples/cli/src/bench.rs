//! `kiln bench`: load time, time to first token, prefill and decode speed (median and spread over
//! repetitions after a warm-up), peak RSS, and on the GPU the work counters per decoded token.
//! `--json` also gives the greedy tokens of the last repetition, so a driver can check that two
//! runtimes did the same work (bench/compare.py).

use std::ops::ControlFlow;

use kiln::generate::GenerateOptions;

use crate::cli::BenchArgs;

/// Peak resident set size of this process in MB (Linux: VmHWM, which counts the mapped weight
/// pages that were touched), 0 where unknown. Per process: run one runtime per process to compare.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Median and (min, max) of `v`.
fn summary(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let median = if s.is_empty() {
        0.0
    } else if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    (
        median,
        s.first().copied().unwrap_or(0.0),
        s.last().copied().unwrap_or(0.0),
    )
}

pub fn run(args: &BenchArgs) -> Result<(), String> {
    // clap has checked that the counts are at least 1.
    let (json, prompt_tokens, gen_tokens, reps) =
        (args.json, args.prompt_tokens, args.gen_tokens, args.reps);
    let (mut model, load_ms) = crate::load(&args.load, json)?;
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(prompt_tokens);
    let mut prompt = model.encode_prompt(&text);
    if prompt.len() < prompt_tokens {
        // A tokenizer that cannot spell the text (a synthesized model's `<0>`, `<1>`, ...):
        // a fixed id sequence instead.
        let vocab = model.config().vocab as usize;
        prompt = (0..prompt_tokens)
            .map(|i| ((i * 7919 + 13) % vocab) as u32)
            .collect();
    }
    prompt.truncate(prompt_tokens);
    let opts = GenerateOptions {
        max_tokens: gen_tokens,
        ignore_eog: true,
        ..GenerateOptions::default()
    };
    let decode_batch = model.decode_batch();
    let gpu = model.gpu().cloned();
    let (mut ttft, mut prefill, mut decode) = (Vec::new(), Vec::new(), Vec::new());
    let mut tokens = Vec::new();
    let mut run = |max_tokens: u32| {
        let opts = GenerateOptions {
            max_tokens,
            ..opts.clone()
        };
        let before = gpu.as_ref().map(|g| g.counters());
        let generation = model
            .generate(&prompt, &opts, |_, _| ControlFlow::Continue(()))
            .map_err(|e| e.to_string())?;
        let work = gpu.as_ref().zip(before).map(|(g, b)| g.counters() - b);
        Ok::<_, String>((generation, work))
    };
    // The GPU's work per decoded token: a generation minus its prompt's step alone (a batch of
    // decode steps is submitted before the first token arrives, so counting from the first
    // token would miss it).
    let mut per_token = None;
    if gpu.is_some() && gen_tokens > 1 {
        run(gen_tokens)?; // warm-up
        let (_, prompt_only) = run(1)?;
        let (_, all) = run(gen_tokens)?;
        if let (Some(p), Some(a)) = (prompt_only, all) {
            let d = a - p;
            let n = f64::from(gen_tokens - 1);
            per_token = Some(serde_json::json!({
                "dispatches": d.dispatches as f64 / n,
                "submits": d.submits as f64 / n,
                "waits": d.waits as f64 / n,
                "buffers_created": d.buffers_created as f64 / n,
                "pipelines_created": d.pipelines_created as f64 / n,
                "bind_groups_created": d.bind_groups_created as f64 / n,
                "bytes_read_back": d.bytes_read_back as f64 / n,
                "record_us": d.record_ns as f64 / n / 1000.0,
            }));
        }
    }
    for rep in 0..=reps {
        let (generation, _) = run(gen_tokens)?;
        if rep == 0 {
            continue; // warm-up
        }
        tokens = generation.tokens;
        let s = generation.stats;
        ttft.push(s.ttft.as_secs_f64() * 1000.0);
        prefill.push(s.prefill_tok_s);
        decode.push(s.decode_tok_s);
    }
    for w in model.take_warnings() {
        eprintln!("kiln: warning: {w}");
    }
    let (ttft_m, ttft_lo, ttft_hi) = summary(&ttft);
    let (pre_m, pre_lo, pre_hi) = summary(&prefill);
    let (dec_m, dec_lo, dec_hi) = summary(&decode);
    // The pool's real size (`--threads 0` or none means all cores); 0 on the GPU.
    let threads = model.cpu_threads().unwrap_or(0);
    if json {
        let v = serde_json::json!({
            "backend": model.backend_name(),
            "backend_reason": model.backend_reason(),
            "adapter": model.adapter(),
            "threads": threads,
            "decode_batch": decode_batch,
            "fused": model.fused(),
            "prompt_tokens": prompt.len(),
            "context": model.capacity(),
            "gen_tokens": gen_tokens,
            "reps": reps,
            "load_ms": load_ms,
            "ttft_ms": ttft_m,
            "ttft_ms_range": [ttft_lo, ttft_hi],
            "prefill_tok_s": pre_m,
            "prefill_tok_s_range": [pre_lo, pre_hi],
            "decode_tok_s": dec_m,
            "decode_tok_s_range": [dec_lo, dec_hi],
            "decode_tok_s_all": decode,
            "peak_rss_mb": peak_rss_mb(),
            "per_token": per_token,
            "tokens": tokens,
            "tuning": model.tuning_report(),
            "overrides": crate::overrides(&args.load),
        });
        println!("{v}");
    } else {
        println!(
            "{} on {} ({} threads): load {:.0} ms, ttft {:.1} ms, prefill {:.1} tok/s \
             [{:.1}..{:.1}], decode {:.1} tok/s [{:.1}..{:.1}] over {reps} reps, peak RSS {:.0} MB",
            model.backend_name(),
            model.adapter(),
            threads,
            load_ms,
            ttft_m,
            pre_m,
            pre_lo,
            pre_hi,
            dec_m,
            dec_lo,
            dec_hi,
            peak_rss_mb()
        );
        if let Some(p) = per_token {
            let plan = if model.fused() { "fused" } else { "unfused" };
            println!("per decoded token ({plan} GEMVs, {decode_batch} per submit): {p}");
        }
    }
    Ok(())
}
