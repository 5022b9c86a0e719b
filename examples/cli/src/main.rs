//! `kiln`: generate text, tokenize, and benchmark with a GGUF model.
//!
//! ```text
//! kiln generate --model PATH (--prompt TEXT | --ids N,N,...) [--max-tokens N] [--temperature T]
//!               [--top-k K] [--top-p P] [--repeat-penalty R] [--seed S] [--backend gpu|cpu|auto]
//!               [--threads N] [--context N] [--decode-batch N] [--chat] [--json]
//! kiln tokenize --model PATH --text TEXT [--json]
//! kiln logits   --model PATH --ids N,N,... [--positions P,P,...] [--steps] [--top K]
//!               [--pick N,N,...] [--backend gpu|cpu|auto] [--json]
//! kiln bench    --model PATH [--backend gpu|cpu|auto] [--threads N] [--prompt-tokens P]
//!               [--gen-tokens G] [--reps R] [--decode-batch N] [--json]
//! ```

mod args;
mod bench;
mod synth;

use std::io::Write as _;
use std::ops::ControlFlow;
use std::process::ExitCode;
use std::time::Instant;

use args::Args;
use kiln::generate::{GenerateOptions, LoadOptions, Model};
use kiln::tokenizer::{Message, Tokenizer};

const USAGE: &str = "usage:
  kiln generate --model PATH (--prompt TEXT | --ids N,N,...) [--max-tokens N] [--temperature T]
                [--top-k K] [--top-p P] [--repeat-penalty R] [--seed S] [--backend gpu|cpu|auto]
                [--threads N] [--context N] [--decode-batch N] [--chat] [--json]
  kiln tokenize --model PATH --text TEXT [--json]
  kiln logits   --model PATH --ids N,N,... [--positions P,P,...] [--steps] [--top K]
                [--pick N,N,...] [--backend gpu|cpu|auto] [--json]
  kiln bench    --model PATH [--backend gpu|cpu|auto] [--threads N] [--prompt-tokens P]
                [--gen-tokens G] [--reps R] [--decode-batch N] [--json]
  kiln synth    (--header PREFIX.gguf | --layout LAYOUT.json) --out OUT.gguf [--seed S] [--gain G]
                (random weights in a real layout; `--header REAL.gguf --layout-out L.json`
                writes a layout)";

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let Some(command) = argv.next() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let args = match Args::parse(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kiln: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match command.as_str() {
        "generate" => generate(&args),
        "tokenize" => tokenize(&args),
        "logits" => logits(&args),
        "bench" => bench::run(&args),
        "synth" => synth::run(&args),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the model named by `--model` with a progress bar on stderr.
pub(crate) fn load(args: &Args) -> Result<(Model, f64), String> {
    let path = args.required("model")?;
    if !std::path::Path::new(&path).exists() {
        return Err(format!(
            "model file `{path}` does not exist; scripts/install-models.sh installs the default \
             model into models/"
        ));
    }
    let mut opts = LoadOptions::default();
    if let Some(b) = args.get("backend") {
        opts.backend = b.parse().map_err(|e: kiln::Error| e.to_string())?;
    }
    opts.threads = args.parse_or("threads", 0)?;
    opts.context = args.parse_or("context", opts.context)?;
    opts.decode_batch = args.parse_or("decode-batch", opts.decode_batch)?;
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
    let model = Model::load(&path, &opts, &mut progress).map_err(|e| e.to_string())?;
    eprint!("\r{:60}\r", "");
    if !args.flag("json") {
        eprintln!("backend: {}", model.backend_reason());
    }
    Ok((model, start.elapsed().as_secs_f64() * 1000.0))
}

fn generate(args: &Args) -> Result<(), String> {
    // A prompt as text, or as token ids (`--ids`: no tokenizer in between).
    let given_ids: Option<Vec<u32>> = args.list("ids")?;
    let prompt = match (&given_ids, args.get("prompt")) {
        (Some(_), None) => String::new(),
        (None, Some(p)) => p,
        _ => return Err("give one of `--prompt TEXT` or `--ids N,N,...`".into()),
    };
    let json = args.flag("json");
    let (mut model, _load_ms) = load(args)?;
    let defaults = GenerateOptions::default();
    let opts = GenerateOptions {
        max_tokens: args.parse_or("max-tokens", defaults.max_tokens)?,
        temperature: args.parse_or("temperature", defaults.temperature)?,
        top_k: args.parse_or("top-k", defaults.top_k)?,
        top_p: args.parse_or("top-p", defaults.top_p)?,
        repetition_penalty: args.parse_or("repeat-penalty", defaults.repetition_penalty)?,
        seed: args.parse_or("seed", defaults.seed)?,
        ..defaults
    };
    let ids = if let Some(ids) = given_ids {
        ids
    } else if args.flag("chat") {
        let messages = [Message {
            role: "user".into(),
            content: prompt.clone(),
        }];
        model.encode_chat(&messages).map_err(|e| e.to_string())?
    } else {
        model.encode_prompt(&prompt)
    };
    let mut out = std::io::stdout().lock();
    if !json && !args.flag("chat") {
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
/// top `K` (id, logit) pairs plus the logits of picked ids.
fn logits(args: &Args) -> Result<(), String> {
    let ids: Vec<u32> = args
        .list("ids")?
        .ok_or("`--ids N,N,...` is required (token ids)")?;
    let positions: Vec<usize> = args
        .list("positions")?
        .unwrap_or_else(|| (0..ids.len()).collect());
    let steps = args.flag("steps");
    let top: Option<usize> = args
        .get("top")
        .map(|v| v.parse())
        .transpose()
        .map_err(|_| "`--top K`: K must be a count".to_string())?;
    let pick: Vec<u32> = args.list("pick")?.unwrap_or_default();
    let (mut model, _) = load(args)?;
    let all = model
        .logits_at(&ids, &positions, steps)
        .map_err(|e| e.to_string())?;
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
    if args.flag("json") {
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

fn tokenize(args: &Args) -> Result<(), String> {
    let path = args.required("model")?;
    let text = args.required("text")?;
    let file = kiln::gguf::GgufFile::open(&path).map_err(|e| e.to_string())?;
    let tok = Tokenizer::from_gguf(&file).map_err(|e| e.to_string())?;
    let ids = tok.encode(&text, true, true);
    if args.flag("json") {
        println!("{}", serde_json::json!({ "ids": ids }));
    } else {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        println!("{}", list.join(" "));
    }
    Ok(())
}
