// Fused gated FFN GEMV: out[j, row] = act(Wg[row, :] . x[j, :]) * (Wu[row, :] . x[j, :]) for each
// of `m` activation rows j, with act SiLU (SwiGLU) or GELU (GeGLU). One dispatch instead of
// three (gate gemv, up gemv, gated). The gate and up weights are GGUF blocks (WTYPE) in one
// buffer: gate rows from byte 0, up rows from byte `up_offset`, row `row` of each at
// `row * row_bytes`. Activations are int8-quantized (ACTS=q8, quantize.wgsl; the arithmetic of
// gemv_q8) or f32 (ACTS=f32, for f16 and f32 weights; the arithmetic of gemv). Each of the two
// dot products is summed in the same order as the unfused kernel of the same split sums it:
// - SPLIT=group: one workgroup per output row, invocations split the 32-weight units and combine
//   with a subgroup or shared-memory reduction;
// - SPLIT=thread: one invocation per output row, no reduction and no barrier.
#ifdef ACTS_Q8
#import quant_dot_q8
#else
#import quant_dot
#endif
#import act
#ifdef SPLIT_GROUP
#import reduce
#endif
#import grid

struct Params {
    k: u32,          // row length (multiple of 32; of 256 for K-quants)
    rows: u32,       // rows of Wg (and of Wu) in this part
    row_bytes: u32,  // bytes per weight row
    m: u32,          // activation rows
    x_stride: u32,   // vec4s between f32 activation rows (ACTS=f32)
    y_stride: u32,   // floats between output rows
    y_offset: u32,   // first output column of this part
    up_offset: u32,  // byte offset of Wu's first row in `w` (a multiple of 4)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;           // Wg (rows, row_bytes / 4), then Wu at up_offset
#ifdef ACTS_Q8
@group(0) @binding(2) var<storage, read> xq: array<u32>;          // (m, k / 4) int8 x 4
@group(0) @binding(3) var<storage, read> xd: array<f32>;          // (m, k / 32)
#ifdef XS
@group(0) @binding(4) var<storage, read> xs: array<f32>;          // (m, k / 32)
@group(0) @binding(5) var<storage, read_write> out: array<f32>;   // (m, y_stride)
#else
@group(0) @binding(4) var<storage, read_write> out: array<f32>;   // (m, y_stride)
#endif
#else
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;     // (m, k / 4)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;   // (m, y_stride)

fn xv4(i: u32) -> vec4<f32> {
    return x[i];
}
#endif

// Unit `u` of the gate row and of the up row at byte `base` (from each matrix's start) against
// unit `u` of activation row `j`.
fn unit_dots(base: u32, u: u32, j: u32) -> vec2<f32> {
#ifdef ACTS_Q8
    let a = j * (p.k / 32u) + u;
    return vec2<f32>(unit_dot_q8(base, u, a), unit_dot_q8(p.up_offset + base, u, a));
#else
    let xv = j * p.x_stride + u * 8u;
    return vec2<f32>(unit_dot(base, u, xv), unit_dot(p.up_offset + base, u, xv));
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
        var acc = vec2<f32>(0.0);
        for (var u = 0u; u < units; u++) {
            acc += unit_dots(base, u, j);
        }
        out[j * p.y_stride + p.y_offset + row] = act(acc.x) * acc.y;
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
        var acc = vec2<f32>(0.0);
        for (var u = l.index; u < units; u += WG_SIZE) {
            acc += unit_dots(base, u, j);
        }
        let g = wg_sum(l, acc.x);
        let v = wg_sum(l, acc.y);
        if l.index == 0u {
            out[j * p.y_stride + p.y_offset + row] = act(g) * v;
        }
    }
}
#endif
