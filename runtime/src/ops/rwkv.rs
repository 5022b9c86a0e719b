//! RWKV recurrent kernels over a sequence with state kept on the GPU: the RWKV-6 and RWKV-7 WKV
//! time mixing (a per-head state), the token shift (a per-channel previous token) and the
//! channel mix built on it. One call takes any number of tokens: a prompt chunk, or one decoded
//! token (`n_tok = 1`). CPU twins: `kiln_cpu::ops::{wkv6_step, wkv7_step, token_shift,
//! channel_mix}`.

use crate::error::{Error, Result};
use crate::gpu::{KernelKey, Recorder, View, params};
use crate::ops::gemv::{ActQuant, GemvShape, QAct, Split, WType, gemv, gemv_q8, quantize};
use crate::ops::need;

/// The largest head size the WKV kernels take: each invocation keeps one state row or column of
/// this many values, and the workgroup has one invocation per value.
pub const WKV_MAX_HEAD: u32 = params::wkv6::MAX_HEAD;

// Both kernels share one shape check.
const _: () = assert!(params::wkv7::MAX_HEAD == WKV_MAX_HEAD);

pub fn wkv6_key() -> KernelKey {
    use params::wkv6 as p;
    KernelKey::new("wkv6")
        .uint("CHUNK", p::CHUNK)
        .uint("MAX_HEAD", p::MAX_HEAD)
        .uint("WG_SIZE", p::WG_SIZE)
}

pub fn wkv7_key() -> KernelKey {
    use params::wkv7 as p;
    KernelKey::new("wkv7")
        .uint("CHUNK", p::CHUNK)
        .uint("MAX_HEAD", p::MAX_HEAD)
        .uint("WG_SIZE", p::WG_SIZE)
}

pub fn token_shift_key() -> KernelKey {
    KernelKey::new("token_shift").uint("WG_SIZE", params::token_shift::WG_SIZE)
}

/// The pointwise steps of the channel mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FfnAct {
    /// `x = max(x, 0)²` in place.
    ReluSq,
    /// `x = sigmoid(g)·x` in place.
    SigmoidGate,
}

pub fn ffn_act_key(act: FfnAct) -> KernelKey {
    KernelKey::new("rwkv_ffn_act")
        .word(
            "OP",
            match act {
                FfnAct::ReluSq => "relu_sq",
                FfnAct::SigmoidGate => "sigmoid_gate",
            },
        )
        .uint("WG_SIZE", params::rwkv_ffn_act::WG_SIZE)
}

fn shape(op: &'static str, detail: String) -> Error {
    Error::Shape { op, detail }
}

/// Heads of one WKV call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WkvShape {
    pub n_head: u32,
    /// Head size, at most [`WKV_MAX_HEAD`].
    pub head_size: u32,
    pub n_tok: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct WkvParams {
    n_head: u32,
    n: u32,
    n_tok: u32,
    pad: u32,
}

