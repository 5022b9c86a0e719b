//! Token choice on the GPU: the chosen id lands in a token buffer, where the next step's
//! embedding reads it, so a decode step reads back only 4 bytes. Greedy ([`argmax`]) or sampled
//! ([`sample`]: penalty, temperature, top-k, top-p, seeded RNG).

use crate::error::{Error, Result};
use crate::gpu::{KernelKey, Recorder, Shifted, View, params};
use crate::ops::need;
use crate::ops::reduce::Combine;

/// The id [`argmax`] and [`sample`] write instead of a token when a logit they read is NaN or
/// +inf (corrupt weights, overflowed activations): no token can be chosen from such logits. The
/// host turns it into [`Error::NonFinite`]; an embedding of it reads nothing (ids outside the
/// vocabulary are skipped). -inf logits are ordinary: a masked id, never chosen over a finite
/// one.
pub const NON_FINITE_ID: u32 = u32::MAX;

pub fn argmax_key(combine: Combine) -> KernelKey {
    KernelKey::new("argmax")
        .flag("SUBGROUP", combine == Combine::Subgroup)
        .uint("WG_SIZE", params::argmax::WG_SIZE)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    slot: u32,
}

/// `tokens[slot] = argmax(logits[0..n])`, the lowest index on ties, reduced the device's best
/// way ([`Combine::best`]); [`NON_FINITE_ID`] if any logit is NaN or +inf. In a plan, `slot`
/// follows the replayed step's position.
pub fn argmax(
    rec: &mut Recorder,
    logits: View<'_>,
    tokens: View<'_>,
    n: u32,
    slot: u32,
) -> Result<()> {
    let combine = Combine::best(rec.gpu());
    argmax_with(rec, combine, logits, tokens, n, slot)
}

/// [`argmax`] with the workgroup reduction chosen by the caller.
pub fn argmax_with(
    rec: &mut Recorder,
    combine: Combine,
    logits: View<'_>,
    tokens: View<'_>,
    n: u32,
    slot: u32,
) -> Result<()> {
    need("argmax", "logits", &logits, u64::from(n) * 4)?;
    need("argmax", "tokens", &tokens, (u64::from(slot) + 1) * 4)?;
    let kernel = rec.gpu().kernel(&argmax_key(combine))?;
    let shift = Shifted {
        params: Params { n, slot },
        f: |p: &mut Params, delta: u32| {
            p.slot += delta;
            [1, 1, 1]
        },
    };
    rec.dispatch_shifting(&kernel, shift, &[logits, tokens])
}

pub fn sample_key() -> KernelKey {
    KernelKey::new("sample").uint("WG_SIZE", params::sample::WG_SIZE)
}

/// Settings of [`sample`]; the same fields as `kiln_cpu::Sampler`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleParams {
    /// Logits are divided by this; `<= 0` picks greedily (as [`argmax`], after the penalty).
    pub temperature: f32,
    /// Keep the ids whose scaled logit is at least the `top_k`-th largest; 0 keeps all.
    pub top_k: u32,
    /// Nucleus threshold; `>= 1` keeps all.
    pub top_p: f32,
    /// llama.cpp's repetition penalty; 1 is off.
    pub repetition_penalty: f32,
    pub seed: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SampleUniform {
    n: u32,
    slot: u32,
    top_k: u32,
    n_recent: u32,
    temperature: f32,
    top_p: f32,
    penalty: f32,
    seed: u32,
    step: u32,
    pad: [u32; 3],
}

