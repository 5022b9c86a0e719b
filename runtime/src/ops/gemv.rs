//! Quantized matrix-vector products with dequantization fused in, and the embedding gather:
//! weights stay in their GGUF block format on the GPU and are read in place.

use crate::error::{Error, Result};
use crate::gpu::{DType, KernelKey, Recorder, Shifted, View, params};
use crate::ops::need;
use crate::ops::prep::{PrepIn, PrepOut};
use crate::ops::reduce::Combine;
use crate::tune::{GemvOp, GemvPick};

/// A weight storage format the kernels read in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WType {
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
    Q4K,
    Q6K,
    F16,
    F32,
}

impl WType {
    /// Every format, in manifest order.
    pub const ALL: [WType; 8] = [
        WType::Q4_0,
        WType::Q4_1,
        WType::Q5_0,
        WType::Q8_0,
        WType::Q4K,
        WType::Q6K,
        WType::F16,
        WType::F32,
    ];

    /// The manifest word of this format.
    pub fn word(self) -> &'static str {
        match self {
            WType::Q4_0 => "q4_0",
            WType::Q4_1 => "q4_1",
            WType::Q5_0 => "q5_0",
            WType::Q8_0 => "q8_0",
            WType::Q4K => "q4_k",
            WType::Q6K => "q6_k",
            WType::F16 => "f16",
            WType::F32 => "f32",
        }
    }

    /// Whether its int8 dot products read the activations' per-unit sums (`xs`, an `XS`
    /// kernel variant): only the formats with a min term.
    pub fn reads_act_sums(self) -> bool {
        matches!(self, WType::Q4_1 | WType::Q4K)
    }

    /// The CPU path's name for the same block format.
    pub fn qtype(self) -> kiln_cpu::QType {
        use kiln_cpu::QType;
        match self {
            WType::Q4_0 => QType::Q4_0,
            WType::Q4_1 => QType::Q4_1,
            WType::Q5_0 => QType::Q5_0,
            WType::Q8_0 => QType::Q8_0,
            WType::Q4K => QType::Q4_K,
            WType::Q6K => QType::Q6_K,
            WType::F16 => QType::F16,
            WType::F32 => QType::F32,
        }
    }

    /// Weights per block.
    pub fn block_elems(self) -> u32 {
        match self {
            WType::Q4K | WType::Q6K => 256,
            _ => 32,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> u32 {
        match self {
            WType::Q4_0 => 18,
            WType::Q4_1 => 20,
            WType::Q5_0 => 22,
            WType::Q8_0 => 34,
            WType::Q4K => 144,
            WType::Q6K => 210,
            WType::F16 => 64,
            WType::F32 => 128,
        }
    }

    /// Bytes of one row of `k` weights, or a shape error when `k` is not a whole number of blocks.
    pub fn row_bytes(self, k: u32) -> Result<u32> {
        if k == 0 || !k.is_multiple_of(self.block_elems()) {
            return Err(Error::Shape {
                op: "gemv",
                detail: format!(
                    "rows of {k} weights are not a whole number of {}-weight {:?} blocks",
                    self.block_elems(),
                    self
                ),
            });
        }
        Ok(k / self.block_elems() * self.block_bytes())
    }
}

/// How a gemv splits its work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// One workgroup per weight row, reduced with subgroups or shared memory (GPUs).
    Group(Combine),
    /// One invocation per weight row, no reduction (CPU-like adapters such as lavapipe).
    Thread,
}

impl Split {
    /// The device's default ([`crate::tune::Tuning::default_gemv`]): per-thread rows on
    /// software adapters, workgroup rows on GPUs, unless the options override it.
    pub fn best(gpu: &crate::gpu::Gpu) -> Split {
        gpu.tuning().default_gemv(GemvOp::Q8).split
    }

    /// `key` with this split's parameters (`SPLIT`, and `SUBGROUP` for the group split).
    pub fn key(self, key: KernelKey) -> KernelKey {
        match self {
            Split::Group(combine) => key
                .word("SPLIT", "group")
                .flag("SUBGROUP", combine == Combine::Subgroup),
            Split::Thread => key.word("SPLIT", "thread"),
        }
    }
}

