//! The command line (clap's derive API): the subcommands, their options, defaults and ranges.
//! Values are checked here, when the arguments are parsed, so that a bad one is a usage error
//! (exit code 2, naming the option) before any model is loaded.

use std::path::PathBuf;

use clap::builder::RangedU64ValueParser;
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum, value_parser};
use kiln::generate::{Backend, GenerateOptions, LoadOptions};
use kiln::model::gpu::MAX_DECODE_BATCH;

#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version,
    about = "Generate text, tokenize, and benchmark with a GGUF model",
    after_help = "`kiln <COMMAND> --help` lists a command's options.",
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a continuation of a prompt, streamed to stdout
    Generate(GenerateArgs),
    /// Print the token ids of a text
    Tokenize(TokenizeArgs),
    /// Print the logits after prefixes of a token-id sequence
    Logits(LogitsArgs),
    /// Measure load time, time to first token, prefill and decode speed, peak memory
    Bench(BenchArgs),
    /// Write a model with a real GGUF's layout and seeded random weights, or the layout alone
    Synth(SynthArgs),
    /// Measure the GPU variants on this device, check them against the CPU path, save a profile
    Tune(TuneArgs),
}

/// Where the model runs: `--backend` (the library's [`Backend`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    Gpu,
    Cpu,
    Auto,
}

impl From<BackendArg> for Backend {
    fn from(b: BackendArg) -> Backend {
        match b {
            BackendArg::Gpu => Backend::Gpu,
            BackendArg::Cpu => Backend::Cpu,
            BackendArg::Auto => Backend::Auto,
        }
    }
}

/// How the model is loaded (`generate`, `logits`, `bench`).
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The GGUF model file
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// Where the model runs (auto: a hardware GPU, else the CPU) [default: $KILN_DEVICE or auto]
    #[arg(long, value_enum, ignore_case = true)]
    pub backend: Option<BackendArg>,
    /// CPU threads (0: all cores)
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub threads: usize,
    /// KV cache positions, prompt plus output (16 or more; capped at the model's training context)
    #[arg(long, value_name = "N", default_value_t = LoadOptions::default().context,
          value_parser = value_parser!(u32).range(16..),
          allow_negative_numbers = true)]
    pub context: u32,
    /// GPU decode steps per submit, 1 to 16 [default: $KILN_DECODE_BATCH or 4]
    #[arg(long, value_name = "N",
          value_parser = value_parser!(u32).range(1..=i64::from(MAX_DECODE_BATCH)),
          allow_negative_numbers = true)]
    pub decode_batch: Option<u32>,
    /// The most GPU memory the model may take (weights, KV cache, scratch), e.g. 1GiB: over it
    /// `--backend gpu` refuses and auto takes the CPU path [default: $KILN_GPU_MEMORY or none]
    #[arg(long, value_name = "SIZE", value_parser = byte_size)]
    pub gpu_memory: Option<u64>,
    /// Ask the GPU for buffers and bindings of at most this size, e.g. 256MiB (to run as a
    /// device with smaller limits) [default: $KILN_MAX_BUFFER or the adapter's]
    #[arg(long, value_name = "SIZE", value_parser = byte_size)]
    pub max_buffer: Option<u64>,
    /// A tuned profile to use (a file `kiln tune` wrote), or `off` for the built-in choices
    /// [default: $KILN_PROFILE, else the one `kiln tune` saved for this GPU, if any]
    #[arg(long, value_name = "PATH|off")]
    pub profile: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("input").required(true).args(["prompt", "ids"])))]
