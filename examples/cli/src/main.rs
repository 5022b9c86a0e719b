//! `kiln`: generate text, tokenize, and benchmark with a GGUF model. The commands and their
//! options are in `cli.rs`; `kiln <COMMAND> --help` lists them.

mod bench;
mod cli;
mod synth;
mod tune;

use std::io::Write as _;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser as _;
use cli::{Cli, Command, GenerateArgs, LoadArgs, LogitsArgs, TokenizeArgs};
use kiln::generate::{GenerateOptions, LoadOptions, Model, env_overrides};
use kiln::tokenizer::{Message, Tokenizer};
use kiln::tune::ProfileSource;

fn main() -> ExitCode {
    // Usage errors (an unknown option, a value out of range) exit with code 2 here.
    let result = match Cli::parse().command {
        Command::Generate(a) => generate(&a),
        Command::Tokenize(a) => tokenize(&a),
        Command::Logits(a) => logits(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Synth(a) => synth::run(&a),
        Command::Tune(a) => tune::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An error naming a missing model file and how to get the default one.
fn check_model(path: &Path) -> Result<(), String> {
    if path.exists() {
        Ok(())
    } else {
        Err(format!(
            "model file `{}` does not exist; scripts/install-models.sh installs the default \
             model into models/",
            path.display()
        ))
    }
}

/// Loads the model named by `--model` with a progress bar on stderr (and, unless `json`, the
/// reason for its backend).
pub(crate) fn load(args: &LoadArgs, json: bool) -> Result<(Model, f64), String> {
    check_model(&args.model)?;
    let mut opts = LoadOptions::from_env().map_err(|e| e.to_string())?;
    if let Some(b) = args.backend {
        opts.backend = b.into();
    }
    opts.threads = args.threads;
    opts.context = args.context;
    if args.decode_batch.is_some() {
        opts.decode_batch = args.decode_batch;
    }
    if let Some(bytes) = args.gpu_memory {
        opts.gpu_memory = Some(bytes);
    }
    if let Some(bytes) = args.max_buffer {
        opts.gpu.max_buffer_bytes = Some(bytes);
    }
    match &args.profile {
        Some(profile) => opts.gpu.profiles = profile_source(profile)?,
        // KILN_PROFILE=off leaves the search off.
        None if opts.gpu.profiles.tuned => opts.gpu.profiles.dirs.push(shipped_profiles()),
        None => {}
    }
    let start = Instant::now();
    let mut last = usize::MAX;
    let mut progress = |done: usize, total: usize| {
        let pct = done * 100 / total.max(1);
        if pct != last {
            last = pct;
            let bar = "#".repeat(pct / 4);
            eprint!("\rloading [{bar:<25}] {pct:3}%");
        }
    };
    let model = Model::load(&args.model, &opts, &mut progress).map_err(|e| e.to_string())?;
    eprint!("\r{:60}\r", "");
    if !json {
        eprintln!("backend: {}", model.backend_reason());
    }
    Ok((model, start.elapsed().as_secs_f64() * 1000.0))
}

/// The verified profiles this build of the CLI ships (the repository's `profiles/`), searched
/// after the user's own tuned ones.
fn shipped_profiles() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../profiles")
}

/// Where `--profile` says to look for a tuned profile: `off`, or a file.
pub(crate) fn profile_source(arg: &Path) -> Result<ProfileSource, String> {
    if arg == Path::new("off") {
        return Ok(ProfileSource::off());
    }
    let text =
        std::fs::read_to_string(arg).map_err(|e| format!("--profile {}: {e}", arg.display()))?;
    let mut source = ProfileSource::default();
    source.texts.push((arg.display().to_string(), text));
    Ok(source)
}

/// What `--json` reports as overridden: the `KILN_*` variables that are set and the load
/// options given on the command line.
pub(crate) fn overrides(args: &LoadArgs) -> serde_json::Value {
    let mut all: serde_json::Map<String, serde_json::Value> = env_overrides()
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect();
    let mut flag = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            all.insert(format!("--{name}"), v.into());
        }
    };
    flag(
        "backend",
        args.backend.map(|b| format!("{b:?}").to_lowercase()),
    );
    flag(
        "threads",
        (args.threads != 0).then(|| args.threads.to_string()),
    );
    flag(
        "context",
        (args.context != LoadOptions::default().context).then(|| args.context.to_string()),
    );
    flag("decode-batch", args.decode_batch.map(|n| n.to_string()));
    flag("gpu-memory", args.gpu_memory.map(|n| n.to_string()));
    flag("max-buffer", args.max_buffer.map(|n| n.to_string()));
    flag(
        "profile",
        args.profile.as_ref().map(|p| p.display().to_string()),
    );
    all.into()
}

