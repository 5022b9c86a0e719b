// The step between the q/k/v projection and attention, in one dispatch: for each token t and
// each head of the projection's output `qkv` (n_tok, q heads | k heads | v heads, head_dim each):
//   + bias (BIAS: Qwen2; the q, k and v biases lie one after another in `vecs` at `bias`),
//   q and k heads RMS-normed with their per-head weights (QK_NORM: Gemma 3, Qwen3),
//   q and k heads rotated (RoPE, the arithmetic of rope.wgsl: LAYOUT=norm pairs (2i, 2i + 1),
//   LAYOUT=neox pairs (i, i + rot_dims / 2); FREQ_FACTORS: pair i's frequency divided by
//   vecs[freq_factors + i], Llama 3's rope_freqs),
// then q heads go to `q` (n_tok, n_head, head_dim) f32 and k and v heads are appended to the
// caches at position pos0 + t (as kv_store.wgsl: f16 pairs with KV=f16, f32 with KV=f32).
// Replaces add_inplace x3, rms_norm x2, rope x2 and kv_store x2. One workgroup per (token, head).
#import reduce
#import grid
#import kv
#import rope

struct Params {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,     // even, at most MAX_HEAD_DIM
    rot_dims: u32,     // leading dimensions of each head that rotate (even)
    n_tok: u32,
    pos0: u32,
    capacity: u32,     // cache positions per kv head
    flags: u32,        // FLAG_BIAS | FLAG_QK_NORM | FLAG_FREQ_FACTORS
    base: f32,         // RoPE base
    freq_scale: f32,
    eps: f32,          // q/k norm epsilon
    bias: u32,         // float offset of the q, k, v biases in `vecs` (FLAG_BIAS)
    q_norm: u32,       // float offset of the q-norm weight in `vecs` (FLAG_QK_NORM)
    k_norm: u32,       // float offset of the k-norm weight in `vecs` (FLAG_QK_NORM)
    freq_factors: u32, // float offset of rot_dims / 2 frequency divisors in `vecs` (FLAG_FREQ_FACTORS)
    pad1: u32,
}

const FLAG_BIAS: u32 = 1u;
const FLAG_QK_NORM: u32 = 2u;
const FLAG_FREQ_FACTORS: u32 = 4u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;          // (n_tok, (n_head + 2 n_kv_head) * head_dim)
@group(0) @binding(2) var<storage, read> vecs: array<f32>;         // biases, q/k norm weights, frequency divisors
@group(0) @binding(3) var<storage, read_write> q: array<f32>;      // (n_tok, n_head, head_dim)
@group(0) @binding(4) var<storage, read_write> kc: array<KvPair>;  // (n_kv_head, capacity, head_dim / 2)
@group(0) @binding(5) var<storage, read_write> vc: array<KvPair>;  // (n_kv_head, capacity, head_dim / 2)

var<workgroup> h: array<f32, MAX_HEAD_DIM>;

@compute @workgroup_size(WG_SIZE)
fn main(l: Lanes, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let heads = p.n_head + 2u * p.n_kv_head;
    let id = flat_workgroup(wg, nwg);
    if id >= p.n_tok * heads {
        return;
    }
    let tok = id / heads;
    let hi = id % heads;
    let hd = p.head_dim;
    let src = tok * heads * hd + hi * hd;
    let is_q = hi < p.n_head;
    let is_v = hi >= p.n_head + p.n_kv_head;
    for (var d = l.index; d < hd; d += WG_SIZE) {
        var v = qkv[src + d];
        if (p.flags & FLAG_BIAS) != 0u {
            v += vecs[p.bias + hi * hd + d];
        }
        h[d] = v;
    }
    workgroupBarrier();
    if !is_v {
        if (p.flags & FLAG_QK_NORM) != 0u {
            var ss = 0.0;
            for (var d = l.index; d < hd; d += WG_SIZE) {
                ss += h[d] * h[d];
            }
            let scale = inverseSqrt(wg_sum(l, ss) / f32(hd) + p.eps);
            let wo = select(p.k_norm, p.q_norm, is_q);
            for (var d = l.index; d < hd; d += WG_SIZE) {
                h[d] = h[d] * scale * vecs[wo + d];
            }
            workgroupBarrier();
        }
        let half_rot = p.rot_dims / 2u;
        let pos = f32(p.pos0 + tok) * p.freq_scale;
        for (var i = l.index; i < half_rot; i += WG_SIZE) {
            var factor = 1.0;
            if (p.flags & FLAG_FREQ_FACTORS) != 0u {
                factor = vecs[p.freq_factors + i];
            }
            let cs = rope_cos_sin(pos, p.base, i, p.rot_dims, factor);
#ifdef LAYOUT_NEOX
            let a = i;
            let b = i + half_rot;
#else
            let a = 2u * i;
            let b = a + 1u;
#endif
            let x0 = h[a];
            let x1 = h[b];
            h[a] = x0 * cs.x - x1 * cs.y;
            h[b] = x0 * cs.y + x1 * cs.x;
        }
        workgroupBarrier();
    }
    if is_q {
        for (var d = l.index; d < hd; d += WG_SIZE) {
            q[(tok * p.n_head + hi) * hd + d] = h[d];
        }
        return;
    }
    let pairs = hd / 2u;
    let kvh = select(hi - p.n_head, hi - p.n_head - p.n_kv_head, is_v);
    let at = (kvh * p.capacity + p.pos0 + tok) * pairs;
    for (var d = l.index; d < pairs; d += WG_SIZE) {
        let v = kv_pack(vec2<f32>(h[2u * d], h[2u * d + 1u]));
        if is_v {
            vc[at + d] = v;
        } else {
            kc[at + d] = v;
        }
    }
}
