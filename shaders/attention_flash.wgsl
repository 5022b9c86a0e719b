// Tiled causal attention with an online softmax (FlashAttention style) of n_tok new queries
// against the KV cache, with grouped-query heads, an optional sliding window and optional logit
// soft-capping; the full score matrix is never formed.
//
// The query rows of one kv head are its group's heads for every new token, token-major:
// row R is token R / group, head kvh * group + R % group, so the heads that share a kv head
// share every K and V tile loaded. A workgroup takes BR such rows (one tile), loads them once,
// then walks its KV range in tiles of BC positions: K tile into workgroup memory, BR x BC
// scores, each row's running max m and sum l updated (the old accumulator scaled by
// exp(m_old - m_new)), V tile into the same memory, accumulator += weights x V. Row R at
// position pos0 + R / group sees positions max(0, pos0 + t + 1 - window) ..= pos0 + t.
//
// The KV range may be split (split-K): workgroup (tile, kv head, split) covers positions
// kv0 + split * split_len .. + split_len only. OUT=final writes acc / l (n_split must be 1);
// OUT=split writes the unnormalized accumulator with m and l per row, which
// attention_combine.wgsl merges.
//
// q is rounded to f16 with the f16 cache (KV=f16), as the one-pass kernel does. The softmax
// weights are not: in one pass the final max and sum are not known when a weight meets V.
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
    kv0: u32,         // first position of split 0
    split_len: u32,   // positions per split, a multiple of BC
    n_split: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;             // (n_tok, n_head, head_dim)
@group(0) @binding(2) var<storage, read> kc: array<KvPair>;         // (n_kv_head, capacity, head_dim / 2)
@group(0) @binding(3) var<storage, read> vc: array<KvPair>;         // (n_kv_head, capacity, head_dim / 2)
// OUT=final: (n_tok, n_head, head_dim).
// OUT=split: (n_split, n_tok * n_head, head_dim + 2): accumulator, then m and l.
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const MAX_PAIRS: u32 = MAX_HEAD_DIM / 2u;
// Rows of the tiles in workgroup memory are padded by one word so that invocations reading
// the same column of different rows hit different banks.
const STRIDE: u32 = MAX_PAIRS + 1u;
// Accumulator pairs per invocation: the tile's BR x MAX_PAIRS pairs spread over the workgroup.
const ACC_N: u32 = BR * MAX_PAIRS / WG_SIZE;
// A score that is masked out (never a real score: soft-capping or the scale keeps them far
// from it). Also the running max before any position was seen.
const MASKED: f32 = -0x1.fffffep+127f;

var<workgroup> q_tile: array<KvPair, BR * STRIDE>;    // (BR, head_dim / 2), padded
var<workgroup> kv_tile: array<KvPair, BC * STRIDE>;   // (BC, head_dim / 2), K then V
var<workgroup> s_tile: array<f32, BR * BC>;           // scores, then weights
var<workgroup> row_m: array<f32, BR>;
var<workgroup> row_l: array<f32, BR>;
var<workgroup> row_alpha: array<f32, BR>;

// tanh that stays finite for large |v| (some drivers return NaN above ~42).
fn safe_tanh(v: f32) -> f32 {
    let e = exp(-2.0 * abs(v));
    return sign(v) * (1.0 - e) / (1.0 + e);
}

// Index of row `row` of kv head `kvh` in q and out (as (n_tok * n_head) rows).
fn q_row(row: u32, kvh: u32, group: u32) -> u32 {
    return (row / group) * p.n_head + kvh * group + row % group;
}

