//! Model-wide choices, measured end to end on a model (natively): whether decode steps fuse
//! their GEMVs, decode steps per submit, how prompt chunks multiply, and the fewest positions
//! per attention split. Each candidate runs a prompt and greedy decode steps; its logits after
//! them are checked against kiln's CPU path on the same tokens before it may win.

use kiln::clock::Instant;
use kiln::gguf::GgufFile;
use kiln::gpu::Gpu;
use kiln::model::Config;
use kiln::model::cpu::CpuModel;
use kiln::model::gpu::{AttnOptions, Choice, DECODE_BATCH, GpuModel, StepOutput};
use kiln::ops::attention::{KvType, SPLIT_MIN_LEN};
use kiln::tune::{Entry, ModelOp, Profile, Timing, model_bucket};
use kiln::{Error, Result};

use crate::{Budget, Settings};

/// The largest logit difference from the CPU path a candidate may show, as a fraction of the
/// largest CPU logit's magnitude. The paths do the same int8 arithmetic, but WGSL lets a GPU's
/// division be off by 2.5 ulp, which can flip an activation's int8 rounding; over a sequence the
/// flips add up: SmolLM2-135M after 80 positions on lavapipe differs by 0.67 at most (2.5% of
/// the largest logit, 26.9; rms 0.19), random-weight models by up to 3%
/// (runtime/tests/tiny_models.rs). 10% leaves room for that and still fails a wrong kernel,
/// whose logits move by their whole spread. The best token must agree too, unless the CPU's
/// top two are within the tolerance.
pub const LOGIT_TOLERANCE: f32 = 0.1;

/// Positions of the model's cache while tuning: room for the attention-split prompt.
const CONTEXT: u32 = 600;

/// The prompt a split candidate runs: long enough that its decode steps split at every
/// candidate (a step splits where it sees twice the candidate's positions).
const LONG_PROMPT: u32 = 2 * SPLIT_MIN_LEN + 8;

/// The prompt the other candidates run.
const SHORT_PROMPT: u32 = 64;

/// A model loaded for tuning, with its CPU twin.
pub struct ModelBench {
    gpu: Gpu,
    file: GgufFile,
    cfg: Config,
    model: GpuModel,
    cpu: CpuModel,
}

impl std::fmt::Debug for ModelBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelBench")
            .field("arch", &self.cfg.arch)
            .finish_non_exhaustive()
    }
}

impl ModelBench {
    /// Loads `path` onto `gpu` and onto the CPU path.
    pub fn load(gpu: &Gpu, path: &std::path::Path) -> Result<ModelBench> {
        let file = GgufFile::open(path)?;
        let cfg = Config::from_gguf(&file)?;
        let context = CONTEXT.min(cfg.n_ctx_train.max(16));
        let model = GpuModel::load(gpu, &file, &cfg, context, &mut |_, _| {})?;
        let cpu = CpuModel::load(GgufFile::open(path)?, &cfg, context, 0, &mut |_, _| {})?;
        Ok(ModelBench {
            gpu: gpu.clone(),
            file,
            cfg,
            model,
            cpu,
        })
    }

    pub fn gpu_model(&self) -> &GpuModel {
        &self.model
    }

