//! The KV cache append and fused causal attention over it (grouped-query heads, sliding window,
//! soft-capping). The cache holds f16 pairs packed in u32 on every device.

use crate::error::{Error, Result};
use crate::gpu::{KernelKey, Recorder, View};
use crate::ops::need;
use crate::ops::reduce::Combine;

/// Largest head dimension the attention kernel takes (Gemma 3 uses 256).
pub const MAX_HEAD_DIM: u32 = 256;

pub fn kv_store_key() -> KernelKey {
    KernelKey::new("kv_store").uint("WG_SIZE", 256)
}

pub fn attention_key(combine: Combine) -> KernelKey {
    KernelKey::new("attention")
        .uint("MAX_HEAD_DIM", MAX_HEAD_DIM)
        .uint("WG_SIZE", 64)
        .flag("SUBGROUP", combine == Combine::Subgroup)
}

/// Geometry of one layer's cache and of the tokens being processed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attention {
    pub n_head: u32,
    pub n_kv_head: u32,
    pub head_dim: u32,
    /// Positions the cache holds per kv head.
    pub capacity: u32,
    pub n_tok: u32,
    /// Position of the first new token.
    pub pos0: u32,
    /// Sliding window (0 = none).
    pub window: u32,
    /// Scale of q.k (usually 1/sqrt(head_dim)).
    pub scale: f32,
    /// Logit soft-capping (0 = none).
    pub softcap: f32,
}

impl Attention {
    fn check(&self) -> Result<()> {
        let bad = self.head_dim == 0
            || !self.head_dim.is_multiple_of(2)
            || self.head_dim > MAX_HEAD_DIM
            || self.n_kv_head == 0
            || !self.n_head.is_multiple_of(self.n_kv_head)
            || self.pos0 + self.n_tok > self.capacity;
        if bad {
            return Err(Error::Shape {
                op: "attention",
                detail: format!(
                    "{self:?}: head_dim must be even and at most {MAX_HEAD_DIM}, n_head a \
                     multiple of n_kv_head, and pos0 + n_tok within the cache capacity \
                     (a longer context needs a larger cache)"
                ),
            });
        }
        Ok(())
    }

    /// Bytes of one cache (keys or values).
    pub fn cache_bytes(&self) -> u64 {
        u64::from(self.n_kv_head) * u64::from(self.capacity) * u64::from(self.head_dim) * 2
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct StoreParams {
    n_kv_head: u32,
    head_dim: u32,
    capacity: u32,
    n_tok: u32,
    pos0: u32,
    pad: [u32; 3],
}

/// Appends `src` (n_tok, n_kv_head, head_dim) f32 to `cache` at positions pos0...
pub fn kv_store(rec: &mut Recorder, src: View<'_>, cache: View<'_>, a: Attention) -> Result<()> {
    a.check()?;
    need(
        "kv_store",
        "src",
        &src,
        u64::from(a.n_tok) * u64::from(a.n_kv_head) * u64::from(a.head_dim) * 4,
    )?;
    need("kv_store", "cache", &cache, a.cache_bytes())?;
    let kernel = rec.gpu().kernel(&kv_store_key())?;
    let pairs = a.n_tok * a.n_kv_head * a.head_dim / 2;
    let groups = rec
        .gpu()
        .grid(pairs.div_ceil(kernel.spec.workgroup_size[0]).max(1));
    let params = StoreParams {
        n_kv_head: a.n_kv_head,
        head_dim: a.head_dim,
        capacity: a.capacity,
        n_tok: a.n_tok,
        pos0: a.pos0,
        pad: [0; 3],
    };
    rec.dispatch(&kernel, groups, &params, &[src, cache])
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    capacity: u32,
    n_tok: u32,
    pos0: u32,
    window: u32,
    scale: f32,
    softcap: f32,
    pad: [u32; 3],
}

/// Bytes of the score scratch `attention` needs.
pub fn scratch_bytes(a: &Attention) -> u64 {
    u64::from(a.n_tok) * u64::from(a.n_head) * u64::from(a.capacity) * 4
}

/// Records causal attention of `q` (n_tok, n_head, head_dim) against the caches into `out`.
#[allow(clippy::too_many_arguments, reason = "one argument per binding")]
pub fn attention(
    rec: &mut Recorder,
    combine: Combine,
    q: View<'_>,
    k_cache: View<'_>,
    v_cache: View<'_>,
    scratch: View<'_>,
    out: View<'_>,
    a: Attention,
) -> Result<()> {
    a.check()?;
    let qbytes = u64::from(a.n_tok) * u64::from(a.n_head) * u64::from(a.head_dim) * 4;
    need("attention", "q", &q, qbytes)?;
    need("attention", "k_cache", &k_cache, a.cache_bytes())?;
    need("attention", "v_cache", &v_cache, a.cache_bytes())?;
    need("attention", "scratch", &scratch, scratch_bytes(&a))?;
    need("attention", "out", &out, qbytes)?;
    let kernel = rec.gpu().kernel(&attention_key(combine))?;
    let groups = rec.gpu().grid((a.n_tok * a.n_head).max(1));
    let params = Params {
        n_head: a.n_head,
        n_kv_head: a.n_kv_head,
        head_dim: a.head_dim,
        capacity: a.capacity,
        n_tok: a.n_tok,
        pos0: a.pos0,
        window: a.window,
        scale: a.scale,
        softcap: a.softcap,
        pad: [0; 3],
    };
    rec.dispatch(
        &kernel,
        groups,
        &params,
        &[q, k_cache, v_cache, scratch, out],
    )
}
