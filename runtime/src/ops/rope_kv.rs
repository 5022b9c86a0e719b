//! The step between the q/k/v projection and attention in one dispatch (shaders/rope_kv.wgsl):
//! biases, per-head q/k RMSNorm, RoPE on q and k (with per-pair frequency divisors where the
//! model has them), q out for attention and k, v appended to the KV cache. It replaces up to
//! nine dispatches of the unfused path (three bias adds, two norms, two rotations, two cache
//! stores) with the same arithmetic.

use crate::error::{Error, Result};
use crate::gpu::{KernelKey, Recorder, Shifted, View, grid_of, params};
use crate::ops::attention::KvType;

/// Largest head dimension `rope_kv` takes (its variants' `MAX_HEAD_DIM`).
const MAX_HEAD_DIM: u32 = params::rope_kv::MAX_HEAD_DIM;
use crate::ops::need;
use crate::ops::rope::RopeLayout;

/// Geometry of one call: `n_tok` rows of the projection's output, laid out per token as
/// `n_head` q heads, then `n_kv_head` k heads, then `n_kv_head` v heads, `head_dim` each.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeKv {
    pub n_head: u32,
    pub n_kv_head: u32,
    pub head_dim: u32,
    /// Leading dimensions of each head that rotate.
    pub rot_dims: u32,
    pub n_tok: u32,
    /// Position of the first token.
    pub pos0: u32,
    /// Cache positions per kv head.
    pub capacity: u32,
    pub layout: RopeLayout,
    pub kv: KvType,
    pub base: f32,
    pub freq_scale: f32,
    /// Epsilon of the q/k norms.
    pub eps: f32,
    /// Float offset in `vecs` of the biases: q's, then k's, then v's, back to back (Qwen2).
    pub bias: Option<u32>,
    /// Float offsets in `vecs` of the q-norm and k-norm weights (Gemma 3, Qwen3).
    pub qk_norm: Option<[u32; 2]>,
    /// Float offset in `vecs` of `rot_dims / 2` divisors of the rotation frequencies (Llama 3's
    /// `rope_freqs.weight`).
    pub freq_factors: Option<u32>,
}

impl RopeKv {
    fn heads(&self) -> u32 {
        self.n_head + 2 * self.n_kv_head
    }

    /// Floats per token of the projection's output.
    pub fn row(&self) -> u32 {
        self.heads() * self.head_dim
    }
}

pub fn rope_kv_key(layout: RopeLayout, kv: KvType) -> KernelKey {
    KernelKey::new("rope_kv")
        .word(
            "LAYOUT",
            match layout {
                RopeLayout::Norm => "norm",
                RopeLayout::Neox => "neox",
            },
        )
        .word("KV", kv.word())
        .uint("MAX_HEAD_DIM", MAX_HEAD_DIM)
        .uint("WG_SIZE", params::rope_kv::WG_SIZE)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    rot_dims: u32,
    n_tok: u32,
    pos0: u32,
    capacity: u32,
    flags: u32,
    base: f32,
    freq_scale: f32,
    eps: f32,
    bias: u32,
    q_norm: u32,
    k_norm: u32,
    freq_factors: u32,
    pad: u32,
}

/// Records the step for `s.n_tok` tokens: `qkv` (n_tok, s.row()) f32 in, `q` (n_tok, n_head,
/// head_dim) f32 out, k and v stored into the caches (n_kv_head, capacity, head_dim) at
/// positions pos0... In a plan the positions follow the replayed step.
#[allow(clippy::too_many_arguments, reason = "one argument per binding")]
pub fn rope_kv(
    rec: &mut Recorder,
    qkv: View<'_>,
    vecs: Option<View<'_>>,
    q: View<'_>,
    k_cache: View<'_>,
    v_cache: View<'_>,
    s: RopeKv,
) -> Result<()> {
    let bad = s.head_dim == 0
        || !s.head_dim.is_multiple_of(2)
        || s.head_dim > MAX_HEAD_DIM
        || !s.rot_dims.is_multiple_of(2)
        || s.rot_dims > s.head_dim
        || s.n_kv_head == 0
        || s.n_tok == 0
        || s.pos0 + s.n_tok > s.capacity;
    if bad {
        return Err(Error::Shape {
            op: "rope_kv",
            detail: format!(
                "{s:?}: head_dim must be even and at most {MAX_HEAD_DIM}, rot_dims even and at \
                 most head_dim, and pos0 + n_tok within the cache capacity"
            ),
        });
    }
    let hd = u64::from(s.head_dim);
    need(
        "rope_kv",
        "qkv",
        &qkv,
        u64::from(s.n_tok) * u64::from(s.row()) * 4,
    )?;
    need(
        "rope_kv",
        "q",
        &q,
        u64::from(s.n_tok) * u64::from(s.n_head) * hd * 4,
    )?;
    let cache = u64::from(s.n_kv_head) * u64::from(s.capacity) * hd * s.kv.bytes();
    need("rope_kv", "k_cache", &k_cache, cache)?;
    need("rope_kv", "v_cache", &v_cache, cache)?;
    let mut flags = 0;
    if let Some(at) = s.bias {
        flags |= 1;
        let Some(v) = &vecs else {
            return Err(Error::Shape {
                op: "rope_kv",
                detail: "biases named but no vector buffer given".into(),
            });
        };
        need(
            "rope_kv",
            "vecs",
            v,
            (u64::from(at) + u64::from(s.row())) * 4,
        )?;
    }
    if let Some([nq, nk]) = s.qk_norm {
        flags |= 2;
        let Some(v) = &vecs else {
            return Err(Error::Shape {
                op: "rope_kv",
                detail: "q/k norms named but no vector buffer given".into(),
            });
        };
        need("rope_kv", "vecs", v, (u64::from(nq.max(nk)) + hd) * 4)?;
    }
    if let Some(at) = s.freq_factors {
        flags |= 4;
        let Some(v) = &vecs else {
            return Err(Error::Shape {
                op: "rope_kv",
                detail: "frequency factors named but no vector buffer given".into(),
            });
        };
        need(
            "rope_kv",
            "vecs",
            v,
            (u64::from(at) + u64::from(s.rot_dims / 2)) * 4,
        )?;
    }
    let kernel = rec.gpu().kernel(&rope_kv_key(s.layout, s.kv))?;
    let params = Params {
        n_head: s.n_head,
        n_kv_head: s.n_kv_head,
        head_dim: s.head_dim,
        rot_dims: s.rot_dims,
        n_tok: s.n_tok,
        pos0: s.pos0,
        capacity: s.capacity,
        flags,
        base: s.base,
        freq_scale: s.freq_scale,
        eps: s.eps,
        bias: s.bias.unwrap_or(0),
        q_norm: s.qk_norm.map_or(0, |n| n[0]),
        k_norm: s.qk_norm.map_or(0, |n| n[1]),
        freq_factors: s.freq_factors.unwrap_or(0),
        pad: 0,
    };
    let groups = grid_of(
        s.n_tok * s.heads(),
        rec.gpu().limits().max_compute_workgroups_per_dimension,
    );
    let gpu = rec.gpu().clone();
    let vecs = vecs.unwrap_or_else(|| gpu.placeholder(false));
    let shift = Shifted {
        params,
        f: move |p: &mut Params, delta: u32| {
            p.pos0 += delta;
            groups
        },
    };
    rec.dispatch_shifting(&kernel, shift, &[qkv, vecs, q, k_cache, v_cache])
}
