//! Token sampling with a stateless, GPU-reproducible RNG.
//!
//! [`Sampler::sample`] applies, in this order:
//! 1. **Repetition penalty** (llama.cpp style) to each *distinct* id in `recent`: a positive
//!    logit is divided by `repetition_penalty`, a negative one multiplied (1.0 disables it).
//! 2. **Temperature 0** (or below): greedy argmax; ties go to the lowest id. Nothing random.
//! 3. **Temperature**: logits are divided by `temperature`.
//! 4. **Top-k** (`0` = off): candidates are ordered by logit descending, ties by id ascending,
//!    and the first `top_k` are kept.
//! 5. **Softmax** over the kept candidates (max-subtracted).
//! 6. **Top-p** (`>= 1.0` = off): keep the smallest prefix of that order whose cumulative
//!    probability is `>= top_p` (at least one candidate).
//! 7. **Pick** by inverse CDF: with `u` uniform in `[0, 1)` and `T` the kept mass, walk the
//!    candidates in that order and return the first whose running sum exceeds `u·T` (the last
//!    one if rounding leaves none).
//!
//! The uniform for step `t` is
//! `u = (pcg_hash(seed ^ pcg_hash(t)) >> 8) as f32 / 2^24`, with [`pcg_hash`] the PCG-RXS-M-XS
//! 32-bit hash, so a GPU sampler given the same seed and step draws the same `u`.

use crate::CpuError;

/// PCG-RXS-M-XS 32-bit hash (stateless).
pub fn pcg_hash(x: u32) -> u32 {
    let s = x.wrapping_mul(747796405).wrapping_add(2891336453);
    let w = ((s >> ((s >> 28) + 4)) ^ s).wrapping_mul(277803737);
    (w >> 22) ^ w
}

/// The uniform in `[0, 1)` used at step `t` with `seed`.
pub fn uniform(seed: u32, t: u32) -> f32 {
    (pcg_hash(seed ^ pcg_hash(t)) >> 8) as f32 * (1.0 / 16777216.0)
}

/// Sampling settings plus reusable scratch (grown once to the vocabulary size).
#[derive(Debug, Clone)]
pub struct Sampler {
    pub temperature: f32,
    /// Keep this many best candidates; 0 keeps all.
    pub top_k: usize,
    /// Nucleus threshold; `>= 1.0` keeps all.
    pub top_p: f32,
    /// llama.cpp-style repetition penalty; 1.0 is off.
    pub repetition_penalty: f32,
    pub seed: u32,
    /// (candidate id, logit then probability).
    scratch: Vec<(u32, f32)>,
}

/// Candidate order: logit descending, then id ascending.
fn order(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

impl Sampler {
    /// A sampler with these settings.
    pub fn new(
        temperature: f32,
        top_k: usize,
        top_p: f32,
        repetition_penalty: f32,
        seed: u32,
    ) -> Sampler {
        Sampler {
            temperature,
            top_k,
            top_p,
            repetition_penalty,
            seed,
            scratch: Vec::new(),
        }
    }

    /// Greedy decoding (temperature 0).
    pub fn greedy() -> Sampler {
        Sampler::new(0.0, 0, 1.0, 1.0, 0)
    }

    /// Reserves scratch for `vocab` logits so later calls do not allocate.
    pub fn reserve(&mut self, vocab: usize) {
        self.scratch
            .reserve(vocab.saturating_sub(self.scratch.len()));
    }

    /// Picks a token id from `logits` at step `step` (see the module docs for the order). The
    /// penalty is applied to `logits` in place. Ids in `recent` outside the vocabulary are an
    /// error, as are empty or all-NaN logits.
    pub fn sample(
        &mut self,
        logits: &mut [f32],
        recent: &[u32],
        step: u32,
    ) -> Result<u32, CpuError> {
        if logits.is_empty() || logits.len() > u32::MAX as usize {
            return Err(CpuError::Invalid {
                what: "Sampler::sample",
                why: format!("{} logits; need 1..=u32::MAX", logits.len()),
            });
        }
        if let Some(&bad) = recent.iter().find(|&&id| id as usize >= logits.len()) {
            return Err(CpuError::Invalid {
                what: "Sampler::sample: recent",
                why: format!("id {bad} >= vocabulary {}", logits.len()),
            });
        }
        if !(self.temperature.is_finite()
            && self.top_p.is_finite()
            && self.repetition_penalty > 0.0)
        {
            return Err(CpuError::Invalid {
                what: "Sampler",
                why: format!(
                    "temperature {} / top_p {} must be finite and repetition_penalty {} > 0",
                    self.temperature, self.top_p, self.repetition_penalty
                ),
            });
        }
        if self.repetition_penalty != 1.0 {
            for (i, &id) in recent.iter().enumerate() {
                if recent[..i].contains(&id) {
                    continue;
                }
                let l = &mut logits[id as usize];
                *l = if *l > 0.0 {
                    *l / self.repetition_penalty
                } else {
                    *l * self.repetition_penalty
                };
            }
        }
        if self.temperature <= 0.0 {
            return argmax(logits).ok_or(CpuError::Invalid {
                what: "Sampler::sample",
                why: "all logits are NaN".into(),
            });
        }
        let inv_t = 1.0 / self.temperature;
        self.scratch.clear();
        self.scratch.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| !l.is_nan())
                .map(|(i, &l)| (i as u32, l * inv_t)),
        );
        if self.scratch.is_empty() {
            return Err(CpuError::Invalid {
                what: "Sampler::sample",
                why: "all logits are NaN".into(),
            });
        }
        let c = &mut self.scratch;
        if self.top_k > 0 && self.top_k < c.len() {
            c.select_nth_unstable_by(self.top_k - 1, order);
            c.truncate(self.top_k);
        }
        c.sort_unstable_by(order);
        let max = c[0].1;
        let mut total = 0f32;
        for e in c.iter_mut() {
            e.1 = (e.1 - max).exp();
            total += e.1;
        }
        let mut keep = c.len();
        if self.top_p < 1.0 {
            let target = self.top_p * total;
            let mut cum = 0f32;
            for (i, e) in c.iter().enumerate() {
                cum += e.1;
                if cum >= target {
                    keep = i + 1;
                    break;
                }
            }
        }
        let kept = &c[..keep];
        let mass: f32 = kept.iter().map(|e| e.1).sum();
        let r = uniform(self.seed, step) * mass;
        let mut cum = 0f32;
        for e in kept {
            cum += e.1;
            if cum > r {
                return Ok(e.0);
            }
        }
        Ok(kept[keep - 1].0)
    }
}

/// Index of the largest non-NaN value, lowest index on ties.
pub fn argmax(x: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in x.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i as u32)
}