pub struct GenerateArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// The prompt as text
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub prompt: Option<String>,
    /// The prompt as comma-separated token ids (no tokenizer in between)
    #[arg(long, value_name = "N,N,...", value_delimiter = ',', value_parser = token_id,
          allow_negative_numbers = true)]
    pub ids: Option<Vec<u32>>,
    /// Tokens to generate at most (at least 1)
    #[arg(long, value_name = "N", default_value_t = GenerateOptions::default().max_tokens,
          value_parser = value_parser!(u32).range(1..),
          allow_negative_numbers = true)]
    pub max_tokens: u32,
    /// Sampling temperature (0 or more; 0 is greedy)
    #[arg(long, value_name = "T", default_value_t = GenerateOptions::default().temperature,
          value_parser = non_negative, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Sample from the K most likely tokens (0 keeps all)
    #[arg(long, value_name = "K", default_value_t = GenerateOptions::default().top_k,
          allow_negative_numbers = true)]
    pub top_k: usize,
    /// Sample from the smallest set of tokens whose probabilities add up to P (0 to 1; 1 keeps all)
    #[arg(long, value_name = "P", default_value_t = GenerateOptions::default().top_p,
          value_parser = unit_interval, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Penalty on recently generated tokens (more than 0; 1 is off)
    #[arg(long, value_name = "R", default_value_t = GenerateOptions::default().repetition_penalty,
          value_parser = positive, allow_negative_numbers = true)]
    pub repeat_penalty: f32,
    /// Seed of the sampler
    #[arg(long, value_name = "S", default_value_t = GenerateOptions::default().seed,
          allow_negative_numbers = true)]
    pub seed: u32,
    /// Wrap the prompt in the model's chat template
    #[arg(long)]
    pub chat: bool,
    /// Print one JSON object instead of the text and a summary
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// The GGUF model file (its tokenizer)
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// The text to tokenize
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub text: String,
    /// Print `{"ids": [...]}` instead of space-separated ids
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogitsArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Comma-separated token ids
    #[arg(long, value_name = "N,N,...", required = true, value_delimiter = ',',
          value_parser = token_id,
          allow_negative_numbers = true)]
    pub ids: Vec<u32>,
    /// Comma-separated positions to print logits at, each below the id count [default: all]
    #[arg(long, value_name = "P,P,...", value_delimiter = ',', value_parser = position,
          allow_negative_numbers = true)]
    pub positions: Option<Vec<usize>>,
    /// Feed the ids one decode step at a time instead of each prefix as one prompt
    #[arg(long)]
    pub steps: bool,
    /// Print the K largest logits per position (at least 1) [default: all with --json, else 5]
    #[arg(long, value_name = "K", value_parser = RangedU64ValueParser::<usize>::new().range(1..),
          allow_negative_numbers = true)]
    pub top: Option<usize>,
    /// Comma-separated token ids whose logits are printed too (--json)
    #[arg(long, value_name = "N,N,...", value_delimiter = ',', value_parser = token_id,
          allow_negative_numbers = true)]
    pub pick: Vec<u32>,
    /// Also run all the ids as one prompt and write each layer's intermediate activations to
    /// FILE, as JSON {name: {"shape": [tokens, width], "data": [row-major floats]}} with
    /// llama.cpp's names (l_out-3, ffn_out-3, ...; see scripts/layer_compare.py)
    #[arg(long, value_name = "FILE", conflicts_with = "steps")]
    pub trace: Option<PathBuf>,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Prompt length in tokens (at least 1)
    #[arg(long, value_name = "P", default_value_t = 64,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..),
          allow_negative_numbers = true)]
    pub prompt_tokens: usize,
    /// Tokens to generate per repetition (at least 1)
    #[arg(long, value_name = "G", default_value_t = 64,
          value_parser = value_parser!(u32).range(1..),
          allow_negative_numbers = true)]
    pub gen_tokens: u32,
    /// Measured repetitions after one warm-up (at least 1)
    #[arg(long, value_name = "R", default_value_t = 5,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..),
          allow_negative_numbers = true)]
    pub reps: usize,
    /// Print one JSON object (with the last repetition's tokens)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TuneArgs {
    /// Tune for this model's shapes and model-wide choices (without: a standard shape set)
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Stop measuring after this many seconds (what is left keeps its default)
    #[arg(long, value_name = "N", default_value_t = 60,
          value_parser = value_parser!(u64).range(1..),
          allow_negative_numbers = true)]
    pub budget_seconds: u64,
    /// Where to write the profile [default: the adapter's file in the cache folder's profiles/,
    /// where kiln finds it]
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Timed runs per candidate (after one that compiles and checks it)
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = value_parser!(u32).range(1..=100),
          allow_negative_numbers = true)]
    pub runs: u32,
    /// Measure everything again instead of keeping what the profile at --out already holds
    #[arg(long)]
    pub again: bool,
    /// Print one JSON object (the profile's path and the profile) instead of the table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["header", "layout"])))]
