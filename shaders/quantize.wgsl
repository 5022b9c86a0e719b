// Activation quantization before a quantized gemv, the way llama.cpp's CPU path does it, so
// both compute the same integer dot products: Q8_0 (blocks of 32, scale rounded to f16) for
// Q4_0/Q5_0/Q8_0 weights, Q8_1 (plus the f16 scaled sum) for Q4_1, Q8_K (blocks of 256 scaled
// by the signed extreme, f32 scale) for the K-quants. Output, per 32 activations: 8 words of
// packed int8 (xq), the block scale (xd; repeated for each 32 of a Q8_K block) and, except for
// Q8_0, a sum (xs: the f16-rounded d * sum(q) for Q8_1, the integer sum(q) for Q8_K).
#import grid
#import f16

struct Params {
    k: u32,   // row length (multiple of the block)
    m: u32,   // rows
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;             // (m, k)
@group(0) @binding(2) var<storage, read_write> xq: array<u32>;      // (m, k / 4)
@group(0) @binding(3) var<storage, read_write> xd: array<f32>;      // (m, k / 32)
#ifndef QTYPE_Q8_0
@group(0) @binding(4) var<storage, read_write> xs: array<f32>;      // (m, k / 32)
#endif

#ifdef QTYPE_Q8_K
const BLK: u32 = 256u;
#else
const BLK: u32 = 32u;
#endif

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = flat_workgroup(wg, nwg) * WG_SIZE + lid;
    if b >= p.m * (p.k / BLK) {
        return;
    }
    let base = b * BLK;
#ifdef QTYPE_Q8_K
    // ggml's Q8_K: scale by the element of largest magnitude, keeping its sign.
    var amax = 0.0;
    var vmax = 0.0;
    for (var i = 0u; i < BLK; i++) {
        let v = x[base + i];
        if abs(v) > amax {
            amax = abs(v);
            vmax = v;
        }
    }
    var iscale = 0.0;
    var d = 0.0;
    if amax != 0.0 {
        iscale = -127.0 / vmax;
        d = 1.0 / iscale;
    }
    for (var u = 0u; u < 8u; u++) {
        var sum = 0;
        for (var wd = 0u; wd < 8u; wd++) {
            var word = 0u;
            for (var c = 0u; c < 4u; c++) {
                let q = i32(min(127.0, round(iscale * x[base + u * 32u + wd * 4u + c])));
                sum += q;
                word |= (bitcast<u32>(q) & 0xffu) << (8u * c);
            }
            xq[(base + u * 32u) / 4u + wd] = word;
        }
        xd[b * 8u + u] = d;
        xs[b * 8u + u] = f32(sum);
    }
#else
    var amax = 0.0;
    for (var i = 0u; i < BLK; i++) {
        amax = max(amax, abs(x[base + i]));
    }
    let d = amax / 127.0;
    var id = 0.0;
    if amax != 0.0 {
        id = 127.0 / amax;  // as llama.cpp's SIMD quantizers compute it
    }
    var sum = 0;
    for (var wd = 0u; wd < 8u; wd++) {
        var word = 0u;
        for (var c = 0u; c < 4u; c++) {
            let q = i32(round(x[base + wd * 4u + c] * id));
            sum += q;
            word |= (bitcast<u32>(q) & 0xffu) << (8u * c);
        }
        xq[base / 4u + wd] = word;
    }
    xd[b] = f16_round(d);
#ifdef QTYPE_Q8_1
    xs[b] = f16_round(f32(sum) * d);
#endif
#endif
}