pub fn gemv_key(wtype: WType, act: DType, split: Split, accumulate: bool) -> KernelKey {
    let key = KernelKey::new("gemv")
        .word("WTYPE", wtype.word())
        .word("ADTYPE", act.wgsl())
        .uint("WG_SIZE", params::gemv::WG_SIZE)
        .flag("ACC", accumulate);
    split.key(key)
}

pub fn embed_key(wtype: WType) -> KernelKey {
    KernelKey::new("embed")
        .word("WTYPE", wtype.word())
        .uint("WG_SIZE", params::embed::WG_SIZE)
}

/// Shape of one gemv: `m` activation rows of length `k` against `rows` weight rows, writing
/// columns `y_offset..y_offset + rows` of output rows `y_stride` floats apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemvShape {
    pub wtype: WType,
    pub k: u32,
    pub rows: u32,
    pub m: u32,
    pub y_stride: u32,
    pub y_offset: u32,
    /// Add to the output instead of overwriting it (a fused residual add).
    pub accumulate: bool,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GemvParams {
    k: u32,
    rows: u32,
    row_bytes: u32,
    m: u32,
    x_stride: u32,
    y_stride: u32,
    y_offset: u32,
    pad: u32,
}

/// The grid and uniform parameters of a gemv or gemv_q8 dispatch.
fn gemv_launch(
    rec: &Recorder,
    kernel: &crate::gpu::Kernel,
    split: Split,
    s: &GemvShape,
    row_bytes: u32,
) -> ([u32; 3], GemvParams) {
    let groups = match split {
        Split::Group(_) => rec.gpu().grid(s.rows),
        Split::Thread => rec
            .gpu()
            .grid(s.rows.div_ceil(kernel.spec.workgroup_size[0])),
    };
    let params = GemvParams {
        k: s.k,
        rows: s.rows,
        row_bytes,
        m: s.m,
        x_stride: s.k / 4,
        y_stride: s.y_stride,
        y_offset: s.y_offset,
        pad: 0,
    };
    (groups, params)
}

/// Records `y[j, y_offset + r] (+)= W[r, :] . x[j, :]`.
pub fn gemv(
    rec: &mut Recorder,
    split: Split,
    w: View<'_>,
    x: View<'_>,
    y: View<'_>,
    s: GemvShape,
) -> Result<()> {
    gemv_with(rec, split, DType::F32, w, x, y, s)
}

/// [`gemv`] on activations of type `act`: f32, or f16 (W4A16, W8A16: half the activation
/// bytes; needs SHADER_F16). Products accumulate in f32 either way.
pub fn gemv_with(
    rec: &mut Recorder,
    split: Split,
    act: DType,
    w: View<'_>,
    x: View<'_>,
    y: View<'_>,
    s: GemvShape,
) -> Result<()> {
    let row_bytes = s.wtype.row_bytes(s.k)?;
    if s.rows == 0 || s.m == 0 || s.y_offset + s.rows > s.y_stride {
        return Err(Error::Shape {
            op: "gemv",
            detail: format!("bad shape {s:?}"),
        });
    }
    need("gemv", "w", &w, u64::from(s.rows) * u64::from(row_bytes))?;
    need(
        "gemv",
        "x",
        &x,
        u64::from(s.m) * u64::from(s.k) * act.size(),
    )?;
    need("gemv", "y", &y, u64::from(s.m) * u64::from(s.y_stride) * 4)?;
    let kernel = rec
        .gpu()
        .kernel(&gemv_key(s.wtype, act, split, s.accumulate))?;
    let (groups, params) = gemv_launch(rec, &kernel, split, &s, row_bytes);
    rec.dispatch(&kernel, groups, &params, &[w, x, y])
}

/// Which rows of an embedding table one buffer holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EmbedShape {
    pub wtype: WType,
    /// Row length.
    pub k: u32,
    /// First table row in this part, and how many rows it holds.
    pub row0: u32,
    pub rows: u32,
    /// Tokens to gather, read from `tokens[t0..t0 + n_tok]`.
    pub n_tok: u32,
    pub t0: u32,
    /// Multiplies every gathered value (Gemma scales embeddings by sqrt(d_model)).
    pub scale: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct EmbedParams {
    k: u32,
    row_bytes: u32,
    n_tok: u32,
    t0: u32,
    scale: f32,
    row0: u32,
    rows: u32,
    pad: u32,
}

