//! The KV cache append and causal attention over it (grouped-query heads, sliding window,
//! soft-capping): the one-pass kernel (a workgroup per query row and head, scores in a scratch
//! row), the tiled online-softmax kernel for prefill, and split-KV attention with a combine pass
//! for long contexts. The cache holds f16 pairs packed in u32 on every device, or f32 where the
//! caller asks for it ([`KvType`]).

use crate::error::{Error, Result};
use crate::gpu::{KernelKey, ParamSpace, Recorder, Shifted, View, grid_of, params};
use crate::ops::need;
use crate::ops::reduce::Combine;

/// Largest head dimension the attention kernel takes (its variants' `MAX_HEAD_DIM`; Gemma 3
/// uses 256).
pub const MAX_HEAD_DIM: u32 = params::attention::MAX_HEAD_DIM;

/// How the KV cache stores its values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KvType {
    /// f16 pairs packed in u32 (half size, the default); q and the one-pass kernel's softmax
    /// weights are rounded to f16 before they meet it, as llama.cpp does.
    #[default]
    F16,
    /// f32: twice the memory, nothing rounded.
    F32,
}

impl KvType {
    /// The variant word (`KV=f16`).
    pub fn word(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::F32 => "f32",
        }
    }

    /// Bytes per cached value.
    pub fn bytes(self) -> u64 {
        match self {
            KvType::F16 => 2,
            KvType::F32 => 4,
        }
    }
}

impl std::str::FromStr for KvType {
    type Err = Error;

    fn from_str(s: &str) -> Result<KvType> {
        match s {
            "f16" => Ok(KvType::F16),
            "f32" => Ok(KvType::F32),
            _ => Err(Error::Unsupported(format!(
                "KV cache type `{s}`: use f16 or f32"
            ))),
        }
    }
}

pub fn kv_store_key(kv: KvType) -> KernelKey {
    KernelKey::new("kv_store")
        .uint("WG_SIZE", params::kv_store::WG_SIZE)
        .word("KV", kv.word())
}

pub fn attention_key(combine: Combine, kv: KvType) -> KernelKey {
    KernelKey::new("attention")
        .uint("MAX_HEAD_DIM", MAX_HEAD_DIM)
        .uint("WG_SIZE", params::attention::WG_SIZE)
        .flag("SUBGROUP", combine == Combine::Subgroup)
        .word("KV", kv.word())
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
    /// How the cache stores values.
    pub kv: KvType,
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
        u64::from(self.n_kv_head)
            * u64::from(self.capacity)
            * u64::from(self.head_dim)
            * self.kv.bytes()
    }

    /// Bytes of q and of the output: (n_tok, n_head, head_dim) f32.
    fn q_bytes(&self) -> u64 {
        u64::from(self.n_tok) * u64::from(self.n_head) * u64::from(self.head_dim) * 4
    }

    /// The positions the new tokens see together: from the first token's window start to the
    /// last token's position, `lo..hi`.
    pub fn span(&self) -> (u32, u32) {
        let hi = self.pos0 + self.n_tok;
        let lo = if self.window > 0 {
            (self.pos0 + 1).saturating_sub(self.window)
        } else {
            0
        };
        (lo, hi)
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
    let kernel = rec.gpu().kernel(&kv_store_key(a.kv))?;
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
    let qbytes = a.q_bytes();
    need("attention", "q", &q, qbytes)?;
    need("attention", "k_cache", &k_cache, a.cache_bytes())?;
    need("attention", "v_cache", &v_cache, a.cache_bytes())?;
    need("attention", "scratch", &scratch, scratch_bytes(&a))?;
    need("attention", "out", &out, qbytes)?;
    let kernel = rec.gpu().kernel(&attention_key(combine, a.kv))?;
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
    let shift = Shifted {
        params,
        f: move |p: &mut Params, delta: u32| {
            p.pos0 += delta;
            groups
        },
    };
    rec.dispatch_shifting(&kernel, shift, &[q, k_cache, v_cache, scratch, out])
}

/// Fewest positions per split of split-KV attention that kiln's models use by default: a
/// workgroup's share of the cache should outweigh writing and merging its partial result.
pub const SPLIT_MIN_LEN: u32 = 256;
/// Most splits of one call (a model sizes its partials for this many).
pub const MAX_SPLITS: u32 = 32;

/// How split-KV attention divides the positions a call sees: split `s` covers
/// `kv0 + s * len .. kv0 + (s + 1) * len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Splits {
    pub kv0: u32,
    pub len: u32,
    pub count: u32,
}

