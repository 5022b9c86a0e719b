//! Model-wide choices, measured end to end on a model (natively): whether decode steps fuse
//! their GEMVs, decode steps per submit, how prompt chunks multiply, and the fewest positions
//! per attention split. Each candidate runs a prompt and greedy decode steps; its logits after
//! them are checked against kiln's CPU path on the same tokens before it may win.

use kiln::clock::Instant;
use kiln::gguf::GgufFile;
use kiln::gpu::Gpu;
use kiln::model::Config;
use kiln::model::cpu::CpuModel;
use kiln::model::gpu::{AttnOptions, Choice, GpuModel, StepOutput};
use kiln::ops::attention::KvType;
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
/// candidate below 256 positions (a step splits at twice the candidate).
const LONG_PROMPT: u32 = 520;

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
    fn prompt(&self, n: u32) -> Vec<u32> {
        (0..n)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) % self.cfg.vocab)
            .collect()
    }

    /// Runs `op`'s candidate `value` under `profile` (the winners so far): a prompt, then
    /// `settings.decode_tokens` greedy steps in the model's batches; returns the time of the
    /// part `op` affects (prompt or decode, microseconds per token) and the check's error.
    fn run(
        &mut self,
        op: ModelOp,
        value: &str,
        profile: &Profile,
        settings: &Settings,
    ) -> std::result::Result<(f64, f64), String> {
        let err = |e: Error| format!("error: {e}");
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
            )
            .map_err(err)?;
        }
        self.model.set_tuning(tuning).map_err(err)?;
        let n_prompt = match op {
            ModelOp::AttnSplit => LONG_PROMPT,
            _ => SHORT_PROMPT,
        }
        .min(self.model.capacity() / 2);
        let prompt = self.prompt(n_prompt);
        let start = Instant::now();
        let StepOutput::Token(first) = self
            .model
            .step(&prompt, 0, n_prompt, &Choice::Greedy)
            .map_err(err)?
        else {
            return Err("error: the prompt returned logits".into());
        };
        let prompt_us = start.elapsed().as_secs_f64() * 1e6 / f64::from(n_prompt);
        let mut tokens = vec![first];
        let mut pos = n_prompt;
        let decode = settings
            .decode_tokens
            .min(self.model.capacity() - n_prompt - 2);
        let start = Instant::now();
        while tokens.len() < decode as usize {
            let n = self.model.decode_batch().min(decode - tokens.len() as u32);
            let back = self
                .model
                .submit_decode(pos, n, &Choice::Greedy)
                .map_err(err)?;
            let ids = self
                .model
                .tokens_from(&back.wait().map_err(err)?)
                .map_err(err)?;
            tokens.extend(ids);
            pos += n;
        }
        let decode_us = start.elapsed().as_secs_f64() * 1e6 / f64::from(decode.max(2) - 1);
        // The last token's logits, on both paths, after the same sequence.
        let last = *tokens.last().expect("one token at least");
        let StepOutput::Logits(gl) = self
            .model
            .step(&[last], pos, 1, &Choice::Logits)
            .map_err(err)?
        else {
            return Err("error: no logits came back".into());
        };
        let mut sequence = prompt;
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
        let time = match op {
            ModelOp::Prefill => prompt_us,
            _ => decode_us,
        };
        Ok((time, f64::from(error)))
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
        let tuning = bench.gpu.tuning();
        let default = match op {
            ModelOp::Fuse => if tuning.fused(&bench.cfg) {
                "fused"
            } else {
                "unfused"
            }
            .to_string(),
            ModelOp::DecodeBatch => tuning
                .decode_batch(&bench.cfg, kiln::model::gpu::DECODE_BATCH)
                .to_string(),
            ModelOp::Prefill => format!("{:?}", tuning.prefill(&bench.cfg)).to_lowercase(),
            ModelOp::AttnSplit => tuning.attn_split(&bench.cfg).to_string(),
        };
        let mut timings = Vec::new();
        for value in op.candidates() {
            let mut t = Timing {
                name: value.clone(),
                median_us: None,
                runs: 0,
                error: None,
                status: String::new(),
            };
            if budget.spent() {
                t.status = "not measured: the time budget ran out".into();
                timings.push(t);
                continue;
            }
            // One untimed run compiles and checks; then the timed runs.
            match bench.run(op, &value, profile, settings) {
                Err(why) => t.status = why,
                Ok((_, error)) => {
                    t.error = Some(error);
                    let mut samples = Vec::new();
                    let mut status = "ok".to_string();
                    for _ in 0..settings.runs.min(3) {
                        match bench.run(op, &value, profile, settings) {
                            Ok((us, _)) => samples.push(us),
                            Err(why) => {
                                status = why;
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