/// Checks a WKV shape and the state and per-token views; returns the kernel's uniform.
fn wkv_check(
    rec: &Recorder,
    op: &'static str,
    s: WkvShape,
    state: &View<'_>,
    tokens: &[(&str, &View<'_>)],
) -> Result<WkvParams> {
    let groups_max = rec.gpu().limits().max_compute_workgroups_per_dimension;
    if s.n_head == 0 || s.n_head > groups_max || s.head_size == 0 || s.n_tok == 0 {
        return Err(shape(
            op,
            format!("{s:?}: heads (1..={groups_max}), head size and tokens must be non-zero"),
        ));
    }
    if s.head_size > WKV_MAX_HEAD {
        return Err(shape(
            op,
            format!(
                "head size {} is above the kernel's {WKV_MAX_HEAD}",
                s.head_size
            ),
        ));
    }
    let (h, n, t) = (
        u64::from(s.n_head),
        u64::from(s.head_size),
        u64::from(s.n_tok),
    );
    need(op, "state", state, h * n * n * 4)?;
    for (name, v) in tokens {
        need(op, name, v, t * h * n * 4)?;
    }
    Ok(WkvParams {
        n_head: s.n_head,
        n: s.head_size,
        n_tok: s.n_tok,
        pad: 0,
    })
}

/// Views of one RWKV-6 WKV call; per-token views are `(n_tok, n_head * head_size)`.
#[derive(Clone, Copy, Debug)]
pub struct Wkv6Io<'a> {
    /// `(n_head, head_size, head_size)` `S[i][j]`, `i` over keys; read and advanced.
    pub state: View<'a>,
    pub r: View<'a>,
    pub k: View<'a>,
    pub v: View<'a>,
    /// Decay, already `exp(-exp(w_raw))`.
    pub w: View<'a>,
    /// `(n_head * head_size)` bonus (`time_first`).
    pub u: View<'a>,
    pub y: View<'a>,
}

/// Records RWKV-6's WKV over `s.n_tok` tokens: per head and token,
/// `y[j] = Σ_i r[i]·(u[i]·k[i]·v[j] + S[i][j])`, then `S[i][j] = w[i]·S[i][j] + k[i]·v[j]`
/// (the same as `n_tok` calls of `kiln_cpu::ops::wkv6_step`).
pub fn wkv6(rec: &mut Recorder, io: Wkv6Io<'_>, s: WkvShape) -> Result<()> {
    let kernel = rec.gpu().kernel(&wkv6_key())?;
    let params = wkv_check(
        rec,
        "wkv6",
        s,
        &io.state,
        &[
            ("r", &io.r),
            ("k", &io.k),
            ("v", &io.v),
            ("w", &io.w),
            ("y", &io.y),
        ],
    )?;
    need(
        "wkv6",
        "u",
        &io.u,
        u64::from(s.n_head) * u64::from(s.head_size) * 4,
    )?;
    rec.dispatch(
        &kernel,
        [s.n_head, 1, 1],
        &params,
        &[io.state, io.r, io.k, io.v, io.w, io.u, io.y],
    )
}

/// Views of one RWKV-7 WKV call; per-token views are `(n_tok, n_head * head_size)`.
#[derive(Clone, Copy, Debug)]
pub struct Wkv7Io<'a> {
    /// `(n_head, head_size, head_size)` `S[i][j]`, `i` over values; read and advanced.
    pub state: View<'a>,
    pub r: View<'a>,
    /// Decay in `(0, 1)`.
    pub w: View<'a>,
    pub k: View<'a>,
    pub v: View<'a>,
    /// In-context learning rate terms: RWKV-7 passes `a = -κ̂` and `b = κ̂·a_iclr`.
    pub a: View<'a>,
    pub b: View<'a>,
    pub y: View<'a>,
}

/// Records RWKV-7's WKV over `s.n_tok` tokens: per head and token,
/// `S ← S·(diag(w) + a·bᵀ) + v·kᵀ`, `y = S·r` (the same as `n_tok` calls of
/// `kiln_cpu::ops::wkv7_step`).
pub fn wkv7(rec: &mut Recorder, io: Wkv7Io<'_>, s: WkvShape) -> Result<()> {
    let kernel = rec.gpu().kernel(&wkv7_key())?;
    let params = wkv_check(
        rec,
        "wkv7",
        s,
        &io.state,
        &[
            ("r", &io.r),
            ("w", &io.w),
            ("k", &io.k),
            ("v", &io.v),
            ("a", &io.a),
            ("b", &io.b),
            ("y", &io.y),
        ],
    )?;
    rec.dispatch(
        &kernel,
        [s.n_head, 1, 1],
        &params,
        &[io.state, io.r, io.w, io.k, io.v, io.a, io.b, io.y],
    )
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ShiftParams {
    d: u32,
    n_tok: u32,
    n_mix: u32,
    mix_stride: u32,
}

/// Bytes from one mix's output of [`token_shift`] to the next: `n_tok · d` floats rounded up to
/// the device's storage offset alignment, so each mix's output can be bound on its own.
pub fn mix_stride_bytes(rec: &Recorder, n_tok: u32, d: u32) -> u64 {
    let align = u64::from(rec.gpu().limits().min_storage_buffer_offset_alignment).max(4);
    (u64::from(n_tok) * u64::from(d) * 4).next_multiple_of(align)
}

/// Records the token shift of `n_tok` tokens of `d` channels for `n_mix` mix vectors:
/// `out[m][t] = x[t] + (x[t-1] - x[t])·mu[m]` with `x[-1] = prev`, then `prev = x[n_tok-1]`.
/// `x` is `(n_tok, d)`, `prev` `(d)`, `mu` `(n_mix, d)`; mix `m`'s `(n_tok, d)` output starts
/// [`mix_stride_bytes`]` · m` bytes into `out`.
#[allow(
    clippy::too_many_arguments,
    reason = "one argument per binding and parameter"
)]
pub fn token_shift(
    rec: &mut Recorder,
    x: View<'_>,
    prev: View<'_>,
    mu: View<'_>,
    out: View<'_>,
    d: u32,
    n_tok: u32,
    n_mix: u32,
) -> Result<()> {
    const OP: &str = "token_shift";
    if d == 0 || n_tok == 0 || n_mix == 0 {
        return Err(shape(
            OP,
            format!("{d} channels, {n_tok} tokens, {n_mix} mixes: all must be non-zero"),
        ));
    }
    let stride = mix_stride_bytes(rec, n_tok, d);
    need(OP, "x", &x, u64::from(n_tok) * u64::from(d) * 4)?;
    need(OP, "prev", &prev, u64::from(d) * 4)?;
    need(OP, "mu", &mu, u64::from(n_mix) * u64::from(d) * 4)?;
    need(
        OP,
        "out",
        &out,
        stride * u64::from(n_mix - 1) + u64::from(n_tok) * u64::from(d) * 4,
    )?;
    let mix_stride = u32::try_from(stride / 4).map_err(|_| {
        shape(
            OP,
            format!("{n_tok} tokens of {d} are too many for one call"),
        )
    })?;
    let kernel = rec.gpu().kernel(&token_shift_key())?;
    let groups = rec.gpu().grid(d.div_ceil(kernel.spec.workgroup_size[0]));
    let params = ShiftParams {
        d,
        n_tok,
        n_mix,
        mix_stride,
    };
    rec.dispatch(&kernel, groups, &params, &[x, prev, mu, out])
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ActParams {
    n: u32,
}

/// Records `x = max(x, 0)²` for the first `n` values of `x`, in place.
pub fn relu_sq(rec: &mut Recorder, x: View<'_>, n: u32) -> Result<()> {
    need("relu_sq", "x", &x, u64::from(n) * 4)?;
    let kernel = rec.gpu().kernel(&ffn_act_key(FfnAct::ReluSq))?;
    let groups = rec
        .gpu()
        .grid(n.div_ceil(kernel.spec.workgroup_size[0]).max(1));
    rec.dispatch(&kernel, groups, &ActParams { n }, &[x])
}

/// Records `x = sigmoid(g)·x` for the first `n` values, in place; `x` and `g` must not overlap.
pub fn sigmoid_gate(rec: &mut Recorder, x: View<'_>, g: View<'_>, n: u32) -> Result<()> {
    need("sigmoid_gate", "x", &x, u64::from(n) * 4)?;
    need("sigmoid_gate", "g", &g, u64::from(n) * 4)?;
    let kernel = rec.gpu().kernel(&ffn_act_key(FfnAct::SigmoidGate))?;
    let groups = rec
        .gpu()
        .grid(n.div_ceil(kernel.spec.workgroup_size[0]).max(1));
    rec.dispatch(&kernel, groups, &ActParams { n }, &[x, g])
}

/// A weight matrix of `rows` rows of `k` in `wtype`, in one storage binding.
#[derive(Clone, Copy, Debug)]
pub struct Linear<'a> {
    pub w: View<'a>,
    pub wtype: WType,
    pub rows: u32,
    pub k: u32,
}

