// RMSNorm over rows: out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * (w + w_offset).
// w_offset is 0 for the usual form and 1 for Gemma's (1 + w) form. One workgroup per row;
// x and out must be different buffers.
#import reduce
#import grid

struct Params {
    n: u32,          // row length
    rows: u32,
    eps: f32,
    w_offset: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (rows, n)
@group(0) @binding(2) var<storage, read> w: array<f32>;          // (n)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // (rows, n)

@compute @workgroup_size(WG_SIZE)
fn main(l: Lanes, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_workgroup(wg, nwg);
    if row >= p.rows {
        return;
    }
    let base = row * p.n;
    var ss = 0.0;
    for (var i = l.index; i < p.n; i += WG_SIZE) {
        let v = x[base + i];
        ss += v * v;
    }
    let scale = inverseSqrt(wg_sum(l, ss) / f32(p.n) + p.eps);
    for (var i = l.index; i < p.n; i += WG_SIZE) {
        out[base + i] = x[base + i] * scale * (w[i] + p.w_offset);
    }
}