impl Splits {
    /// kiln's choice for `a`: one split when the tokens see fewer than `2 * min_len`
    /// positions, else pieces of a multiple of `min_len` positions, at most [`MAX_SPLITS`].
    pub fn plan(a: &Attention, min_len: u32) -> Splits {
        let (lo, hi) = a.span();
        let span = hi - lo;
        let min_len = min_len.max(1);
        if span < min_len.saturating_mul(2) {
            return Splits {
                kv0: lo,
                len: span.max(1),
                count: 1,
            };
        }
        // span >= 2 * min_len, so len <= span fits in u32.
        let len = (u64::from(min_len)
            * u64::from(span).div_ceil(u64::from(min_len) * u64::from(MAX_SPLITS)))
            as u32;
        Splits {
            kv0: lo,
            len,
            count: span.div_ceil(len),
        }
    }

    fn check(&self, a: &Attention) -> Result<()> {
        let (lo, hi) = a.span();
        let end = u64::from(self.kv0) + u64::from(self.len) * u64::from(self.count);
        if self.len == 0 || self.count == 0 || self.kv0 > lo || end < u64::from(hi) {
            return Err(Error::Shape {
                op: "attention_split",
                detail: format!(
                    "{self:?} must cover the positions {lo}..{hi} the tokens see, with at least \
                     one split of at least one position"
                ),
            });
        }
        Ok(())
    }
}

/// Bytes of the partial results of `attention_split` with `splits` splits: per split and
/// query row, the unnormalized output, the row's max and its sum.
pub fn partials_bytes(a: &Attention, splits: u32) -> u64 {
    u64::from(splits) * u64::from(a.n_tok) * u64::from(a.n_head) * (u64::from(a.head_dim) + 2) * 4
}

/// The tiled kernel's tile for a cache type and head dimension: (largest head dimension, query
/// rows BR, positions BC) from the manifest's `attention_flash` line for `kv` with the smallest
/// `MAX_HEAD_DIM` that holds `head_dim` (the largest where none does). The manifest sizes each
/// line's tiles to stay under WebGPU's default 16 KiB of workgroup memory.
fn flash_tile(kv: KvType, head_dim: u32) -> Option<(u32, u32, u32)> {
    ParamSpace::of("attention_flash")
        .filter(|line| line.takes("KV", kv.word()))
        .filter_map(|line| {
            Some((
                line.uint("MAX_HEAD_DIM")?,
                line.uint("BR")?,
                line.uint("BC")?,
            ))
        })
        .min_by_key(|&(max, _, _)| {
            if head_dim <= max {
                (false, max)
            } else {
                (true, u32::MAX - max)
            }
        })
}

/// The tiled kernel for `kv` and `head_dim`; without a manifest line for `kv` the key names no
/// tile, and looking it up fails listing the variants there are.
pub fn attention_flash_key(kv: KvType, head_dim: u32, split: bool) -> KernelKey {
    let mut key = KernelKey::new("attention_flash")
        .uint("WG_SIZE", params::attention_flash::WG_SIZE)
        .word("KV", kv.word())
        .word("OUT", if split { "split" } else { "final" });
    if let Some((max_head_dim, br, bc)) = flash_tile(kv, head_dim) {
        key = key
            .uint("MAX_HEAD_DIM", max_head_dim)
            .uint("BR", br)
            .uint("BC", bc);
    }
    key
}

