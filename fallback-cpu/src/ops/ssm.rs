//! Mamba (S6) recurrent kernels for one token and for a sequence.
//!
//! Shapes: `d` = inner channels, `k` = conv taps (`d_conv`), `n` = state size (`d_state`).

use super::math;
use crate::{CpuError, check_len};

/// One step of Mamba's depthwise causal conv1d.
///
/// `out[c] = bias[c] + Σ_{j<k-1} w[c][j]·state[c][j] + w[c][k-1]·x[c]`, then the window slides:
/// `state[c] = (state[c][1..], x[c])`. `state` is `(d, k-1)` holding the last `k-1` inputs,
/// oldest first; `w` is `(d, k)` (GGUF `ssm_conv1d.weight`). No activation is applied (Mamba
/// applies SiLU to `out` next).
pub fn causal_conv1d_step(
    x: &[f32],
    state: &mut [f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), CpuError> {
    let d = x.len();
    if d == 0 || !w.len().is_multiple_of(d) || w.len() / d < 1 {
        return Err(CpuError::Invalid {
            what: "causal_conv1d_step: w",
            why: format!("{} weights are not (channels {d}, taps)", w.len()),
        });
    }
    let k = w.len() / d;
    check_len(
        "causal_conv1d_step: state (d, k-1)",
        d * (k - 1),
        state.len(),
    )?;
    check_len("causal_conv1d_step: out", d, out.len())?;
    if let Some(b) = bias {
        check_len("causal_conv1d_step: bias", d, b.len())?;
    }
    for c in 0..d {
        let s = &mut state[c * (k - 1)..(c + 1) * (k - 1)];
        let wc = &w[c * k..(c + 1) * k];
        let mut acc = bias.map_or(0.0, |b| b[c]) + wc[k - 1] * x[c];
        for j in 0..k - 1 {
            acc += wc[j] * s[j];
        }
        out[c] = acc;
        if k > 1 {
            s.copy_within(1.., 0);
            s[k - 2] = x[c];
        }
    }
    Ok(())
}

/// Inputs of one selective-scan step (slices for one token).
#[derive(Debug, Clone, Copy)]
pub struct ScanStep<'a> {
    /// `(d)` input after conv + SiLU.
    pub x: &'a [f32],
    /// `(d)` step size, already `softplus(dt_proj(x) + bias)`.
    pub dt: &'a [f32],
    /// `(n)` input projection.
    pub b: &'a [f32],
    /// `(n)` output projection.
    pub c: &'a [f32],
}

/// One token of Mamba's selective scan, per channel `c` and state `s`:
///
/// `h[c][s] = exp(dt[c]·A[c][s])·h[c][s] + dt[c]·B[s]·x[c]`,
/// `y[c] = Σ_s C[s]·h[c][s] + D[c]·x[c]`.
///
/// `h`, `a`: `(d, n)` (`a` is `A = -exp(A_log)`); `d_skip`, `y`: `(d)`.
pub fn selective_scan_step(
    h: &mut [f32],
    a: &[f32],
    d_skip: &[f32],
    t: ScanStep<'_>,
    y: &mut [f32],
) -> Result<(), CpuError> {
    let d = t.x.len();
    let n = t.b.len();
    check_len("selective_scan: dt", d, t.dt.len())?;
    check_len("selective_scan: c", n, t.c.len())?;
    check_len("selective_scan: h (d, n)", d * n, h.len())?;
    check_len("selective_scan: a (d, n)", d * n, a.len())?;
    check_len("selective_scan: d_skip", d, d_skip.len())?;
    check_len("selective_scan: y", d, y.len())?;
    for ch in 0..d {
        let (dt, x) = (t.dt[ch], t.x[ch]);
        let hc = &mut h[ch * n..(ch + 1) * n];
        let ac = &a[ch * n..(ch + 1) * n];
        let mut acc = 0.0;
        for s in 0..n {
            hc[s] = math::exp(dt * ac[s]) * hc[s] + dt * t.b[s] * x;
            acc += t.c[s] * hc[s];
        }
        y[ch] = acc + d_skip[ch] * x;
    }
    Ok(())
}

/// [`selective_scan_step`] over a sequence: `x`, `dt`, `y` are `(len, d)`, `b`, `c` are
/// `(len, n)`; `h` carries the state in and out.
#[allow(clippy::too_many_arguments, reason = "the scan's own inputs")]
pub fn selective_scan(
    h: &mut [f32],
    a: &[f32],
    d_skip: &[f32],
    x: &[f32],
    dt: &[f32],
    b: &[f32],
    c: &[f32],
    y: &mut [f32],
) -> Result<(), CpuError> {
    let d = d_skip.len();
    if d == 0 || !x.len().is_multiple_of(d) {
        return Err(CpuError::Invalid {
            what: "selective_scan: x",
            why: format!("{} values are not whole tokens of {d} channels", x.len()),
        });
    }
    let len = x.len() / d;
    if len == 0 || !b.len().is_multiple_of(len) {
        return Err(CpuError::Invalid {
            what: "selective_scan: b",
            why: format!("{} values are not {len} tokens", b.len()),
        });
    }
    let n = b.len() / len;
    check_len("selective_scan: dt", x.len(), dt.len())?;
    check_len("selective_scan: c", b.len(), c.len())?;
    check_len("selective_scan: y", x.len(), y.len())?;
    for t in 0..len {
        let step = ScanStep {
            x: &x[t * d..(t + 1) * d],
            dt: &dt[t * d..(t + 1) * d],
            b: &b[t * n..(t + 1) * n],
            c: &c[t * n..(t + 1) * n],
        };
        selective_scan_step(h, a, d_skip, step, &mut y[t * d..(t + 1) * d])?;
    }
    Ok(())
}