/// Scratch buffers for quantized activations, sized for the largest `(n_tok, k)` input
/// ([`QAct::sizes`]); `xs` is read only by Q4_1 and Q4_K weights but always bound here.
#[derive(Clone, Copy, Debug)]
pub struct QScratch<'a> {
    pub xq: View<'a>,
    pub xd: View<'a>,
    pub xs: View<'a>,
}

/// `y (m, rows) = x (m, k) · Wᵀ`: f32 activations for F16/F32 weights, otherwise quantized the
/// way llama.cpp (and kiln-cpu's `ActBuffer`) pairs with the weight type.
fn linear(
    rec: &mut Recorder,
    split: Split,
    lin: &Linear<'_>,
    x: View<'_>,
    q: Option<&QScratch<'_>>,
    y: View<'_>,
    m: u32,
) -> Result<()> {
    let s = GemvShape {
        wtype: lin.wtype,
        k: lin.k,
        rows: lin.rows,
        m,
        y_stride: lin.rows,
        y_offset: 0,
        accumulate: false,
    };
    match ActQuant::for_weights(lin.wtype) {
        None => gemv(rec, split, lin.w, x, y, s),
        Some(quant) => {
            let q = q.ok_or_else(|| {
                shape(
                    "channel_mix",
                    format!(
                        "{:?} weights need the quantized-activation scratch",
                        lin.wtype
                    ),
                )
            })?;
            let qa = QAct {
                quant,
                xq: q.xq,
                xd: q.xd,
                xs: q.xs,
            };
            quantize(rec, x, qa, m, lin.k)?;
            gemv_q8(rec, split, lin.w, qa, y, s)
        }
    }
}

/// The weights of an RWKV channel mix; `wr` and the second row of `mu` for RWKV-6 only.
#[derive(Clone, Copy, Debug)]
pub struct ChannelMix<'a> {
    /// `(n_mix, d)`: `μₖ`, then `μᵣ` for RWKV-6.
    pub mu: View<'a>,
    /// `(d_ffn, d)`.
    pub wk: Linear<'a>,
    /// `(d, d_ffn)`.
    pub wv: Linear<'a>,
    /// `(d, d)`, RWKV-6 only.
    pub wr: Option<Linear<'a>>,
}