pub fn attention_combine_key() -> KernelKey {
    KernelKey::new("attention_combine").uint("WG_SIZE", params::attention_combine::WG_SIZE)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FlashParams {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    capacity: u32,
    n_tok: u32,
    pos0: u32,
    window: u32,
    scale: f32,
    softcap: f32,
    kv0: u32,
    split_len: u32,
    n_split: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CombineParams {
    n_rows: u32,
    head_dim: u32,
    n_split: u32,
    pad: u32,
}

/// How split attention divides the positions a step sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitRule {
    /// These splits.
    Fixed(Splits),
    /// [`Splits::plan`] with this minimal split length, at the recorded position and, in a
    /// plan, at every position it replays (the grid follows).
    Planned(u32),
}

/// The splits `rule` (None: one piece over the whole cache) gives attention `a`.
fn splits_of(rule: Option<SplitRule>, a: &Attention) -> Splits {
    match rule {
        None => Splits {
            kv0: 0,
            len: a.capacity,
            count: 1,
        },
        Some(SplitRule::Fixed(s)) => s,
        Some(SplitRule::Planned(min_len)) => Splits::plan(a, min_len),
    }
}

fn flash_params(a: &Attention, s: &Splits) -> FlashParams {
    FlashParams {
        n_head: a.n_head,
        n_kv_head: a.n_kv_head,
        head_dim: a.head_dim,
        capacity: a.capacity,
        n_tok: a.n_tok,
        pos0: a.pos0,
        window: a.window,
        scale: a.scale,
        softcap: a.softcap,
        kv0: s.kv0,
        split_len: s.len,
        n_split: s.count,
    }
}

/// Checks the inputs shared by the tiled kernels and records one dispatch of the tiled kernel
/// into `dst` (the output, or the partials when splitting).
fn flash_dispatch(
    rec: &mut Recorder,
    q: View<'_>,
    k_cache: View<'_>,
    v_cache: View<'_>,
    dst: View<'_>,
    a: Attention,
    rule: Option<SplitRule>,
) -> Result<()> {
    a.check()?;
    need("attention", "q", &q, a.q_bytes())?;
    need("attention", "k_cache", &k_cache, a.cache_bytes())?;
    need("attention", "v_cache", &v_cache, a.cache_bytes())?;
    let split = rule.is_some();
    let kernel = rec
        .gpu()
        .kernel(&attention_flash_key(a.kv, a.head_dim, split))?;
    let br = kernel.spec.param("BR").unwrap_or(1);
    let tiles = (a.n_tok * (a.n_head / a.n_kv_head)).div_ceil(br);
    let max = rec.gpu().limits().max_compute_workgroups_per_dimension;
    let grid = move |s: &Splits| grid_of((tiles * a.n_kv_head * s.count).max(1), max);
    let s = splits_of(rule, &a);
    let shift = Shifted {
        params: flash_params(&a, &s),
        f: move |p: &mut FlashParams, delta: u32| {
            let moved = Attention {
                pos0: a.pos0 + delta,
                ..a
            };
            let s = match rule {
                Some(SplitRule::Planned(_)) => splits_of(rule, &moved),
                _ => s,
            };
            *p = flash_params(&moved, &s);
            grid(&s)
        },
    };
    rec.dispatch_shifting(&kernel, shift, &[q, k_cache, v_cache, dst])
}

/// Records tiled causal attention with an online softmax (FlashAttention style) of `q`
/// (n_tok, n_head, head_dim) against the caches into `out` (same shape), one dispatch and no
/// score scratch: each workgroup takes a tile of query rows of one kv head's group and walks
/// the positions they see in tiles. Unlike [`attention`] the softmax weights are not rounded
/// to f16 (in one pass their normalizer is not known yet when they meet V).
pub fn attention_tiled(
    rec: &mut Recorder,
    q: View<'_>,
    k_cache: View<'_>,
    v_cache: View<'_>,
    out: View<'_>,
    a: Attention,
) -> Result<()> {
    need("attention", "out", &out, a.q_bytes())?;
    flash_dispatch(rec, q, k_cache, v_cache, out, a, None)
}

/// Records split-KV attention: the tiled kernel once per (tile of query rows, kv head, split),
/// each split covering a piece of the positions and writing a partial result to `partials`
/// ([`partials_bytes`]), then a combine pass that merges the splits into `out`. Two dispatches;
/// numerics as [`attention_tiled`]. A plan replays [`SplitRule::Planned`] (its splits follow
/// the position); `partials` must then hold the splits of the last position the cache has room
/// for.
#[allow(clippy::too_many_arguments, reason = "one argument per binding")]
pub fn attention_split(
    rec: &mut Recorder,
    q: View<'_>,
    k_cache: View<'_>,
    v_cache: View<'_>,
    partials: View<'_>,
    out: View<'_>,
    a: Attention,
    rule: SplitRule,
) -> Result<()> {
    a.check()?;
    let most = match rule {
        SplitRule::Fixed(s) => {
            s.check(&a)?;
            s.count
        }
        SplitRule::Planned(min_len) => {
            let last = Attention {
                pos0: a.capacity - a.n_tok,
                ..a
            };
            Splits::plan(&last, min_len)
                .count
                .max(Splits::plan(&a, min_len).count)
        }
    };
    need("attention", "out", &out, a.q_bytes())?;
    need("attention", "partials", &partials, partials_bytes(&a, most))?;
    flash_dispatch(rec, q, k_cache, v_cache, partials, a, Some(rule))?;
    let kernel = rec.gpu().kernel(&attention_combine_key())?;
    let n = a.n_tok * a.n_head * a.head_dim;
    let groups = rec
        .gpu()
        .grid(n.div_ceil(kernel.spec.workgroup_size[0]).max(1));
    let shift = Shifted {
        params: CombineParams {
            n_rows: a.n_tok * a.n_head,
            head_dim: a.head_dim,
            n_split: splits_of(Some(rule), &a).count,
            pad: 0,
        },
        f: move |p: &mut CombineParams, delta: u32| {
            let moved = Attention {
                pos0: a.pos0 + delta,
                ..a
            };
            p.n_split = splits_of(Some(rule), &moved).count;
            groups
        },
    };
    rec.dispatch_shifting(&kernel, shift, &[partials, out])
}