/// Records `out[t, :] = scale * E[tokens[t0 + t], :]` for the tokens whose rows this part holds
/// (in a plan, `t0` follows the replayed step's position).
pub fn embed(
    rec: &mut Recorder,
    table: View<'_>,
    tokens: View<'_>,
    out: View<'_>,
    s: EmbedShape,
) -> Result<()> {
    let row_bytes = s.wtype.row_bytes(s.k)?;
    need(
        "embed",
        "table",
        &table,
        u64::from(s.rows) * u64::from(row_bytes),
    )?;
    need("embed", "tokens", &tokens, u64::from(s.t0 + s.n_tok) * 4)?;
    need(
        "embed",
        "out",
        &out,
        u64::from(s.n_tok) * u64::from(s.k) * 4,
    )?;
    let kernel = rec.gpu().kernel(&embed_key(s.wtype))?;
    let groups = rec.gpu().grid(s.n_tok.max(1));
    let params = EmbedParams {
        k: s.k,
        row_bytes,
        n_tok: s.n_tok,
        t0: s.t0,
        scale: s.scale,
        row0: s.row0,
        rows: s.rows,
        pad: 0,
    };
    // In a plan, a later step reads its token `delta` slots further on.
    let shift = Shifted {
        params,
        f: move |p: &mut EmbedParams, delta: u32| {
            p.t0 += delta;
            groups
        },
    };
    rec.dispatch_shifting(&kernel, shift, &[table, tokens, out])
}

/// The int8 activation format llama.cpp's CPU path pairs with each weight format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActQuant {
    /// Blocks of 32, f16 scale (Q4_0, Q5_0, Q8_0 weights).
    Q8_0,
    /// Blocks of 32, f16 scale and scaled sum (Q4_1 weights).
    Q8_1,
    /// Blocks of 256 scaled by the signed extreme (Q4_K, Q6_K weights).
    Q8K,
}

impl ActQuant {
    /// The activation format for `wtype`, or None where activations stay f32 (F16, F32).
    pub fn for_weights(wtype: WType) -> Option<ActQuant> {
        match wtype {
            WType::Q4_0 | WType::Q5_0 | WType::Q8_0 => Some(ActQuant::Q8_0),
            WType::Q4_1 => Some(ActQuant::Q8_1),
            WType::Q4K | WType::Q6K => Some(ActQuant::Q8K),
            WType::F16 | WType::F32 => None,
        }
    }

    /// The manifest word of this format (`QTYPE=q8_0`).
    pub fn word(self) -> &'static str {
        match self {
            ActQuant::Q8_0 => "q8_0",
            ActQuant::Q8_1 => "q8_1",
            ActQuant::Q8K => "q8_k",
        }
    }

    pub fn block(self) -> u32 {
        match self {
            ActQuant::Q8K => 256,
            _ => 32,
        }
    }

    /// Whether the format carries per-unit sums (`xs`).
    pub fn has_sums(self) -> bool {
        self != ActQuant::Q8_0
    }
}

/// Quantized activations on the GPU: `xq` (m, k/4) words of int8, `xd` and `xs` (m, k/32).
#[derive(Clone, Copy, Debug)]
pub struct QAct<'a> {
    pub quant: ActQuant,
    pub xq: View<'a>,
    pub xd: View<'a>,
    pub xs: View<'a>,
}

/// The activations a quantized product reads: f32 rows, or rows quantized by [`quantize`] for
/// the weights' type (the format [`gemv`] or [`gemv_q8`] of the same weights reads).
#[derive(Clone, Copy, Debug)]
pub enum ActInput<'a> {
    /// f32 activations (m, k).
    F32(View<'a>),
    /// Activations quantized for the weights' type.
    Q8(QAct<'a>),
}

impl QAct<'_> {
    /// Bytes of (xq, xd, xs) for `m` rows of `k`.
    pub fn sizes(m: u32, k: u32) -> (u64, u64, u64) {
        let n = u64::from(m) * u64::from(k);
        (n, n / 8, n / 8)
    }
}

