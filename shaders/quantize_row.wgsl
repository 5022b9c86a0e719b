// Symmetric int8 quantization with one scale per row (the activations of the W8A8 GEMV):
// d[r] = max_i |x[r, i]| / 127, q[r, i] = round(x[r, i] / d[r]) in -127..=127 (ties to even;
// an all-zero row gets d = 0 and q = 0), four quants packed per u32, lowest byte first.
// One workgroup per row; k must be a multiple of 4.
#import reduce
#import grid

struct Params {
    k: u32,  // row length
    m: u32,  // rows
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;     // (m, k / 4)
@group(0) @binding(2) var<storage, read_write> xq: array<u32>;    // (m, k / 4) int8 x 4
@group(0) @binding(3) var<storage, read_write> xd: array<f32>;    // (m)

@compute @workgroup_size(WG_SIZE)
fn main(l: Lanes, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_workgroup(wg, nwg);
    // Uniform across the workgroup, so the barrier in the reduction stays uniform.
    if row >= p.m {
        return;
    }
    let k4 = p.k / 4u;
    let base = row * k4;
    var a = 0.0;
    for (var i = l.index; i < k4; i += WG_SIZE) {
        let v = abs(x[base + i]);
        a = max(a, max(max(v.x, v.y), max(v.z, v.w)));
    }
    let amax = wg_max(l, a);
    let d = amax / 127.0;
    let id = select(0.0, 1.0 / d, d > 0.0);
    for (var i = l.index; i < k4; i += WG_SIZE) {
        let q = vec4<u32>(bitcast<vec4<u32>>(vec4<i32>(round(x[base + i] * id))) & vec4<u32>(0xffu));
        xq[base + i] = q.x | (q.y << 8u) | (q.z << 16u) | (q.w << 24u);
    }
    if l.index == 0u {
        xd[row] = d;
    }
}
