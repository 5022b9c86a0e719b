// Quantized matrix-vector product, dequantization fused: y[j, row] (+)= W[row, :] . x[j, :]
// for each of `m` activation rows j. W is stored as GGUF blocks (WTYPE), one output feature per
// row. Activations x are ADTYPE (f32, or f16 where the device has SHADER_F16). Two ways to split
// the work:
// - SPLIT=group: one workgroup per weight row; its invocations split the row's 32-weight units
//   and combine with a subgroup or shared-memory reduction (GPUs: neighbouring invocations read
//   neighbouring blocks);
// - SPLIT=thread: one invocation per weight row, no reduction and no barrier (CPU-like adapters
//   such as lavapipe, where every workgroup and barrier costs a context switch).
#import quant_dot
#ifdef SPLIT_GROUP
#import reduce
#endif
#import grid

struct Params {
    k: u32,          // row length (multiple of 32; of 256 for K-quants)
    rows: u32,       // weight rows in this part
    row_bytes: u32,  // bytes per weight row
    m: u32,          // activation rows
    x_stride: u32,   // vec4s between activation rows
    y_stride: u32,   // floats between output rows
    y_offset: u32,   // first output column (row of W) of this part
    pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;           // (rows, row_bytes / 4) blocks
@group(0) @binding(2) var<storage, read> x: array<vec4<ADTYPE>>;  // (m, k / 4)
@group(0) @binding(3) var<storage, read_write> y: array<f32>;     // (m, y_stride)

// Activations are f32, or f16 (ADTYPE=f16: W4A16 and friends, half the activation traffic);
// the dot products accumulate in f32 either way.
fn xv4(i: u32) -> vec4<f32> {
    return vec4<f32>(x[i]);
}

fn store(o: u32, s: f32) {
#ifdef ACC
    y[o] += s;
#else
    y[o] = s;
#endif
}

#ifdef SPLIT_THREAD
@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_workgroup(wg, nwg) * WG_SIZE + lid;
    if row >= p.rows {
        return;
    }
    let units = p.k / 32u;
    let base = row * p.row_bytes;
    for (var j = 0u; j < p.m; j++) {
        var acc = 0.0;
        for (var u = 0u; u < units; u++) {
            acc += unit_dot(base, u, j * p.x_stride + u * 8u);
        }
        store(j * p.y_stride + p.y_offset + row, acc);
    }
}
#endif

#ifdef SPLIT_GROUP
@compute @workgroup_size(WG_SIZE)
fn main(l: Lanes, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_workgroup(wg, nwg);
    if row >= p.rows {
        return;
    }
    let units = p.k / 32u;
    let base = row * p.row_bytes;
    for (var j = 0u; j < p.m; j++) {
        var acc = 0.0;
        for (var u = l.index; u < units; u += WG_SIZE) {
            acc += unit_dot(base, u, j * p.x_stride + u * 8u);
        }
        let s = wg_sum(l, acc);
        if l.index == 0u {
            store(j * p.y_stride + p.y_offset + row, s);
        }
    }
}
#endif
