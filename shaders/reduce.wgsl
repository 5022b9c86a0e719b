// Row reduction: out[r] = sum or max of x[r, 0..n]. One workgroup per row.
#import reduce
#import grid

struct Params {
    n: u32,     // row length
    rows: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (rows, n)
@group(0) @binding(2) var<storage, read_write> out: array<f32>;  // (rows)

@compute @workgroup_size(WG_SIZE)
fn main(l: Lanes, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_workgroup(wg, nwg);
    // The row index is uniform across the workgroup, so an early return keeps barriers uniform.
    if row >= p.rows {
        return;
    }
    let base = row * p.n;
#ifdef OP_SUM
    var acc = 0.0;
    for (var i = l.index; i < p.n; i += WG_SIZE) {
        acc += x[base + i];
    }
    let r = wg_sum(l, acc);
#endif
#ifdef OP_MAX
    var acc = RED_LOWEST;
    for (var i = l.index; i < p.n; i += WG_SIZE) {
        acc = max(acc, x[base + i]);
    }
    let r = wg_max(l, acc);
#endif
    if l.index == 0u {
        out[row] = r;
    }
}
