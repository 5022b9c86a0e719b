// Tiled quantized matmul for prefill: y[j, y_offset + row] (+)= W[row, :] . x[j, :] for `m`
// activation rows j at once, W stored as GGUF blocks (WTYPE), one output feature per row.
// Where a GEMV reads every weight block once per activation row, a workgroup here
// dequantizes a tile of TILE_R weight rows x one 32-weight unit into workgroup memory once and
// multiplies it against TILE_T activation rows.
// - ACTS=q8: activations int8-quantized for W's type (quantize.wgsl). A unit is dequantized to
//   8 words of packed int8 plus its scales, and each product is the integer block dot of
//   gemv_q8 scaled by the same expression, summed over units in the same order as gemv_q8's
//   SPLIT=thread: the arithmetic of llama.cpp's CPU path.
// - ACTS=f32: f32 activations; a unit is dequantized to 32 f32 weights.
// WG_X x WG_Y invocations each own TILE_R / WG_Y rows x TILE_T / WG_X activation rows, strided
// by WG_Y and WG_X.
#import quant
#import grid

struct Params {
    k: u32,          // row length (multiple of 32; of 256 for K-quants)
    rows: u32,       // weight rows in this part
    row_bytes: u32,  // bytes per weight row
    m: u32,          // activation rows
    x_stride: u32,   // vec4s between f32 activation rows (ACTS=f32)
    y_stride: u32,   // floats between output rows
    y_offset: u32,   // first output column (row of W) of this part
    pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;           // (rows, row_bytes / 4) blocks
#ifdef ACTS_Q8
@group(0) @binding(2) var<storage, read> xq: array<u32>;          // (m, k / 4) int8 x 4
@group(0) @binding(3) var<storage, read> xd: array<f32>;          // (m, k / 32)
#ifdef XS
@group(0) @binding(4) var<storage, read> xs: array<f32>;          // (m, k / 32)
@group(0) @binding(5) var<storage, read_write> y: array<f32>;     // (m, y_stride)
#else
@group(0) @binding(4) var<storage, read_write> y: array<f32>;     // (m, y_stride)
#endif
#else
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;     // (m, k / 4)
@group(0) @binding(3) var<storage, read_write> y: array<f32>;     // (m, y_stride)
#endif

const THREADS: u32 = WG_X * WG_Y;
const RM: u32 = TILE_R / WG_Y;  // weight rows per invocation
const TM: u32 = TILE_T / WG_X;  // activation rows per invocation

#ifdef ACTS_Q8
// Unit tile: 8 words of int8 weights per row, and per row the scales of the unit:
// (d, m) for Q4_0/Q5_0/Q8_0 (m = 0) and Q4_1, (d * sc, dmin * m) for Q4_K, (d, sc0, sc1) for
// Q6_K. Activations: 8 words per activation row, its scale and (XS) sum.
var<workgroup> tw: array<u32, TILE_R * 8>;
var<workgroup> tsc: array<vec4<f32>, TILE_R>;
var<workgroup> tx: array<u32, TILE_T * 8>;
var<workgroup> txd: array<f32, TILE_T>;
#ifdef XS
var<workgroup> txs: array<f32, TILE_T>;
#endif

fn nib4s(q: u32) -> vec4<i32> {
    return vec4<i32>(i32(q & 15u), i32((q >> 8u) & 15u), i32((q >> 16u) & 15u), i32((q >> 24u) & 15u));
}

fn bits4s(v: u32) -> vec4<i32> {
    return vec4<i32>(i32(v & 1u), i32((v >> 1u) & 1u), i32((v >> 2u) & 1u), i32((v >> 3u) & 1u));
}

fn i8x4s(q: u32) -> vec4<i32> {
    return vec4<i32>(bitcast<i32>(q << 24u), bitcast<i32>(q << 16u), bitcast<i32>(q << 8u), bitcast<i32>(q)) >> vec4<u32>(24u);
}

// Dequantizes unit `u` of the row at byte `row` into tile row `t`: int8 words and scales.
fn load_unit(row: u32, u: u32, t: u32) {
#ifdef WTYPE_Q4_0
    let o = row + u * 18u;
    for (var i = 0u; i < 4u; i++) {
        let q = w_u32(o + 2u + 4u * i);
        tw[t * 8u + i] = pack4xI8(nib4s(q) - 8);
        tw[t * 8u + 4u + i] = pack4xI8(nib4s(q >> 4u) - 8);
    }
    tsc[t] = vec4<f32>(w_f16(o), 0.0, 0.0, 0.0);
#endif
#ifdef WTYPE_Q4_1
    let o = row + u * 20u;
    for (var i = 0u; i < 4u; i++) {
        let q = w_u32(o + 4u + 4u * i);
        tw[t * 8u + i] = pack4xI8(nib4s(q));
        tw[t * 8u + 4u + i] = pack4xI8(nib4s(q >> 4u));
    }
    tsc[t] = vec4<f32>(w_f16(o), w_f16(o + 2u), 0.0, 0.0);
#endif
#ifdef WTYPE_Q5_0
    let o = row + u * 22u;
    let qh = w_u32(o + 2u);
    for (var i = 0u; i < 4u; i++) {
        let q = w_u32(o + 6u + 4u * i);
        tw[t * 8u + i] = pack4xI8(nib4s(q) + 16 * bits4s(qh >> (4u * i)) - 16);
        tw[t * 8u + 4u + i] = pack4xI8(nib4s(q >> 4u) + 16 * bits4s(qh >> (16u + 4u * i)) - 16);
    }
    tsc[t] = vec4<f32>(w_f16(o), 0.0, 0.0, 0.0);
#endif
#ifdef WTYPE_Q8_0
    let o = row + u * 34u;
    for (var i = 0u; i < 8u; i++) {
        tw[t * 8u + i] = w_u32(o + 2u + 4u * i);
    }
    tsc[t] = vec4<f32>(w_f16(o), 0.0, 0.0, 0.0);
#endif
#ifdef WTYPE_Q4_K
    let o = row + (u / 8u) * 144u;
    let j = u % 8u;
    let sm = q4k_scale_min(o + 4u, j);
    let qo = o + 16u + (j / 2u) * 32u;
    let shift = (j % 2u) * 4u;
    for (var i = 0u; i < 8u; i++) {
        tw[t * 8u + i] = (w_u32(qo + 4u * i) >> shift) & 0x0f0f0f0fu;
    }
    tsc[t] = vec4<f32>(w_f16(o) * sm.x, w_f16(o + 2u) * sm.y, 0.0, 0.0);
#endif
#ifdef WTYPE_Q6_K
    let o = row + (u / 8u) * 210u;
    let n = (u % 8u) / 4u;
    let g = u % 4u;
    let qlo = o + n * 64u + (g & 1u) * 32u;
    let qls = (g >> 1u) * 4u;
    let qho = o + 128u + n * 32u;
    let qhs = g * 2u;
    for (var i = 0u; i < 8u; i++) {
        let ql = w_u32(qlo + 4u * i) >> qls;
        let qh = w_u32(qho + 4u * i) >> qhs;
        tw[t * 8u + i] = pack4xI8(nib4s(ql) + 16 * vec4<i32>(i32(qh & 3u), i32((qh >> 8u) & 3u), i32((qh >> 16u) & 3u), i32((qh >> 24u) & 3u)) - 32);
    }
    let so = o + 192u + n * 8u + g * 2u;
    tsc[t] = vec4<f32>(w_f16(o + 208u), sext8(w_u8(so)), sext8(w_u8(so + 1u)), 0.0);
#endif
}

// The product of tile row `r` with tile activation row `c`, as gemv_q8 scales it.
fn tile_dot(r: u32, c: u32) -> f32 {
    var s0 = 0;
    var s1 = 0;
    for (var i = 0u; i < 4u; i++) {
        s0 += dot(i8x4s(tw[r * 8u + i]), i8x4s(tx[c * 8u + i]));
        s1 += dot(i8x4s(tw[r * 8u + 4u + i]), i8x4s(tx[c * 8u + 4u + i]));
    }
    let sc = tsc[r];
#ifdef WTYPE_Q4_1
    return sc.x * txd[c] * f32(s0 + s1) + sc.y * txs[c];
#else
#ifdef WTYPE_Q4_K
    return txd[c] * (sc.x * f32(s0 + s1) - sc.y * txs[c]);
#else
#ifdef WTYPE_Q6_K
    return sc.x * txd[c] * (sc.y * f32(s0) + sc.z * f32(s1));
#else
    return sc.x * txd[c] * f32(s0 + s1);
#endif
#endif
#endif
}

// Fills the tiles for unit `u`: invocation `li` < TILE_R dequantizes one weight row, the next
// TILE_T copy one activation row each (THREADS >= TILE_R + TILE_T).
fn load_tiles(li: u32, row0: u32, tok0: u32, u: u32) {
    if li < TILE_R {
        if row0 + li < p.rows {
            load_unit((row0 + li) * p.row_bytes, u, li);
        } else {
            for (var i = 0u; i < 8u; i++) {
                tw[li * 8u + i] = 0u;
            }
            tsc[li] = vec4<f32>(0.0);
        }
    } else if li < TILE_R + TILE_T {
        let c = li - TILE_R;
        let j = tok0 + c;
        let a = j * (p.k / 32u) + u;
        if j < p.m {
            for (var i = 0u; i < 8u; i++) {
                tx[c * 8u + i] = xq[8u * a + i];
            }
            txd[c] = xd[a];
#ifdef XS
            txs[c] = xs[a];
#endif
        } else {
            for (var i = 0u; i < 8u; i++) {
                tx[c * 8u + i] = 0u;
            }
            txd[c] = 0.0;
#ifdef XS
            txs[c] = 0.0;
#endif
        }
    }
}
#else
// Unit tile: 32 dequantized weights per row, 32 activations per activation row, as vec4s.
var<workgroup> tw: array<vec4<f32>, TILE_R * 8>;
var<workgroup> tx: array<vec4<f32>, TILE_T * 8>;

fn tile_dot(r: u32, c: u32) -> f32 {
    var acc = 0.0;
    for (var i = 0u; i < 8u; i++) {
        acc += dot(tw[r * 8u + i], tx[c * 8u + i]);
    }
    return acc;
}

fn load_tiles(li: u32, row0: u32, tok0: u32, u: u32) {
    for (var e = li; e < TILE_R * 8u; e += THREADS) {
        let r = e / 8u;
        var v = vec4<f32>(0.0);
        if row0 + r < p.rows {
            v = unit_vec((row0 + r) * p.row_bytes, u, e % 8u);
        }
        tw[e] = v;
    }
    for (var e = li; e < TILE_T * 8u; e += THREADS) {
        let j = tok0 + e / 8u;
        var v = vec4<f32>(0.0);
        if j < p.m {
            v = x[j * p.x_stride + u * 8u + e % 8u];
        }
        tx[e] = v;
    }
}
#endif

@compute @workgroup_size(WG_X, WG_Y)
fn main(@builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32,
        @builtin(workgroup_id) wg: vec3<u32>) {
    let row0 = wg.x * TILE_R;
    let tok0 = wg.y * TILE_T;
    var acc: array<array<f32, TM>, RM>;
    // Every invocation takes part in every barrier: no early return before the last one.
    for (var u = 0u; u < p.k / 32u; u++) {
        load_tiles(li, row0, tok0, u);
        workgroupBarrier();
        for (var i = 0u; i < RM; i++) {
            for (var j = 0u; j < TM; j++) {
                acc[i][j] += tile_dot(lid.y + WG_Y * i, lid.x + WG_X * j);
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < RM; i++) {
        let r = row0 + lid.y + WG_Y * i;
        for (var j = 0u; j < TM; j++) {
            let t = tok0 + lid.x + WG_X * j;
            if r < p.rows && t < p.m {
                let o = t * p.y_stride + p.y_offset + r;
#ifdef ACC
                y[o] += acc[i][j];
#else
                y[o] = acc[i][j];
#endif
            }
        }
    }
}