/// How `gemv_q8` multiplies 4 int8 weights by 4 int8 activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IntDot {
    /// WGSL's `dot4I8Packed` on the packed bytes (`DOT4=1`): one instruction where the
    /// hardware has a packed int8 dot product.
    Packed,
    /// Both words unpacked to `vec4<i32>` and multiplied (`DOT4=0`): works everywhere.
    Unpacked,
}

impl IntDot {
    /// The device's default ([`crate::tune::Tuning::default_gemv`]): packed where the device
    /// has it ([`crate::gpu::Capabilities::dot4`]) and it is not an Apple GPU, unpacked
    /// elsewhere.
    pub fn best(gpu: &crate::gpu::Gpu) -> IntDot {
        gpu.tuning().default_gemv(GemvOp::Q8).dot
    }
}

pub fn gemv_q8_key(wtype: WType, pick: GemvPick, accumulate: bool) -> KernelKey {
    let GemvPick { split, dot, wg } = pick;
    let mut key = KernelKey::new("gemv_q8")
        .word("WTYPE", wtype.word())
        .uint("WG_SIZE", wg)
        .flag("ACC", accumulate)
        .flag("DOT4", dot == IntDot::Packed);
    if wtype.reads_act_sums() {
        key = key.uint("XS", params::gemv_q8::XS);
    }
    split.key(key)
}

/// Records the quantization of `x` (m, k) f32 into `q` (a [`crate::ops::prep`] that only
/// quantizes).
pub fn quantize(rec: &mut Recorder, x: View<'_>, q: QAct<'_>, m: u32, k: u32) -> Result<()> {
    if k == 0 || !k.is_multiple_of(q.quant.block()) {
        return Err(Error::Shape {
            op: "quantize",
            detail: format!("rows of {k} are not whole {:?} blocks", q.quant),
        });
    }
    crate::ops::prep::prep(rec, &PrepIn::plain(x, k), PrepOut::Q8(q), m)
}

/// Records `y[j, y_offset + r] (+)= W[r, :] . x[j, :]` on activations quantized for `W`'s type,
/// with the int8 dot product that suits the device ([`IntDot::best`]) and the default workgroup
/// size.
pub fn gemv_q8(
    rec: &mut Recorder,
    split: Split,
    w: View<'_>,
    x: QAct<'_>,
    y: View<'_>,
    s: GemvShape,
) -> Result<()> {
    let pick = GemvPick {
        split,
        ..rec.gpu().tuning().default_gemv(GemvOp::Q8)
    };
    gemv_q8_with(rec, pick, w, x, y, s)
}

/// [`gemv_q8`] with the variant chosen by the caller: split, int8 dot product (`Packed` on a
/// device without it is [`Error::MissingFeature`]) and workgroup size.
pub fn gemv_q8_with(
    rec: &mut Recorder,
    pick: GemvPick,
    w: View<'_>,
    x: QAct<'_>,
    y: View<'_>,
    s: GemvShape,
) -> Result<()> {
    let row_bytes = s.wtype.row_bytes(s.k)?;
    if ActQuant::for_weights(s.wtype) != Some(x.quant)
        || s.rows == 0
        || s.m == 0
        || s.y_offset + s.rows > s.y_stride
    {
        return Err(Error::Shape {
            op: "gemv_q8",
            detail: format!("bad shape {s:?} for activations {:?}", x.quant),
        });
    }
    let (bq, bd, bs) = QAct::sizes(s.m, s.k);
    need("gemv_q8", "w", &w, u64::from(s.rows) * u64::from(row_bytes))?;
    need("gemv_q8", "xq", &x.xq, bq)?;
    need("gemv_q8", "xd", &x.xd, bd)?;
    need(
        "gemv_q8",
        "y",
        &y,
        u64::from(s.m) * u64::from(s.y_stride) * 4,
    )?;
    let kernel = rec
        .gpu()
        .kernel(&gemv_q8_key(s.wtype, pick, s.accumulate))?;
    let (groups, params) = gemv_launch(rec, &kernel, pick.split, &s, row_bytes);
    if s.wtype.reads_act_sums() {
        need("gemv_q8", "xs", &x.xs, bs)?;
        rec.dispatch(&kernel, groups, &params, &[w, x.xq, x.xd, x.xs, y])
    } else {
        rec.dispatch(&kernel, groups, &params, &[w, x.xq, x.xd, y])
    }
}
