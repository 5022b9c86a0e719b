// Row softmax, numerically stable: out[r, i] = exp(s x[r, i] - m) / sum_j exp(s x[r, j] - m)
// with m the row's maximum of s x and s an optional scale (1 for a plain softmax, 1/sqrt(d) for
// attention scores). One workgroup per row, three passes: the max, then exp written to `out`
// with its sum, then `out` scaled by 1 / sum (each invocation rescales only the entries it
// wrote, so no barrier is needed between the last two). Every exponent is <= 0, so nothing
// overflows for inputs of any finite magnitude. x and out must be different buffers.
#import reduce
#import grid

struct Params {
    n: u32,      // row length
    rows: u32,
    scale: f32,  // s
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (rows, n)
@group(0) @binding(2) var<storage, read_write> out: array<f32>;  // (rows, n)

@compute @workgroup_size(WG_SIZE)
fn main(l: Lanes, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_workgroup(wg, nwg);
    // Uniform across the workgroup, so the barriers in the reductions stay uniform.
    if row >= p.rows {
        return;
    }
    let base = row * p.n;
    var m = RED_LOWEST;
    for (var i = l.index; i < p.n; i += WG_SIZE) {
        m = max(m, p.scale * x[base + i]);
    }
    m = wg_max(l, m);
    var s = 0.0;
    for (var i = l.index; i < p.n; i += WG_SIZE) {
        let e = exp(p.scale * x[base + i] - m);
        out[base + i] = e;
        s += e;
    }
    let inv = 1.0 / wg_sum(l, s);
    for (var i = l.index; i < p.n; i += WG_SIZE) {
        out[base + i] *= inv;
    }
}