fn generate(args: &GenerateArgs) -> Result<(), String> {
    // A prompt as text, or as token ids (`--ids`: no tokenizer in between); clap lets exactly
    // one through.
    let prompt = args.prompt.clone().unwrap_or_default();
    let json = args.json;
    let (mut model, _load_ms) = load(&args.load, json)?;
    let opts = GenerateOptions {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        repetition_penalty: args.repeat_penalty,
        seed: args.seed,
        ..GenerateOptions::default()
    };
    let ids = if let Some(ids) = args.ids.clone() {
        ids
    } else if args.chat {
        let messages = [Message {
            role: "user".into(),
            content: prompt.clone(),
        }];
        model.encode_chat(&messages).map_err(|e| e.to_string())?
    } else {
        model.encode_prompt(&prompt)
    };
    let mut out = std::io::stdout().lock();
    if !json && !args.chat {
        let _ = write!(out, "{prompt}");
        let _ = out.flush();
    }
    let generation = model
        .generate(&ids, &opts, |_, piece| {
            if !json {
                let _ = write!(out, "{piece}");
                let _ = out.flush();
            }
            ControlFlow::Continue(())
        })
        .map_err(|e| e.to_string())?;
    for w in model.take_warnings() {
        eprintln!("kiln: warning: {w}");
    }
    let s = generation.stats;
    if json {
        let v = serde_json::json!({
            "backend": model.backend_name(),
            "backend_reason": model.backend_reason(),
            "adapter": model.adapter(),
            "prompt_tokens": ids,
            "tokens": generation.tokens,
            "text": generation.text,
            "ttft_ms": s.ttft.as_secs_f64() * 1000.0,
            "prefill_tok_s": s.prefill_tok_s,
            "decode_tok_s": s.decode_tok_s,
            "peak_rss_mb": bench::peak_rss_mb(),
            "tuning": model.tuning_report(),
            "overrides": overrides(&args.load),
        });
        let _ = writeln!(out, "{v}");
    } else {
        let _ = writeln!(out);
        eprintln!(
            "[{} on {}] prompt {} tokens, generated {} ({:?}); time to first token {:.0} ms, \
             prefill {:.1} tok/s, decode {:.1} tok/s, peak RSS {:.0} MB",
            model.backend_name(),
            model.adapter(),
            s.prompt_tokens,
            s.generated_tokens,
            generation.stop,
            s.ttft.as_secs_f64() * 1000.0,
            s.prefill_tok_s,
            s.decode_tok_s,
            bench::peak_rss_mb(),
        );
    }
    Ok(())
}

/// `kiln logits`: the logits after each prefix of a token-id sequence, as full vectors or as the
/// top `K` (id, logit) pairs plus the logits of picked ids; with `--trace`, also the sequence's
/// intermediate activations as one prompt, to a JSON file.
fn logits(args: &LogitsArgs) -> Result<(), String> {
    let ids = &args.ids;
    let positions: Vec<usize> = args
        .positions
        .clone()
        .unwrap_or_else(|| (0..ids.len()).collect());
    let (steps, top, pick) = (args.steps, args.top, &args.pick);
    let (mut model, _) = load(&args.load, args.json)?;
    let all = model
        .logits_at(ids, &positions, steps)
        .map_err(|e| e.to_string())?;
    if let Some(path) = &args.trace {
        let trace = model.prompt_trace(ids).map_err(|e| e.to_string())?;
        let tensors: serde_json::Map<String, serde_json::Value> = trace
            .into_iter()
            .map(|t| {
                let v = serde_json::json!({ "shape": [t.n_tok, t.width], "data": t.data });
                (t.name, v)
            })
            .collect();
        let text = serde_json::Value::Object(tensors).to_string();
        std::fs::write(path, text).map_err(|e| format!("--trace {}: {e}", path.display()))?;
    }
    let best = |l: &[f32], k: usize| -> Vec<(u32, f32)> {
        let mut order: Vec<u32> = (0..l.len() as u32).collect();
        order.sort_by(|&a, &b| l[b as usize].total_cmp(&l[a as usize]).then(a.cmp(&b)));
        order.iter().take(k).map(|&i| (i, l[i as usize])).collect()
    };
    let picked: Vec<Vec<f32>> = all
        .iter()
        .map(|l| {
            pick.iter()
                .map(|&i| l.get(i as usize).copied().unwrap_or(f32::NAN))
                .collect()
        })
        .collect();
    if args.json {
        let mut v = serde_json::json!({
            "backend": model.backend_name(),
            "adapter": model.adapter(),
            "ids": ids,
            "positions": positions,
            "steps": steps,
            "pick": pick,
            "picked": picked,
        });
        match top {
            Some(k) => {
                let t: Vec<Vec<(u32, f32)>> = all.iter().map(|l| best(l, k)).collect();
                v["top"] = serde_json::json!(t);
            }
            None => v["logits"] = serde_json::json!(all),
        }
        println!("{v}");
    } else {
        for (p, l) in positions.iter().zip(&all) {
            let t: Vec<String> = best(l, top.unwrap_or(5))
                .iter()
                .map(|(i, v)| format!("{i}:{v:.4}"))
                .collect();
            println!("position {p}: {}", t.join(" "));
        }
    }
    Ok(())
}

fn tokenize(args: &TokenizeArgs) -> Result<(), String> {
    check_model(&args.model)?;
    let file = kiln::gguf::GgufFile::open(&args.model).map_err(|e| e.to_string())?;
    let tok = Tokenizer::from_gguf(&file).map_err(|e| e.to_string())?;
    let ids = tok.encode(&args.text, true, true);
    if args.json {
        println!("{}", serde_json::json!({ "ids": ids }));
    } else {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        println!("{}", list.join(" "));
    }
    Ok(())
}
