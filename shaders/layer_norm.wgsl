// LayerNorm over rows: out[r, :] = (x[r, :] - mean) / sqrt(var + eps) * w + b, with the mean
// and the (biased) variance of the row computed in two passes, as kiln_cpu::ops::layer_norm
// does. `w` and `b` are optional: with has_w = 0 (has_b = 0) the binding is not read and the
// weight is 1 (the bias 0). One workgroup per row; x and out must be different buffers.
#import reduce
#import grid

struct Params {
    n: u32,      // row length
    rows: u32,
    eps: f32,
    has_w: u32,  // 1: multiply by w
    has_b: u32,  // 1: add b
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (rows, n)
@group(0) @binding(2) var<storage, read> w: array<f32>;          // (n), or any buffer if !has_w
@group(0) @binding(3) var<storage, read> b: array<f32>;          // (n), or any buffer if !has_b
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // (rows, n)

@compute @workgroup_size(WG_SIZE)
fn main(l: Lanes, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_workgroup(wg, nwg);
    // Uniform across the workgroup, so the barriers in the reductions stay uniform.
    if row >= p.rows {
        return;
    }
    let base = row * p.n;
    var s = 0.0;
    for (var i = l.index; i < p.n; i += WG_SIZE) {
        s += x[base + i];
    }
    let mean = wg_sum(l, s) / f32(p.n);
    var ss = 0.0;
    for (var i = l.index; i < p.n; i += WG_SIZE) {
        let d = x[base + i] - mean;
        ss += d * d;
    }
    let r = inverseSqrt(wg_sum(l, ss) / f32(p.n) + p.eps);
    for (var i = l.index; i < p.n; i += WG_SIZE) {
        var v = (x[base + i] - mean) * r;
        if p.has_w != 0u {
            v *= w[i];
        }
        if p.has_b != 0u {
            v += b[i];
        }
        out[base + i] = v;
    }
}