pub struct SynthArgs {
    /// A real GGUF, or a prefix of one that holds its header (`head -c 8M REAL.gguf`)
    #[arg(long, value_name = "PREFIX.gguf")]
    pub header: Option<PathBuf>,
    /// A layout written by --layout-out (the tokens become <0>, <1>, ...)
    #[arg(long, value_name = "LAYOUT.json")]
    pub layout: Option<PathBuf>,
    /// The model file to write
    #[arg(long, value_name = "OUT.gguf", required_unless_present = "layout_out")]
    pub out: Option<PathBuf>,
    /// Write the layout (metadata, tensor names, types and shapes; a few KB) instead of a model
    #[arg(long, value_name = "LAYOUT.json")]
    pub layout_out: Option<PathBuf>,
    /// Seed of the random weights
    #[arg(
        long,
        value_name = "S",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    pub seed: u64,
    /// Multiplies the weight blocks' scales (more than 0; 1 gives small weights)
    #[arg(long, value_name = "G", default_value_t = 1.0, value_parser = positive,
          allow_negative_numbers = true)]
    pub gain: f32,
}

/// One element of a token-id list.
fn token_id(s: &str) -> Result<u32, String> {
    s.trim().parse().map_err(|_| {
        format!(
            "`{s}` is not a token id (a whole number from 0 to {})",
            u32::MAX
        )
    })
}

/// A byte count such as `1GiB`, `512MiB` or `1048576`.
fn byte_size(s: &str) -> Result<u64, String> {
    kiln::gpu::context::parse_bytes(s)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("`{s}` is not a size (such as 1GiB, 512MiB or 1048576)"))
}

/// One element of a position list.
fn position(s: &str) -> Result<usize, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a position (a whole number from 0)"))
}

/// A finite number.
fn finite(s: &str) -> Result<f32, String> {
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("`{s}` is not finite"))
    }
}

/// A finite number, 0 or more.
fn non_negative(s: &str) -> Result<f32, String> {
    let v = finite(s)?;
    if v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("`{s}` is below 0"))
    }
}

/// A finite number above 0.
fn positive(s: &str) -> Result<f32, String> {
    let v = finite(s)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err(format!("`{s}` is not above 0"))
    }
}

/// A number from 0 to 1.
fn unit_interval(s: &str) -> Result<f32, String> {
    let v = finite(s)?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("`{s}` is not between 0 and 1"))
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;
    use clap::error::ErrorKind;

    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("kiln").chain(args.iter().copied())).map(|c| c.command)
    }

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_the_library_defaults() {
        let Ok(Command::Generate(g)) = parse(&["generate", "--model", "m", "--prompt", "hi"])
        else {
            panic!("generate did not parse");
        };
        let d = GenerateOptions::default();
        assert_eq!(g.max_tokens, d.max_tokens);
        assert_eq!(g.temperature, d.temperature);
        assert_eq!(g.top_k, d.top_k);
        assert_eq!(g.top_p, d.top_p);
        assert_eq!(g.repeat_penalty, d.repetition_penalty);
        assert_eq!(g.seed, d.seed);
        assert_eq!(g.load.context, LoadOptions::default().context);
        assert_eq!((g.load.backend, g.load.decode_batch), (None, None));
        assert_eq!(g.prompt.as_deref(), Some("hi"));
    }

    #[test]
    fn lists_and_equals_syntax() {
        let Ok(Command::Logits(l)) = parse(&[
            "logits",
            "--model=m",
            "--ids",
            "1, 2,3",
            "--positions=0,2",
            "--backend",
            "CPU",
        ]) else {
            panic!("logits did not parse");
        };
        assert_eq!(l.ids, [1, 2, 3]);
        assert_eq!(l.positions, Some(vec![0, 2]));
        assert!(l.pick.is_empty());
        assert_eq!(l.load.backend, Some(BackendArg::Cpu));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        let generate = ["generate", "--model", "m", "--prompt", "hi"];
        for (extra, kind) in [
            (&["--temperature", "-1"][..], ErrorKind::ValueValidation),
            (&["--temperature", "inf"], ErrorKind::ValueValidation),
            (&["--top-p", "1.5"], ErrorKind::ValueValidation),
            (&["--repeat-penalty", "0"], ErrorKind::ValueValidation),
            (&["--max-tokens", "0"], ErrorKind::ValueValidation),
            (&["--decode-batch", "17"], ErrorKind::ValueValidation),
            (&["--context", "15"], ErrorKind::ValueValidation),
            (&["--ids", "1"], ErrorKind::ArgumentConflict),
            (&["--temprature", "1"], ErrorKind::UnknownArgument),
        ] {
            let args: Vec<&str> = generate.iter().chain(extra).copied().collect();
            let err = parse(&args).expect_err(&format!("{extra:?} was accepted"));
            assert_eq!(err.kind(), kind, "{extra:?}: {err}");
        }
        let err = parse(&["synth", "--out", "o.gguf"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
        let err = parse(&["bench", "--model", "m", "--reps", "0"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
    }
}
