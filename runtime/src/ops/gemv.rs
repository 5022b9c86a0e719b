//! Quantized matrix-vector products with dequantization fused in, and the embedding gather:
//! weights stay in their GGUF block format on the GPU and are read in place.

use crate::error::{Error, Result};
use crate::gpu::{KernelKey, Recorder, View};
use crate::ops::need;
use crate::ops::reduce::Combine;

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

pub fn gemv_key(wtype: WType, combine: Combine, accumulate: bool) -> KernelKey {
    KernelKey::new("gemv")
        .word("WTYPE", wtype.word())
        .uint("WG_SIZE", 64)
        .flag("SUBGROUP", combine == Combine::Subgroup)
        .flag("ACC", accumulate)
}

pub fn embed_key(wtype: WType) -> KernelKey {
    KernelKey::new("embed")
        .word("WTYPE", wtype.word())
        .uint("WG_SIZE", 64)
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

/// Records `y[j, y_offset + r] (+)= W[r, :] . x[j, :]`.
pub fn gemv(
    rec: &mut Recorder,
    combine: Combine,
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
    need("gemv", "x", &x, u64::from(s.m) * u64::from(s.k) * 4)?;
    need("gemv", "y", &y, u64::from(s.m) * u64::from(s.y_stride) * 4)?;
    let kernel = rec.gpu().kernel(&gemv_key(s.wtype, combine, s.accumulate))?;
    let groups = rec.gpu().grid(s.rows);
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

/// Records `out[t, :] = scale * E[tokens[t0 + t], :]` for the tokens whose rows this part holds.
pub fn embed(
    rec: &mut Recorder,
    table: View<'_>,
    tokens: View<'_>,
    out: View<'_>,
    s: EmbedShape,
) -> Result<()> {
    let row_bytes = s.wtype.row_bytes(s.k)?;
    need("embed", "table", &table, u64::from(s.rows) * u64::from(row_bytes))?;
    need("embed", "tokens", &tokens, u64::from(s.t0 + s.n_tok) * 4)?;
    need("embed", "out", &out, u64::from(s.n_tok) * u64::from(s.k) * 4)?;
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
    rec.dispatch(&kernel, groups, &params, &[table, tokens, out])
}
