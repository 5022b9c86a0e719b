//! Mamba (S6) recurrent kernels over a sequence with state kept on the GPU: the causal depthwise
//! conv1d with its sliding window and the selective scan. One call takes any number of tokens: a
//! prompt chunk in one dispatch, or one decoded token (`n_tok = 1`). CPU twins:
//! `kiln_cpu::ops::causal_conv1d_step` and `kiln_cpu::ops::selective_scan`.

use crate::error::{Error, Result};
use crate::gpu::{KernelKey, Recorder, View, params};
use crate::ops::need;

pub fn ssm_conv_key() -> KernelKey {
    KernelKey::new("ssm_conv").uint("WG_SIZE", params::ssm_conv::WG_SIZE)
}

pub fn ssm_scan_key() -> KernelKey {
    KernelKey::new("ssm_scan")
        .uint("CHUNK", params::ssm_scan::CHUNK)
        .uint("WG_SIZE", params::ssm_scan::WG_SIZE)
}

fn shape(op: &'static str, detail: String) -> Error {
    Error::Shape { op, detail }
}

/// Views of one causal conv1d call.
#[derive(Clone, Copy, Debug)]
pub struct ConvIo<'a> {
    /// `(n_tok, d)` inputs.
    pub x: View<'a>,
    /// `(d, k - 1)` the last `k - 1` inputs per channel, oldest first; read and advanced.
    pub state: View<'a>,
    /// `(d, k)` taps (GGUF `ssm_conv1d.weight`).
    pub w: View<'a>,
    /// `(d)` bias.
    pub bias: View<'a>,
    /// `(n_tok, d)` outputs, before the SiLU Mamba applies next.
    pub out: View<'a>,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ConvParams {
    d: u32,
    k: u32,
    n_tok: u32,
    pad: u32,
}

/// Records Mamba's causal depthwise conv1d over `n_tok` tokens of `d` channels with `k` taps:
/// `out[t, c] = bias[c] + Σ_j w[c, j] · window[j]` over the last `k` inputs of channel `c` up to
/// token `t` (the state's inputs come first), then the state holds the last `k - 1` inputs. The
/// same as `n_tok` calls of `kiln_cpu::ops::causal_conv1d_step`. `k >= 2`.
pub fn causal_conv1d(rec: &mut Recorder, io: ConvIo<'_>, d: u32, k: u32, n_tok: u32) -> Result<()> {
    const OP: &str = "causal_conv1d";
    if d == 0 || k < 2 || n_tok == 0 {
        return Err(shape(
            OP,
            format!("{d} channels, {k} taps, {n_tok} tokens: all must be non-zero and taps >= 2"),
        ));
    }
    let tok = u64::from(n_tok) * u64::from(d) * 4;
    need(OP, "x", &io.x, tok)?;
    need(OP, "state", &io.state, u64::from(d) * u64::from(k - 1) * 4)?;
    need(OP, "w", &io.w, u64::from(d) * u64::from(k) * 4)?;
    need(OP, "bias", &io.bias, u64::from(d) * 4)?;
    need(OP, "out", &io.out, tok)?;
    let kernel = rec.gpu().kernel(&ssm_conv_key())?;
    let groups = rec.gpu().grid(d.div_ceil(kernel.spec.workgroup_size[0]));
    let params = ConvParams {
        d,
        k,
        n_tok,
        pad: 0,
    };
    rec.dispatch(
        &kernel,
        groups,
        &params,
        &[io.x, io.state, io.w, io.bias, io.out],
    )
}

/// Views of one selective scan call.
#[derive(Clone, Copy, Debug)]
pub struct ScanIo<'a> {
    /// `(d, n)` state; read and advanced.
    pub h: View<'a>,
    /// `(d, n)` `A = -exp(A_log)`.
    pub a: View<'a>,
    /// `(d)` the skip `D`.
    pub d_skip: View<'a>,
    /// `(n_tok, d)` inputs after conv and SiLU.
    pub x: View<'a>,
    /// `(n_tok, d)` step sizes, already `softplus(dt_proj(x) + bias)`.
    pub dt: View<'a>,
    /// `(n_tok, n)` input projection `B`.
    pub b: View<'a>,
    /// `(n_tok, n)` output projection `C`.
    pub c: View<'a>,
    /// `(n_tok, d)` outputs.
    pub y: View<'a>,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ScanParams {
    d: u32,
    n: u32,
    n_tok: u32,
    cpw: u32,
}

/// Records Mamba's selective scan over `n_tok` tokens of `d` channels with `n` states each:
/// `h = exp(dt·A)·h + dt·B·x`, `y = C·h + D·x` per token in order (the same as
/// `kiln_cpu::ops::selective_scan`). `n` may be at most the kernel's workgroup size (64): one
/// invocation per (channel, state).
pub fn selective_scan(
    rec: &mut Recorder,
    io: ScanIo<'_>,
    d: u32,
    n: u32,
    n_tok: u32,
) -> Result<()> {
    const OP: &str = "selective_scan";
    let kernel = rec.gpu().kernel(&ssm_scan_key())?;
    let wg = kernel.spec.workgroup_size[0];
    if d == 0 || n == 0 || n > wg || n_tok == 0 {
        return Err(shape(
            OP,
            format!(
                "{d} channels, {n} states, {n_tok} tokens: all must be non-zero and states at \
                 most {wg}"
            ),
        ));
    }
    let (d64, n64, t64) = (u64::from(d), u64::from(n), u64::from(n_tok));
    need(OP, "h", &io.h, d64 * n64 * 4)?;
    need(OP, "a", &io.a, d64 * n64 * 4)?;
    need(OP, "d_skip", &io.d_skip, d64 * 4)?;
    for (name, v) in [("x", &io.x), ("dt", &io.dt), ("y", &io.y)] {
        need(OP, name, v, t64 * d64 * 4)?;
    }
    need(OP, "b", &io.b, t64 * n64 * 4)?;
    need(OP, "c", &io.c, t64 * n64 * 4)?;
    let cpw = wg / n;
    let groups = rec.gpu().grid(d.div_ceil(cpw));
    let params = ScanParams { d, n, n_tok, cpw };
    rec.dispatch(
        &kernel,
        groups,
        &params,
        &[io.h, io.a, io.d_skip, io.x, io.dt, io.b, io.c, io.y],
    )
}
