//! RWKV-6 and RWKV-7 time-mix (WKV) single-token kernels, token shift and channel mix.
//!
//! `H` heads of size `N`; vectors are `(H, N)`, states `(H, N, N)` row-major.

use super::math;
use crate::{ActBuffer, CpuError, QMatrix, ThreadPool, check_len};

fn heads(what: &'static str, n_embd: usize, head: usize, state: usize) -> Result<usize, CpuError> {
    if head == 0 || !n_embd.is_multiple_of(head) {
        return Err(CpuError::Invalid {
            what,
            why: format!("{n_embd} channels are not whole heads of {head}"),
        });
    }
    check_len(what, n_embd * head, state)?;
    Ok(n_embd / head)
}

/// RWKV-6 WKV for one token (Finch, arXiv:2404.05892). Per head, with state `S[i][j]` (`i` over
/// keys, `j` over values), decay `w` (already `exp(-exp(w_raw))`) and bonus `u` (`time_first`):
///
/// `y[j] = Σ_i r[i]·(u[i]·k[i]·v[j] + S[i][j])`, then `S[i][j] = w[i]·S[i][j] + k[i]·v[j]`.
#[allow(clippy::too_many_arguments, reason = "the recurrence's own inputs")]
pub fn wkv6_step(
    state: &mut [f32],
    r: &[f32],
    k: &[f32],
    v: &[f32],
    w: &[f32],
    u: &[f32],
    head_size: usize,
    out: &mut [f32],
) -> Result<(), CpuError> {
    let c = r.len();
    for (name, s) in [
        ("wkv6: k", k),
        ("wkv6: v", v),
        ("wkv6: w", w),
        ("wkv6: u", u),
    ] {
        check_len(name, c, s.len())?;
    }
    check_len("wkv6: out", c, out.len())?;
    let h = heads("wkv6: state (H, N, N)", c, head_size, state.len())?;
    let n = head_size;
    for hh in 0..h {
        let o = hh * n;
        let s = &mut state[hh * n * n..(hh + 1) * n * n];
        let y = &mut out[o..o + n];
        y.fill(0.0);
        let vh = &v[o..o + n];
        for i in 0..n {
            let (ri, ki, ui, wi) = (r[o + i], k[o + i], u[o + i], w[o + i]);
            let row = &mut s[i * n..(i + 1) * n];
            for j in 0..n {
                let kv = ki * vh[j];
                y[j] += ri * (ui * kv + row[j]);
                row[j] = wi * row[j] + kv;
            }
        }
    }
    Ok(())
}

/// Inputs of one RWKV-7 WKV step, each `(H, N)`.
#[derive(Debug, Clone, Copy)]
pub struct Wkv7<'a> {
    pub r: &'a [f32],
    /// Decay, already `exp(-exp(w_raw))` style in `(0, 1)`.
    pub w: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    /// In-context learning rate terms: RWKV-7 passes `a = -κ̂` and `b = κ̂·a_iclr`.
    pub a: &'a [f32],
    pub b: &'a [f32],
}

/// RWKV-7 WKV for one token (Goose, arXiv:2503.14456), in llama.cpp's generalized form. Per
/// head, with state `S[i][j]` (`i` over values, `j` over keys):
///
/// `sa[i] = Σ_j a[j]·S[i][j]`, `S[i][j] = S[i][j]·w[j] + v[i]·k[j] + sa[i]·b[j]`,
/// `y[i] = Σ_j S[i][j]·r[j]`, i.e. `S ← S·(diag(w) + a·bᵀ) + v·kᵀ`, `y = S·r`.
pub fn wkv7_step(
    state: &mut [f32],
    x: Wkv7<'_>,
    head_size: usize,
    out: &mut [f32],
) -> Result<(), CpuError> {
    let c = x.r.len();
    for (name, s) in [
        ("wkv7: w", x.w),
        ("wkv7: k", x.k),
        ("wkv7: v", x.v),
        ("wkv7: a", x.a),
        ("wkv7: b", x.b),
    ] {
        check_len(name, c, s.len())?;
    }
    check_len("wkv7: out", c, out.len())?;
    let h = heads("wkv7: state (H, N, N)", c, head_size, state.len())?;
    let n = head_size;
    for hh in 0..h {
        let o = hh * n;
        let s = &mut state[hh * n * n..(hh + 1) * n * n];
        let (w, k, a, b, r) = (
            &x.w[o..o + n],
            &x.k[o..o + n],
            &x.a[o..o + n],
            &x.b[o..o + n],
            &x.r[o..o + n],
        );
        for i in 0..n {
            let row = &mut s[i * n..(i + 1) * n];
            let sa: f32 = row.iter().zip(a).map(|(s, a)| s * a).sum();
            let vi = x.v[o + i];
            let mut y = 0.0;
            for j in 0..n {
                row[j] = row[j] * w[j] + vi * k[j] + sa * b[j];
                y += row[j] * r[j];
            }
            out[o + i] = y;
        }
    }
    Ok(())
}

