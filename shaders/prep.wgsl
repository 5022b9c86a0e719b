// Prepares the input of a product from the residual stream (shared/prep.wgsl): per row j,
// r = x_in[j] (+ [post-normed] t[j]), optionally stored to x_out[j] as the new residual, then
// v = [RMS-normed] r, quantized to int8 units for the weights' type (QTYPE=q8_0|q8_1|q8_k, the
// layout quantize.wgsl writes: xq words, xd scales, xs sums) or written as f32 (QTYPE=f32, for
// f16 and f32 weights). One workgroup per row. Rows are read from x_row0 on (a step's last
// row before the output head).
#ifdef QTYPE_F32
#import prep
#else
#import prep_quant
#endif
#import grid

struct Params {
    pre: Prep,
    m: u32,        // rows
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x_in: array<f32>;        // (x_row0 + m, k)
@group(0) @binding(2) var<storage, read> t: array<f32>;           // (x_row0 + m, k), PREP_RES
@group(0) @binding(3) var<storage, read> vecs: array<f32>;        // norm weights
@group(0) @binding(4) var<storage, read_write> x_out: array<f32>; // (x_row0 + m, k), PREP_WRITE
#ifdef QTYPE_F32
@group(0) @binding(5) var<storage, read_write> y: array<f32>;     // (m, k)
#else
@group(0) @binding(5) var<storage, read_write> xq: array<u32>;    // (m, k / 4) int8 x 4
@group(0) @binding(6) var<storage, read_write> xd: array<f32>;    // (m, k / 32)
@group(0) @binding(7) var<storage, read_write> xs: array<f32>;    // (m, k / 32)
#endif

#ifdef QTYPE_Q8_0
const ACT_KIND: u32 = ACT_Q8_0;
#endif
#ifdef QTYPE_Q8_1
const ACT_KIND: u32 = ACT_Q8_1;
#endif
#ifdef QTYPE_Q8_K
const ACT_KIND: u32 = ACT_Q8K;
#endif

#ifndef QTYPE_F32
var<workgroup> blk: array<vec2<f32>, 128>;  // Q8_K block extremes (rows up to 32768)

fn prep_barrier() {
    storageBarrier();
    workgroupBarrier();
}

fn put_q(j: u32, word: u32, v: u32) {
    xq[j * (p.pre.k / 4u) + word] = v;
}

fn put_d(j: u32, u: u32, v: f32) {
    xd[j * (p.pre.k / 32u) + u] = v;
}

fn put_s(j: u32, u: u32, v: f32) {
    xs[j * (p.pre.k / 32u) + u] = v;
}

fn get_d(j: u32, u: u32) -> f32 {
    return xd[j * (p.pre.k / 32u) + u];
}

fn get_s(j: u32, u: u32) -> f32 {
    return xs[j * (p.pre.k / 32u) + u];
}
#endif

@compute @workgroup_size(WG_SIZE)
fn main(l: Lanes, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat_workgroup(wg, nwg);
    if j >= p.m {
        return;
    }
#ifdef QTYPE_F32
    let k = p.pre.k;
    let base = (p.pre.x_row0 + j) * k;
    let sc = prep_scales(l, base);
    for (var i = l.index; i < k; i += WG_SIZE) {
        if prep_has(PREP_WRITE) {
            x_out[base + i] = prep_res(base, i, sc.x);
        }
        y[j * k + i] = prep_value(base, i, sc);
    }
#else
    prep_row(l, j, true);
#endif
}