/// Records `tokens[slot] = ` one id drawn from `logits[0..n]` at step `step`, in one workgroup.
/// In a plan, `slot` and `step` follow the replayed step's position.
///
/// Semantics, in order (`z` below is a scaled logit, "kept" a candidate that survives):
/// 1. **Repetition penalty** (if not 1): for each *distinct* id among the penalty's window, the
///    `min(last_n, slot)` ids before `slot` in `tokens` (ids `>= n` are ignored), `logits[id]`
///    is divided by the penalty if positive, multiplied if not. This is written back into
///    `logits` (like `kiln_cpu::Sampler`, which penalizes its slice in place).
/// 2. If any (penalized) logit is NaN or +inf, [`NON_FINITE_ID`] is written and nothing else
///    happens. **Temperature `<= 0`**: the largest logit, lowest id on ties (as [`argmax`]).
/// 3. `z[i] = logits[i] * (1 / temperature)`.
/// 4. **Top-k** (`0 < top_k < n`): keep the ids with `z >= z_k`, where
///    `z_k` is the `top_k`-th largest `z`. Every id tied with `z_k` is kept, so more than
///    `top_k` ids survive when there is a tie at the cut (kiln-cpu keeps exactly `top_k`,
///    breaking ties by lower id).
/// 5. Weights `w[i] = exp(z[i] - max z)` over the kept ids, `T` their sum.
/// 6. **Top-p** (`top_p < 1`): keep the ids with `z >= z_p`, where `z_p` is the largest `z`
///    such that the ids with `z >= z_p` hold at least `top_p * T`: the smallest set of the most
///    likely ids reaching the mass, plus everything tied with its least likely member
///    (kiln-cpu stops at the first id, in its order, that reaches the mass). `top_p <= 0` keeps
///    only the largest `z` (and its ties).
/// 7. **Pick** by inverse CDF over the kept ids in **increasing id order** (kiln-cpu walks them
///    by decreasing logit, so the two pick different ids from the same `u`, with the same
///    distribution): with `u = (pcg_hash(seed ^ pcg_hash(step)) >> 8) / 2^24`, identical to
///    `kiln_cpu::sample::uniform(seed, step)`, the first kept id whose running sum of weights
///    exceeds `u * T'` (`T'` the sum over the kept set), or the last kept id if rounding leaves
///    none. Running sums are formed per chunk of `ceil(n / 256)` consecutive ids from an
///    exclusive prefix sum over the chunks, so they can differ from a sequential sum in the
///    last bits.
///
/// Both cuts are exact and work on an order-preserving integer key of `z`, with no sort: top-k
/// is a radix selection (4 passes over the logits, one 8-bit digit each), top-p a bisection
/// (at most 32 passes, each a parallel sum). In one workgroup, a draw reads the logits about 8
/// times with top-k alone and up to ~40 times with top-p on.
#[allow(
    clippy::too_many_arguments,
    reason = "one argument per binding and parameter"
)]
pub fn sample(
    rec: &mut Recorder,
    logits: View<'_>,
    tokens: View<'_>,
    n: u32,
    last_n: u32,
    slot: u32,
    step: u32,
    s: &SampleParams,
) -> Result<()> {
    if n == 0
        || !s.temperature.is_finite()
        || s.top_p.is_nan()
        || !(s.repetition_penalty.is_finite() && s.repetition_penalty > 0.0)
    {
        return Err(Error::Shape {
            op: "sample",
            detail: format!(
                "{n} logits with {s:?}: need at least one logit, a finite temperature, a top_p \
                 that is not NaN and a finite repetition_penalty > 0"
            ),
        });
    }
    need("sample", "logits", &logits, u64::from(n) * 4)?;
    need("sample", "tokens", &tokens, (u64::from(slot) + 1) * 4)?;
    let kernel = rec.gpu().kernel(&sample_key())?;
    let params = SampleUniform {
        n,
        slot,
        top_k: s.top_k,
        n_recent: last_n.min(slot),
        temperature: s.temperature,
        top_p: s.top_p,
        penalty: s.repetition_penalty,
        seed: s.seed,
        step,
        pad: [0; 3],
    };
    let shift = Shifted {
        params,
        f: move |p: &mut SampleUniform, delta: u32| {
            p.slot += delta;
            p.step += delta;
            p.n_recent = last_n.min(p.slot);
            [1, 1, 1]
        },
    };
    rec.dispatch_shifting(&kernel, shift, &[logits, tokens])
}