// First position (inclusive) the query at position `last` sees.
fn first_seen(last: u32) -> u32 {
    if p.window > 0u && last + 1u > p.window {
        return last + 1u - p.window;
    }
    return 0u;
}

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let group = p.n_head / p.n_kv_head;
    let n_rows = p.n_tok * group;
    let n_tiles = (n_rows + BR - 1u) / BR;
    let flat = flat_workgroup(wg, nwg);
    if flat >= n_tiles * p.n_kv_head * p.n_split {
        return;
    }
    let tile = flat % n_tiles;
    let kvh = (flat / n_tiles) % p.n_kv_head;
    let split = flat / (n_tiles * p.n_kv_head);
    let pairs = p.head_dim / 2u;
    let row0 = tile * BR;
    let rows = min(BR, n_rows - row0);

    // Positions any row of the tile sees, within this split: [lo, hi).
    let split_lo = p.kv0 + split * p.split_len;
    let lo = max(first_seen(p.pos0 + row0 / group), split_lo);
    let hi = min(p.pos0 + (row0 + rows - 1u) / group + 1u, split_lo + p.split_len);

    for (var e = lid; e < BR * pairs; e += WG_SIZE) {
        let r = e / pairs;
        let d = e % pairs;
        var v = vec2<f32>(0.0);
        if r < rows {
            let qi = q_row(row0 + r, kvh, group) * p.head_dim + 2u * d;
            v = vec2<f32>(q[qi], q[qi + 1u]);
        }
        q_tile[r * STRIDE + d] = kv_pack(v);
    }
    if lid < BR {
        row_m[lid] = MASKED;
        row_l[lid] = 0.0;
    }
    var acc: array<vec2<f32>, ACC_N>;
    workgroupBarrier();

    for (var c0 = lo; c0 < hi; c0 += BC) {
        let n_c = min(BC, hi - c0);
        // The tile's positions are contiguous in the cache.
        let kb = (kvh * p.capacity + c0) * pairs;
        for (var e = lid; e < n_c * pairs; e += WG_SIZE) {
            kv_tile[(e / pairs) * STRIDE + e % pairs] = kc[kb + e];
        }
        workgroupBarrier();

        for (var e = lid; e < BR * BC; e += WG_SIZE) {
            let r = e / BC;
            let c = e % BC;
            let pos = c0 + c;
            let last = p.pos0 + (row0 + r) / group;
            var s = MASKED;
            if r < rows && c < n_c && pos <= last && pos >= first_seen(last) {
                var dot_qk = 0.0;
                for (var d = 0u; d < pairs; d++) {
                    dot_qk += dot(kv_unpack(q_tile[r * STRIDE + d]),
                                  kv_unpack(kv_tile[c * STRIDE + d]));
                }
                s = dot_qk * p.scale;
                if p.softcap > 0.0 {
                    s = p.softcap * safe_tanh(s / p.softcap);
                }
            }
            s_tile[e] = s;
        }
        workgroupBarrier();

        // The V tile replaces the K tile while the first BR invocations turn their row's
        // scores into weights against the new running max.
        for (var e = lid; e < n_c * pairs; e += WG_SIZE) {
            kv_tile[(e / pairs) * STRIDE + e % pairs] = vc[kb + e];
        }
        if lid < BR {
            let m_old = row_m[lid];
            var m_new = m_old;
            for (var c = 0u; c < BC; c++) {
                m_new = max(m_new, s_tile[lid * BC + c]);
            }
            var sum = 0.0;
            for (var c = 0u; c < BC; c++) {
                let s = s_tile[lid * BC + c];
                var w = 0.0;
                if s > MASKED {
                    w = exp(s - m_new);
                }
                s_tile[lid * BC + c] = w;
                sum += w;
            }
            // m_old <= m_new: alpha is in [0, 1] (1 while the row has seen nothing).
            let alpha = exp(m_old - m_new);
            row_alpha[lid] = alpha;
            row_l[lid] = row_l[lid] * alpha + sum;
            row_m[lid] = m_new;
        }
        workgroupBarrier();

        for (var j = 0u; j < ACC_N; j++) {
            let e = lid + j * WG_SIZE;
            let r = e / pairs;
            if r < rows {
                let d = e % pairs;
                var a = acc[j] * row_alpha[r];
                for (var c = 0u; c < n_c; c++) {
                    a += s_tile[r * BC + c] * kv_unpack(kv_tile[c * STRIDE + d]);
                }
                acc[j] = a;
            }
        }
        workgroupBarrier();
    }

    for (var j = 0u; j < ACC_N; j++) {
        let e = lid + j * WG_SIZE;
        let r = e / pairs;
        if r < rows {
            let d = e % pairs;
            let qi = q_row(row0 + r, kvh, group);
#ifdef OUT_FINAL
            let v = acc[j] / row_l[r];
            out[qi * p.head_dim + 2u * d] = v.x;
            out[qi * p.head_dim + 2u * d + 1u] = v.y;
#else
            let base = (split * p.n_tok * p.n_head + qi) * (p.head_dim + 2u);
            out[base + 2u * d] = acc[j].x;
            out[base + 2u * d + 1u] = acc[j].y;
            if d == 0u {
                out[base + p.head_dim] = row_m[r];
                out[base + p.head_dim + 1u] = row_l[r];
            }
#endif
        }
    }
}
