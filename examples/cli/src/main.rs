//! `kiln`: generate text, tokenize, and benchmark with a GGUF model.
//!
//! ```text
//! kiln generate --model PATH --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K]
//!               [--top-p P] [--repeat-penalty R] [--seed S] [--backend gpu|cpu|auto]
//!               [--threads N] [--context N] [--decode-batch N] [--chat] [--json]
//! kiln tokenize --model PATH --text TEXT [--json]
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
  kiln generate --model PATH --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K]
                [--top-p P] [--repeat-penalty R] [--seed S] [--backend gpu|cpu|auto]
                [--threads N] [--context N] [--decode-batch N] [--chat] [--json]
  kiln tokenize --model PATH --text TEXT [--json]
  kiln bench    --model PATH [--backend gpu|cpu|auto] [--threads N] [--prompt-tokens P]
                [--gen-tokens G] [--reps R] [--decode-batch N] [--json]
  kiln synth    --header PREFIX.gguf --out OUT.gguf [--seed S]   (random weights, real layout)";

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
    let prompt = args.required("prompt")?;
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
    let ids = if args.flag("chat") {
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