/// Token shift: `out = x + (prev - x)·mu` (the lerp between this token and the previous one).
pub fn token_shift(x: &[f32], prev: &[f32], mu: &[f32], out: &mut [f32]) -> Result<(), CpuError> {
    check_len("token_shift: prev", x.len(), prev.len())?;
    check_len("token_shift: mu", x.len(), mu.len())?;
    check_len("token_shift: out", x.len(), out.len())?;
    for i in 0..x.len() {
        out[i] = x[i] + (prev[i] - x[i]) * mu[i];
    }
    Ok(())
}

/// Reusable buffers for [`channel_mix`].
#[derive(Debug, Default)]
pub struct ChannelMixScratch {
    act: ActBuffer,
    xk: Vec<f32>,
    xr: Vec<f32>,
    k: Vec<f32>,
    r: Vec<f32>,
}

/// Weights of an RWKV channel mix; `wr`/`mu_r` are present for RWKV-6 and absent for RWKV-7.
#[derive(Debug, Clone, Copy)]
pub struct ChannelMix<'a> {
    pub mu_k: &'a [f32],
    pub mu_r: Option<&'a [f32]>,
    /// `(d_ffn, d)`.
    pub wk: QMatrix<'a>,
    /// `(d, d_ffn)`.
    pub wv: QMatrix<'a>,
    /// `(d, d)`, RWKV-6 only.
    pub wr: Option<QMatrix<'a>>,
}

/// RWKV channel mix with token shift, for one token:
///
/// `xk = x + (prev - x)·μₖ`, `k = relu(Wₖ·xk)²`, `kv = Wᵥ·k`;
/// RWKV-6: `xr = x + (prev - x)·μᵣ`, `out = sigmoid(Wᵣ·xr)·kv`; RWKV-7: `out = kv`.
/// Afterwards `prev` holds `x` (the shift state for the next token).
pub fn channel_mix(
    x: &[f32],
    prev: &mut [f32],
    m: &ChannelMix<'_>,
    scratch: &mut ChannelMixScratch,
    pool: &ThreadPool,
    out: &mut [f32],
) -> Result<(), CpuError> {
    let d = x.len();
    check_len("channel_mix: out", d, out.len())?;
    check_len("channel_mix: wk cols", d, m.wk.cols())?;
    check_len("channel_mix: wv rows", d, m.wv.rows())?;
    check_len("channel_mix: wv cols", m.wk.rows(), m.wv.cols())?;
    if m.mu_r.is_some() != m.wr.is_some() {
        return Err(CpuError::Invalid {
            what: "channel_mix",
            why: "mu_r and wr come together (RWKV-6) or not at all (RWKV-7)".into(),
        });
    }
    let s = scratch;
    s.xk.resize(d, 0.0);
    s.k.resize(m.wk.rows(), 0.0);
    token_shift(x, prev, m.mu_k, &mut s.xk)?;
    if let (Some(mu_r), Some(wr)) = (m.mu_r, m.wr) {
        check_len("channel_mix: wr rows", d, wr.rows())?;
        check_len("channel_mix: wr cols", d, wr.cols())?;
        s.xr.resize(d, 0.0);
        s.r.resize(d, 0.0);
        token_shift(x, prev, mu_r, &mut s.xr)?;
        s.act.quantize(&s.xr, wr.qtype())?;
        wr.gemv(&s.act, &mut s.r, pool)?;
    }
    s.act.quantize(&s.xk, m.wk.qtype())?;
    m.wk.gemv(&s.act, &mut s.k, pool)?;
    for v in s.k.iter_mut() {
        let r = v.max(0.0);
        *v = r * r;
    }
    s.act.quantize(&s.k, m.wv.qtype())?;
    m.wv.gemv(&s.act, out, pool)?;
    if m.wr.is_some() {
        for (o, r) in out.iter_mut().zip(&s.r) {
            *o *= math::sigmoid(*r);
        }
    }
    prev.copy_from_slice(x);
    Ok(())
}
