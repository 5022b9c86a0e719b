// W8A8 matrix-vector product with per-row scales: int8 weights with one f32 scale per output
// row (per-channel), int8 activations with one scale per activation row (quantize_row.wgsl):
// y[j, y_offset + r] = ws[r] * xd[j] * sum_i W[r, i] * xq[j, i], the sum exact in i32 (k up to
// 132104 with activations in -127..=127). Work splits as in gemv_q8.wgsl: SPLIT=group (one
// workgroup per weight row, subgroup or shared-memory reduction) or SPLIT=thread (one invocation
// per weight row). DOT4 picks dot4I8Packed for the 4-byte dots.
#import int_dot
#ifdef SPLIT_GROUP
#import reduce
#endif
#import grid

struct Params {
    k4: u32,       // words per row: k / 4
    rows: u32,     // weight rows
    m: u32,        // activation rows
    y_stride: u32, // floats between output rows
    y_offset: u32, // first output column written
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;          // (rows, k / 4) int8 x 4
@group(0) @binding(2) var<storage, read> ws: array<f32>;         // (rows)
@group(0) @binding(3) var<storage, read> xq: array<u32>;         // (m, k / 4) int8 x 4
@group(0) @binding(4) var<storage, read> xd: array<f32>;         // (m)
@group(0) @binding(5) var<storage, read_write> y: array<f32>;    // (m, y_stride)

#ifdef SPLIT_THREAD
@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_workgroup(wg, nwg) * WG_SIZE + lid;
    if row >= p.rows {
        return;
    }
    let wb = row * p.k4;
    for (var j = 0u; j < p.m; j++) {
        let xb = j * p.k4;
        var acc = 0;
        for (var i = 0u; i < p.k4; i++) {
            acc += dot_i8(w[wb + i], xq[xb + i]);
        }
        y[j * p.y_stride + p.y_offset + row] = ws[row] * xd[j] * f32(acc);
    }
}
#endif

#ifdef SPLIT_GROUP
@compute @workgroup_size(WG_SIZE)
fn main(l: Lanes, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_workgroup(wg, nwg);
    // Uniform across the workgroup, so the barriers in the reductions stay uniform.
    if row >= p.rows {
        return;
    }
    let wb = row * p.k4;
    for (var j = 0u; j < p.m; j++) {
        let xb = j * p.k4;
        var acc = 0;
        for (var i = l.index; i < p.k4; i += WG_SIZE) {
            acc += dot_i8(w[wb + i], xq[xb + i]);
        }
        // A partial is exact in f32 below 2^24 (k up to ~66000); beyond, f32 rounds it.
        let s = wg_sum(l, f32(acc));
        if l.index == 0u {
            y[j * p.y_stride + p.y_offset + row] = ws[row] * xd[j] * s;
        }
    }
}
#endif