/// Scratch of one [`channel_mix`] call.
#[derive(Clone, Copy, Debug)]
pub struct ChannelMixScratch<'a> {
    /// The token-shifted inputs, `n_mix` outputs [`mix_stride_bytes`] apart; starts at a
    /// storage-aligned offset (as every bound view must), so each output can be bound.
    pub shifted: View<'a>,
    /// `(n_tok, d_ffn)`.
    pub k: View<'a>,
    /// `(n_tok, d)` receptance, RWKV-6 only.
    pub r: Option<View<'a>>,
    /// Quantized activations of up to `(n_tok, max(d, d_ffn))`, for quantized weights.
    pub q: Option<QScratch<'a>>,
}

/// Records RWKV's channel mix over `n_tok` tokens of `x (n_tok, d)` with the shift state `prev
/// (d)`: `xk = x + (x₋₁ - x)·μₖ`, `k = relu(Wₖ·xk)²`, `out = Wᵥ·k`, and for RWKV-6
/// additionally `xr = x + (x₋₁ - x)·μᵣ`, `out = sigmoid(Wᵣ·xr)·out`; afterwards `prev` holds the
/// last token (the same as `n_tok` calls of `kiln_cpu::ops::channel_mix`). Each matrix must fit
/// one storage binding.
#[allow(
    clippy::too_many_arguments,
    reason = "one argument per binding and parameter"
)]
pub fn channel_mix(
    rec: &mut Recorder,
    split: Split,
    m: &ChannelMix<'_>,
    s: &ChannelMixScratch<'_>,
    x: View<'_>,
    prev: View<'_>,
    out: View<'_>,
    n_tok: u32,
) -> Result<()> {
    const OP: &str = "channel_mix";
    let (d, f) = (m.wk.k, m.wk.rows);
    if m.wv.rows != d || m.wv.k != f {
        return Err(shape(
            OP,
            format!("wv is {}x{}, needs {d}x{f}", m.wv.rows, m.wv.k),
        ));
    }
    // RWKV-6's receptance gate: its matrix and the scratch its output goes to.
    let gate = match (&m.wr, s.r) {
        (Some(wr), _) if wr.rows != d || wr.k != d => {
            return Err(shape(
                OP,
                format!("wr is {}x{}, needs {d}x{d}", wr.rows, wr.k),
            ));
        }
        (Some(wr), Some(r)) => Some((wr, r)),
        (Some(_), None) => {
            return Err(shape(OP, "RWKV-6 (wr given) needs the `r` scratch".into()));
        }
        (None, _) => None,
    };
    // Everything the GEMVs would refuse is checked before anything is recorded.
    let t = u64::from(n_tok);
    let mut quantized = false;
    for (name, l) in [("wk", &m.wk), ("wv", &m.wv)]
        .into_iter()
        .chain(gate.map(|(wr, _)| ("wr", wr)))
    {
        let row_bytes = l.wtype.row_bytes(l.k)?;
        need(OP, name, &l.w, u64::from(l.rows) * u64::from(row_bytes))?;
        quantized |= ActQuant::for_weights(l.wtype).is_some();
    }
    need(OP, "out", &out, t * u64::from(d) * 4)?;
    need(OP, "k scratch", &s.k, t * u64::from(f) * 4)?;
    if let Some((_, r)) = &gate {
        need(OP, "r scratch", r, t * u64::from(d) * 4)?;
    }
    match &s.q {
        Some(q) => {
            let (bq, bd, bs) = QAct::sizes(n_tok, d.max(f));
            need(OP, "xq scratch", &q.xq, bq)?;
            need(OP, "xd scratch", &q.xd, bd)?;
            need(OP, "xs scratch", &q.xs, bs)?;
        }
        None if quantized => {
            return Err(shape(
                OP,
                "quantized weights need the quantized-activation scratch".into(),
            ));
        }
        None => {}
    }

    let n_mix = if gate.is_some() { 2 } else { 1 };
    token_shift(rec, x, prev, m.mu, s.shifted, d, n_tok, n_mix)?;
    let stride = mix_stride_bytes(rec, n_tok, d);
    let mixed = |i: u64| {
        View::new(
            s.shifted.buffer,
            s.shifted.offset + i * stride,
            t * u64::from(d) * 4,
        )
    };
    let q = s.q.as_ref();
    if let Some((wr, r)) = gate {
        linear(rec, split, wr, mixed(1), q, r, n_tok)?;
    }
    linear(rec, split, &m.wk, mixed(0), q, s.k, n_tok)?;
    relu_sq(rec, s.k, n_tok * f)?;
    linear(rec, split, &m.wv, s.k, q, out, n_tok)?;
    if let Some((_, r)) = gate {
        sigmoid_gate(rec, out, r, n_tok * d)?;
    }
    Ok(())
}
