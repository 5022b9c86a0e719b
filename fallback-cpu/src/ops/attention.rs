//! Attention over an f16 KV cache laid out `[kv_head][pos][head_dim]` with `capacity` positions
//! per head, for one new token (decode) or a block of new tokens (causal prefill).

use half::f16;

use super::math;
use crate::simd::{axpy_f16_isa, dot_f16_isa};
use crate::{CpuError, Isa, check_len};

/// Shapes and options of an attention call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnParams {
    pub n_head: usize,
    /// KV heads (GQA): query head `h` reads KV head `h / (n_head / n_kv_head)`.
    pub n_kv_head: usize,
    pub head_dim: usize,
    /// Positions each KV head's cache can hold.
    pub capacity: usize,
    /// Multiplies `q·k` (usually `1/sqrt(head_dim)`).
    pub scale: f32,
    /// Sliding window: a query at position `p` sees keys `p-window+1 ..= p`.
    pub window: Option<usize>,
    /// Logit soft-capping: `score = c·tanh(score/c)` after scaling.
    pub softcap: Option<f32>,
}

impl AttnParams {
    fn check(&self, k: &[f16], v: &[f16]) -> Result<(), CpuError> {
        if self.n_kv_head == 0 || self.head_dim == 0 || !self.n_head.is_multiple_of(self.n_kv_head)
        {
            return Err(CpuError::Invalid {
                what: "attention",
                why: format!(
                    "n_head {} must be a positive multiple of n_kv_head {} (head_dim {})",
                    self.n_head, self.n_kv_head, self.head_dim
                ),
            });
        }
        if self.window == Some(0) || self.softcap.is_some_and(|c| c.is_nan() || c <= 0.0) {
            return Err(CpuError::Invalid {
                what: "attention",
                why: "window must be >= 1 and softcap > 0".into(),
            });
        }
        let cache = self
            .n_kv_head
            .checked_mul(self.capacity)
            .and_then(|n| n.checked_mul(self.head_dim))
            .ok_or(CpuError::Invalid {
                what: "attention",
                why: "cache size overflows".into(),
            })?;
        check_len("attention: k_cache", cache, k.len())?;
        check_len("attention: v_cache", cache, v.len())
    }
}

/// Attention of one query token at position `len - 1` over cache positions `0..len` (fewer with
/// a window). `q`, `out`: `(n_head, head_dim)`; `scratch`: at least `len` floats.
pub fn attention_decode(
    q: &[f32],
    k_cache: &[f16],
    v_cache: &[f16],
    p: &AttnParams,
    len: usize,
    scratch: &mut [f32],
    out: &mut [f32],
) -> Result<(), CpuError> {
    attention_decode_with(Isa::active(), q, k_cache, v_cache, p, len, scratch, out)
}

/// [`attention_decode`] on `isa`.
#[allow(
    clippy::too_many_arguments,
    reason = "query, two caches, shapes, scratch and output"
)]
pub fn attention_decode_with(
    isa: Isa,
    q: &[f32],
    k_cache: &[f16],
    v_cache: &[f16],
    p: &AttnParams,
    len: usize,
    scratch: &mut [f32],
    out: &mut [f32],
) -> Result<(), CpuError> {
    isa.ensure()?;
    p.check(k_cache, v_cache)?;
    let n = p.n_head * p.head_dim;
    check_len("attention_decode: q", n, q.len())?;
    check_len("attention_decode: out", n, out.len())?;
    check_positions(p, len, scratch.len())?;
    decode_one(isa, q, k_cache, v_cache, p, len, scratch, out);
    Ok(())
}

fn check_positions(p: &AttnParams, len: usize, scratch: usize) -> Result<(), CpuError> {
    if len == 0 || len > p.capacity {
        return Err(CpuError::Invalid {
            what: "attention",
            why: format!("length {len} must be in 1..={}", p.capacity),
        });
    }
    if scratch < len {
        return Err(CpuError::Length {
            what: "attention: scratch (at least the sequence length)",
            expected: len,
            got: scratch,
        });
    }
    Ok(())
}

#[allow(
    clippy::too_many_arguments,
    reason = "internal; arguments checked by callers"
)]
fn decode_one(
    isa: Isa,
    q: &[f32],
    k: &[f16],
    v: &[f16],
    p: &AttnParams,
    len: usize,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    let hd = p.head_dim;
    let group = p.n_head / p.n_kv_head;
    let lo = p.window.map_or(0, |w| len.saturating_sub(w));
    let s = &mut scratch[..len - lo];
    for h in 0..p.n_head {
        let kv = h / group;
        let base = kv * p.capacity * hd;
        let qh = &q[h * hd..(h + 1) * hd];
        for (i, pos) in (lo..len).enumerate() {
            let kr = &k[base + pos * hd..base + (pos + 1) * hd];
            let mut x = p.scale * dot_f16_isa(isa, qh, kr);
            if let Some(c) = p.softcap {
                x = c * math::tanh(x / c);
            }
            s[i] = x;
        }
        // Infallible: `isa` was checked by the caller.
        let _ = super::softmax_with(isa, s);
        let oh = &mut out[h * hd..(h + 1) * hd];
        oh.fill(0.0);
        for (i, pos) in (lo..len).enumerate() {
            axpy_f16_isa(isa, s[i], &v[base + pos * hd..base + (pos + 1) * hd], oh);
        }
    }
}

/// Causal attention for `n_new = q.len() / (n_head·head_dim)` new tokens at positions
/// `start..start + n_new`, whose keys and values are already in the cache: token `t` attends to
/// positions `..= start + t` (within the window). `q`, `out`: `(n_new, n_head, head_dim)`;
/// `scratch`: at least `start + n_new` floats.
#[allow(
    clippy::too_many_arguments,
    reason = "query, two caches, shapes, position, scratch and output"
)]
pub fn attention_prefill(
    q: &[f32],
    k_cache: &[f16],
    v_cache: &[f16],
    p: &AttnParams,
    start: usize,
    scratch: &mut [f32],
    out: &mut [f32],
) -> Result<(), CpuError> {
    let isa = Isa::active();
    p.check(k_cache, v_cache)?;
    let n = p.n_head * p.head_dim;
    if n == 0 || !q.len().is_multiple_of(n) {
        return Err(CpuError::Invalid {
            what: "attention_prefill: q",
            why: format!("{} values are not whole tokens of {n}", q.len()),
        });
    }
    check_len("attention_prefill: out", q.len(), out.len())?;
    let n_new = q.len() / n;
    check_positions(p, start + n_new, scratch.len())?;
    for t in 0..n_new {
        let (qt, ot) = (&q[t * n..(t + 1) * n], &mut out[t * n..(t + 1) * n]);
        decode_one(isa, qt, k_cache, v_cache, p, start + t + 1, scratch, ot);
    }
    Ok(())
}
