// Causal attention of n_tok new queries against the KV cache (KV=f16: f16 pairs packed in u32;
// KV=f32: f32 pairs), with grouped-query heads, an optional sliding window and optional logit
// soft-capping.
// Query t (at position pos0 + t) of head h attends cache positions
// max(0, pos0 + t + 1 - window) ..= pos0 + t of kv head h / (n_head / n_kv_head).
// One workgroup per (token, head): scores go to a scratch row, then a max and a sum reduction
// (subgroup or shared memory) and a weighted sum of values. q and the normalized weights are
// rounded to f16 before they meet the f16 cache, as llama.cpp's CPU path does, so both runtimes
// compute the same products (with the f32 cache nothing is rounded, as in llama.cpp).
#import reduce
#import grid
#import kv

struct Params {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,    // at most MAX_HEAD_DIM, even
    capacity: u32,    // cache positions per kv head
    n_tok: u32,
    pos0: u32,
    window: u32,      // 0: attend to everything before
    scale: f32,
    softcap: f32,     // 0: none, else s = softcap * tanh(s / softcap)
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;             // (n_tok, n_head, head_dim)
@group(0) @binding(2) var<storage, read> kc: array<KvPair>;         // (n_kv_head, capacity, head_dim / 2)
@group(0) @binding(3) var<storage, read> vc: array<KvPair>;         // (n_kv_head, capacity, head_dim / 2)
@group(0) @binding(4) var<storage, read_write> scores: array<f32>;  // (n_tok * n_head, capacity)
@group(0) @binding(5) var<storage, read_write> out: array<f32>;     // (n_tok, n_head, head_dim)

var<workgroup> qs: array<vec2<f32>, MAX_HEAD_DIM / 2>;

// tanh that stays finite for large |v| (some drivers return NaN above ~42).
fn safe_tanh(v: f32) -> f32 {
    let e = exp(-2.0 * abs(v));
    return sign(v) * (1.0 - e) / (1.0 + e);
}

@compute @workgroup_size(WG_SIZE)
fn main(l: Lanes, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let qi = flat_workgroup(wg, nwg);
    if qi >= p.n_tok * p.n_head {
        return;
    }
    let t = qi / p.n_head;
    let h = qi % p.n_head;
    let kvh = h / (p.n_head / p.n_kv_head);
    let pairs = p.head_dim / 2u;
    let last = p.pos0 + t;
    var first = 0u;
    if p.window > 0u && last + 1u > p.window {
        first = last + 1u - p.window;
    }
    for (var d = l.index; d < pairs; d += WG_SIZE) {
        let v = vec2<f32>(q[qi * p.head_dim + 2u * d], q[qi * p.head_dim + 2u * d + 1u]);
        qs[d] = kv_round2(v);
    }
    workgroupBarrier();

    let kv_base = kvh * p.capacity;
    let srow = qi * p.capacity;
    var mx = RED_LOWEST;
    for (var pos = first + l.index; pos <= last; pos += WG_SIZE) {
        let kb = (kv_base + pos) * pairs;
        var s = 0.0;
        for (var d = 0u; d < pairs; d++) {
            s += dot(qs[d], kv_unpack(kc[kb + d]));
        }
        s *= p.scale;
        if p.softcap > 0.0 {
            s = p.softcap * safe_tanh(s / p.softcap);
        }
        scores[srow + pos] = s;
        mx = max(mx, s);
    }
    let m = wg_max(l, mx);
    var sum = 0.0;
    for (var pos = first + l.index; pos <= last; pos += WG_SIZE) {
        let e = exp(scores[srow + pos] - m);
        scores[srow + pos] = e;
        sum += e;
    }
    let inv = 1.0 / wg_sum(l, sum);
    storageBarrier();
    for (var d = l.index; d < pairs; d += WG_SIZE) {
        var acc = vec2<f32>(0.0);
        for (var pos = first; pos <= last; pos++) {
            let w = kv_round(scores[srow + pos] * inv);
            acc += w * kv_unpack(vc[(kv_base + pos) * pairs + d]);
        }
        out[qi * p.head_dim + 2u * d] = acc.x;
        out[qi * p.head_dim + 2u * d + 1u] = acc.y;
    }
}
