//! Preparing a product's input from the residual stream (shaders/shared/prep.wgsl): the residual
//! add (through Gemma's post-norm where there is one), the new residual stored, RMSNorm, and the
//! int8 quantization for the weights' type, in one pass over each row. As a dispatch of its own
//! ([`prep`], before a tiled matmul or a GEMV that cannot take the prologue) or as the prologue
//! of the fused GEMVs ([`crate::ops::gemv_prep`]).

use crate::error::{Error, Result};
use crate::gpu::{Gpu, KernelKey, Recorder, View, params};
use crate::ops::gemv::{ActQuant, QAct};
use crate::ops::need;

/// `r = x + t`, with `t` RMS-normed by the weight at `post` first where given.
#[derive(Clone, Copy, Debug)]
pub struct Add<'a> {
    /// (x_row0 + m, k) f32.
    pub t: View<'a>,
    /// Float offset in `vecs` of the post-norm weight (Gemma 3), if any.
    pub post: Option<u32>,
}

/// What a product reads, made from rows of `x` (see the module docs): per row,
/// `r = x (+ [post-normed] t)`, stored to `write` if given, then `v = [RMS-normed] r`.
#[derive(Clone, Copy, Debug)]
pub struct PrepIn<'a> {
    /// (x_row0 + m, k) f32: the residual stream, or the product's plain input.
    pub x: View<'a>,
    pub add: Option<Add<'a>>,
    /// Float offset in `vecs` of the RMSNorm weight, if `r` is normed.
    pub norm: Option<u32>,
    /// The model's vectors (norm weights), needed by `norm` and a post-norm.
    pub vecs: Option<View<'a>>,
    /// Where `r` is stored, (x_row0 + m, k) f32 (a buffer other than `x` and `t`).
    pub write: Option<View<'a>>,
    /// Row length.
    pub k: u32,
    pub eps: f32,
    /// The first row of `x` (and `t`, `write`) to use.
    pub x_row0: u32,
}

impl<'a> PrepIn<'a> {
    /// `v = x`: rows read as they are (a quantization only).
    pub fn plain(x: View<'a>, k: u32) -> PrepIn<'a> {
        PrepIn {
            x,
            add: None,
            norm: None,
            vecs: None,
            write: None,
            k,
            eps: 0.0,
            x_row0: 0,
        }
    }

    /// The uniform block the kernels read (`struct Prep`).
    pub(crate) fn uniform(&self) -> PrepUniform {
        let mut flags = 0;
        if let Some(a) = &self.add {
            flags |= RES;
            if a.post.is_some() {
                flags |= POST;
            }
        }
        if self.norm.is_some() {
            flags |= NORM;
        }
        if self.write.is_some() {
            flags |= WRITE;
        }
        PrepUniform {
            k: self.k,
            flags,
            post_w: self.add.and_then(|a| a.post).unwrap_or(0),
            norm_w: self.norm.unwrap_or(0),
            eps: self.eps,
            x_row0: self.x_row0,
            pad: [0; 2],
        }
    }

    /// Checks the views for `m` rows; `op` names the caller in errors.
    pub(crate) fn check(&self, op: &'static str, m: u32) -> Result<()> {
        let bad = |detail: String| Error::Shape { op, detail };
        if self.k == 0 || !self.k.is_multiple_of(32) || m == 0 {
            return Err(bad(format!(
                "{m} rows of {}: rows must be a positive multiple of 32 long",
                self.k
            )));
        }
        let rows = u64::from(self.x_row0) + u64::from(m);
        let bytes = rows * u64::from(self.k) * 4;
        need(op, "x", &self.x, bytes)?;
        if let Some(a) = &self.add {
            need(op, "t", &a.t, bytes)?;
        }
        if let Some(w) = &self.write {
            need(op, "write", w, bytes)?;
            let overlaps = |v: &View<'_>| {
                v.buffer == w.buffer && v.offset < w.offset + w.size && w.offset < v.offset + v.size
            };
            if overlaps(&self.x) || self.add.as_ref().is_some_and(|a| overlaps(&a.t)) {
                return Err(bad(
                    "the new residual must go to a buffer range other than the inputs'".into(),
                ));
            }
        }
        let vectors = [self.norm, self.add.and_then(|a| a.post)];
        for at in vectors.into_iter().flatten() {
            let Some(v) = &self.vecs else {
                return Err(bad(
                    "a norm weight was named but no vector buffer given".into()
                ));
            };
            need(op, "vecs", v, (u64::from(at) + u64::from(self.k)) * 4)?;
        }
        Ok(())
    }