    /// A seeded prompt of `n` ids.
    fn prompt_ids(&self, n: u32) -> Vec<u32> {
        (0..n)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) % self.cfg.vocab)
            .collect()
    }

    /// Sets `op`'s candidate `value` up under `profile` (the winners so far): the model's
    /// choices, and for an attention split a model loaded again with it.
    fn configure(&mut self, op: ModelOp, value: &str, profile: &Profile) -> Result<()> {
        let mut trial = profile.clone();
        trial.put(Entry {
            op: op.name().into(),
            bucket: model_bucket(&self.cfg),
            shape: Vec::new(),
            default: String::new(),
            candidates: Vec::new(),
            winner: Some(value.into()),
        });
        let tuning = self.gpu.tuning().with_profile("tuner", trial);
        if op == ModelOp::AttnSplit {
            let attn = AttnOptions {
                split_min_len: tuning.attn_split(&self.cfg),
                ..AttnOptions::for_gpu(&self.gpu, &self.cfg, KvType::F16)
            };
            self.model = GpuModel::load_with(
                &self.gpu,
                &self.file,
                &self.cfg,
                self.model.capacity(),
                attn,
                &mut |_, _| {},
            )?;
        }
        self.model.set_tuning(tuning)
    }

    /// The prompt `op`'s candidates run: long enough for an attention split to split.
    fn prompt_len(&self, op: ModelOp) -> u32 {
        match op {
            ModelOp::AttnSplit => LONG_PROMPT,
            _ => SHORT_PROMPT,
        }
        .min(self.model.capacity() / 2)
    }

    /// Runs the prompt; returns its first greedy token and microseconds per prompt token.
    fn prompt(&mut self, n: u32) -> Result<(u32, f64)> {
        let prompt = self.prompt_ids(n);
        let start = Instant::now();
        match self.model.step(&prompt, 0, n, &Choice::Greedy)? {
            StepOutput::Token(first) => {
                Ok((first, start.elapsed().as_secs_f64() * 1e6 / f64::from(n)))
            }
            StepOutput::Logits(_) => Err(Error::Readback("the prompt returned logits".into())),
        }
    }

    /// Decodes greedily from position `pos` (fed `first`) for `settings.decode_tokens` tokens
    /// in the model's batches; returns the tokens and microseconds per token.
    fn decode(&mut self, first: u32, pos: u32, settings: &Settings) -> Result<(Vec<u32>, f64)> {
        let n = settings
            .decode_tokens
            .min(self.model.capacity() - pos - 2)
            .max(2);
        let start = Instant::now();
        let StepOutput::Token(next) = self.model.step(&[first], pos, 1, &Choice::Greedy)? else {
            return Err(Error::Readback("a decode step returned logits".into()));
        };
        let mut tokens = vec![first, next];
        let mut at = pos + 1;
        while (tokens.len() as u32) < n {
            let k = self.model.decode_batch().min(n - tokens.len() as u32);
            let back = self.model.submit_decode(at, k, &Choice::Greedy)?;
            let ids = self.model.tokens_from(&back.wait()?)?;
            tokens.extend(ids);
            at += k;
        }
        let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(n - 1);
        Ok((tokens, us))
    }

    /// The candidate set up last, checked: a prompt and greedy decode steps, then the last
    /// token's logits against the CPU path's after the same sequence. Returns the error as a
    /// fraction of [`LOGIT_TOLERANCE`], or why it failed.
    fn check(&mut self, op: ModelOp, settings: &Settings) -> std::result::Result<f64, String> {
        let err = |e: Error| format!("error: {e}");
        let n_prompt = self.prompt_len(op);
        let (first, _) = self.prompt(n_prompt).map_err(err)?;
        let (tokens, _) = self.decode(first, n_prompt, settings).map_err(err)?;
        let pos = n_prompt + tokens.len() as u32 - 1;
        let last = *tokens.last().expect("two tokens at least");
        let StepOutput::Logits(gl) = self
            .model
            .step(&[last], pos, 1, &Choice::Logits)
            .map_err(err)?
        else {
            return Err("error: no logits came back".into());
        };
        let mut sequence = self.prompt_ids(n_prompt);
        sequence.extend(&tokens);
        let cl = self.cpu.step(&sequence, 0).map_err(err)?.to_vec();
        let scale = cl.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
        let worst = gl
            .iter()
            .zip(&cl)
            .map(|(a, b)| (a - b).abs())
            .fold(
                0f32,
                |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
            );
        let tolerance = LOGIT_TOLERANCE * scale;
        let error = worst / tolerance;
        if error.is_nan() || error > 1.0 {
            return Err(format!(
                "wrong: its logits differ from the CPU path's by {worst} (tolerance {tolerance})"
            ));
        }
        let best = |l: &[f32]| kiln_cpu::sample::argmax(l).unwrap_or(0) as usize;
        let (gb, cb) = (best(&gl), best(&cl));
        if gb != cb && cl[cb] - cl[gb] > tolerance {
            return Err(format!(
                "wrong: its best token is {gb}, the CPU path's {cb} (by {})",
                cl[cb] - cl[gb]
            ));
        }
        Ok(f64::from(error))
    }

    /// One timed run of the checked candidate: the prompt for a prefill choice (microseconds
    /// per prompt token), else decode steps after the checked run's prompt, whose cache is
    /// still in place (microseconds per token).
    fn time(&mut self, op: ModelOp, settings: &Settings) -> Result<f64> {
        let n_prompt = self.prompt_len(op);
        if op == ModelOp::Prefill {
            return Ok(self.prompt(n_prompt)?.1);
        }
        let first = self.prompt_ids(n_prompt + 1)[n_prompt as usize];
        Ok(self.decode(first, n_prompt, settings)?.1)
    }
}

/// Tunes the model-wide choices of `bench` into `profile`, one after another (each with the
/// winners before it in force); an op `profile` already holds complete is kept.
pub fn tune_model(
    bench: &mut ModelBench,
    profile: &mut Profile,
    settings: &Settings,
    budget: &Budget,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<()> {
    let bucket = model_bucket(&bench.cfg);
    let ops = ModelOp::ALL;
    for (i, op) in ops.into_iter().enumerate() {
        progress(i, ops.len(), op.name());
        if profile
            .entry(op.name(), &bucket)
            .is_some_and(crate::complete)
            || budget.spent()
        {
            continue;
        }
        let default = bench
            .gpu
            .tuning()
            .model_choice(op, &bench.cfg, DECODE_BATCH);
        let mut timings = Vec::new();
        // The default first, as for the products.
        let mut values = op.candidates();
        values.sort_by_key(|v| *v != default);
        for value in values {
            if budget.spent() {
                timings.push(Timing::out_of_time(value));
                continue;
            }
            let mut t = Timing::new(value.clone());
            // One untimed run compiles and checks; then the timed runs.
            let checked = bench
                .configure(op, &value, profile)
                .map_err(|e| format!("error: {e}"))
                .and_then(|()| bench.check(op, settings));
            match checked {
                Err(why) => t.status = why,
                Ok(error) => {
                    t.error = Some(error);
                    let mut samples = Vec::new();
                    let mut status = "ok".to_string();
                    for _ in 0..settings.runs {
                        match bench.time(op, settings) {
                            Ok(us) => samples.push(us),
                            Err(e) => {
                                status = format!("error: {e}");
                                break;
                            }
                        }
                        if budget.spent() {
                            break;
                        }
                    }
                    samples.sort_by(f64::total_cmp);
                    t.runs = samples.len() as u32;
                    t.median_us = samples.get(samples.len() / 2).copied();
                    if t.median_us
                        .is_some_and(|us| us * 1e-6 > settings.time_cap.as_secs_f64())
                    {
                        status = "over the time cap".into();
                    }
                    t.status = status;
                }
            }
            timings.push(t);
        }
        profile.put(Entry {
            op: op.name().into(),
            bucket: bucket.clone(),
            shape: vec![bench.cfg.d_model, bench.cfg.n_layer],
            winner: Entry::choose(&timings, &default),
            default,
            candidates: timings,
        });
    }
    progress(ops.len(), ops.len(), "done");
    // Leave the model as the profile says.
    let tuning = bench.gpu.tuning().with_profile("tuner", profile.clone());
    bench.model.set_tuning(tuning)
}