    /// The four bindings x_in, t, vecs, x_out, with `gpu`'s placeholders for the unused ones.
    pub(crate) fn views<'b>(&self, gpu: &'b Gpu) -> [View<'b>; 4]
    where
        'a: 'b,
    {
        [
            self.x,
            self.add.map_or_else(|| gpu.placeholder(false), |a| a.t),
            self.vecs.unwrap_or_else(|| gpu.placeholder(false)),
            self.write.unwrap_or_else(|| gpu.placeholder(true)),
        ]
    }
}

const RES: u32 = 1;
const POST: u32 = 2;
const NORM: u32 = 4;
const WRITE: u32 = 8;

/// shared/prep.wgsl's `struct Prep`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct PrepUniform {
    k: u32,
    flags: u32,
    post_w: u32,
    norm_w: u32,
    eps: f32,
    x_row0: u32,
    pad: [u32; 2],
}

/// Where a prep's values go: int8 units for a quantized product, or f32 rows.
#[derive(Clone, Copy, Debug)]
pub enum PrepOut<'a> {
    /// Quantized for the format's weights (`xq`, `xd`, `xs` as [`QAct::sizes`] gives them).
    Q8(QAct<'a>),
    /// (m, k) f32 (for f16 and f32 weights).
    F32(View<'a>),
}

pub fn prep_key(out: Option<ActQuant>) -> KernelKey {
    KernelKey::new("prep")
        .word("QTYPE", out.map_or("f32", ActQuant::word))
        .uint("WG_SIZE", params::prep::WG_SIZE)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    pre: PrepUniform,
    m: u32,
    pad: [u32; 3],
}

/// Largest Q8_K row `prep` takes (its workgroup keeps one extreme per 256 values).
pub const MAX_Q8K_K: u32 = 128 * 256;

/// Records the preparation of `m` rows of `input` into `out`, one workgroup per row.
pub fn prep(rec: &mut Recorder, input: &PrepIn<'_>, out: PrepOut<'_>, m: u32) -> Result<()> {
    input.check("prep", m)?;
    let k = input.k;
    let quant = match out {
        PrepOut::Q8(q) => Some(q.quant),
        PrepOut::F32(_) => None,
    };
    if quant == Some(ActQuant::Q8K) && (!k.is_multiple_of(256) || k > MAX_Q8K_K) {
        return Err(Error::Shape {
            op: "prep",
            detail: format!(
                "rows of {k} cannot be Q8_K blocks: a multiple of 256 up to {MAX_Q8K_K} is needed"
            ),
        });
    }
    let kernel = rec.gpu().kernel(&prep_key(quant))?;
    let params = Params {
        pre: input.uniform(),
        m,
        pad: [0; 3],
    };
    let groups = rec.gpu().grid(m);
    let gpu = rec.gpu().clone();
    let [x, t, vecs, x_out] = input.views(&gpu);
    match out {
        PrepOut::Q8(q) => {
            let (bq, bd, bs) = QAct::sizes(m, k);
            need("prep", "xq", &q.xq, bq)?;
            need("prep", "xd", &q.xd, bd)?;
            need("prep", "xs", &q.xs, bs)?;
            rec.dispatch(
                &kernel,
                groups,
                &params,
                &[x, t, vecs, x_out, q.xq, q.xd, q.xs],
            )
        }
        PrepOut::F32(y) => {
            need("prep", "y", &y, u64::from(m) * u64::from(k) * 4)?;
            rec.dispatch(&kernel, groups, &params, &[x, t, vecs, x_out, y])
        }
    }
}
