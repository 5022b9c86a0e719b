// A quantized GEMV with its input prepared in the same dispatch: every workgroup first runs
// shared/prep.wgsl's prologue on activation row j (residual add, optional post-norm, RMSNorm,
// int8 quantization for the weights' type) into workgroup memory, then multiplies its weight
// rows by it with gemv_q8's integer block dots (quant_dot_q8.wgsl reads the activations from
// workgroup memory here). One dispatch replaces prep + gemv_q8 (and rms_norm + quantize +
// add_inplace before it); workgroup 0 also stores the new residual (PREP_WRITE).
// - GATED=0: y[j, y_offset + row] (+)= W[row, :] . v[j, :] (`acc` adds, for a fused residual);
// - GATED=1: y[j, y_offset + row] = act(Wg[row, :] . v[j, :]) * (Wu[row, :] . v[j, :]), gate and
//   up rows in one buffer (up from byte `up_offset`), as gemv_gated.wgsl.
// Work splits as gemv_q8's:
// - SPLIT=group: ROWS weight rows per workgroup, WG_SIZE / ROWS invocations per row striding
//   its 32-weight units, partial sums combined in a fixed order through workgroup memory;
// - SPLIT=thread: one invocation per weight row (CPU-like adapters).
// Rows of up to MAX_K activations (the quantized row lives in workgroup memory).
#import quant_dot_q8
#import prep_quant
#import grid
#ifdef GATED
#import act
#endif

struct Params {
    pre: Prep,
    rows: u32,       // weight rows (of Wg and of Wu when GATED)
    row_bytes: u32,  // bytes per weight row
    m: u32,          // activation rows
    y_stride: u32,   // floats between output rows
    y_offset: u32,   // first output column of these rows
    up_offset: u32,  // GATED: byte offset of Wu's first row in `w` (a multiple of 4)
    acc: u32,        // 1: add to y instead of storing (GATED=0)
    pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;           // (rows, row_bytes / 4) blocks
@group(0) @binding(2) var<storage, read> x_in: array<f32>;        // (x_row0 + m, k)
@group(0) @binding(3) var<storage, read> t: array<f32>;           // (x_row0 + m, k), PREP_RES
@group(0) @binding(4) var<storage, read> vecs: array<f32>;        // norm weights
@group(0) @binding(5) var<storage, read_write> x_out: array<f32>; // (x_row0 + m, k), PREP_WRITE
@group(0) @binding(6) var<storage, read_write> y: array<f32>;     // (m, y_stride)

#ifdef WTYPE_Q4_0
const ACT_KIND: u32 = ACT_Q8_0;
#endif
#ifdef WTYPE_Q5_0
const ACT_KIND: u32 = ACT_Q8_0;
#endif
#ifdef WTYPE_Q8_0
const ACT_KIND: u32 = ACT_Q8_0;
#endif
#ifdef WTYPE_Q4_1
const ACT_KIND: u32 = ACT_Q8_1;
#endif
#ifdef WTYPE_Q4_K
const ACT_KIND: u32 = ACT_Q8K;
#endif
#ifdef WTYPE_Q6_K
const ACT_KIND: u32 = ACT_Q8K;
#endif

// One prepared activation row: int8 words, unit scales and sums (quant_dot_q8's inputs).
var<workgroup> xq: array<u32, MAX_K / 4>;
var<workgroup> xd: array<f32, MAX_K / 32>;
var<workgroup> xs: array<f32, MAX_K / 32>;
var<workgroup> blk: array<vec2<f32>, MAX_K / 256>;

fn prep_barrier() {
    workgroupBarrier();
}

fn put_q(j: u32, word: u32, v: u32) {
    xq[word] = v;
}

fn put_d(j: u32, u: u32, v: f32) {
    xd[u] = v;
}

fn put_s(j: u32, u: u32, v: f32) {
    xs[u] = v;
}

fn get_d(j: u32, u: u32) -> f32 {
    return xd[u];
}

fn get_s(j: u32, u: u32) -> f32 {
    return xs[u];
}

// Unit u of the row at byte `base` against unit u of the prepared row (of the up row too).
fn unit_dots(base: u32, u: u32) -> vec2<f32> {
#ifdef GATED
    return vec2<f32>(unit_dot_q8(base, u, u), unit_dot_q8(p.up_offset + base, u, u));
#else
    return vec2<f32>(unit_dot_q8(base, u, u), 0.0);
#endif
}

fn store(j: u32, row: u32, s: vec2<f32>) {
    let o = j * p.y_stride + p.y_offset + row;
#ifdef GATED
    y[o] = act(s.x) * s.y;
#else
    if p.acc != 0u {
        y[o] += s.x;
    } else {
        y[o] = s.x;
    }
#endif
}

#ifdef SPLIT_THREAD
@compute @workgroup_size(WG_SIZE)
fn main(l: Lanes, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = flat_workgroup(wg, nwg);
    let row = g * WG_SIZE + l.index;
    let units = p.pre.k / 32u;
    let base = row * p.row_bytes;
    for (var j = 0u; j < p.m; j++) {
        prep_row(l, j, g == 0u);
        if row < p.rows {
            var acc = vec2<f32>(0.0);
            for (var u = 0u; u < units; u++) {
                acc += unit_dots(base, u);
            }
            store(j, row, acc);
        }
        workgroupBarrier();
    }
}
#endif

#ifdef SPLIT_GROUP
const LANES: u32 = WG_SIZE / ROWS;

var<workgroup> part: array<vec2<f32>, WG_SIZE>;

@compute @workgroup_size(WG_SIZE)
fn main(l: Lanes, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = flat_workgroup(wg, nwg);
    let lane = l.index % LANES;
    let row = g * ROWS + l.index / LANES;
    let units = p.pre.k / 32u;
    let base = row * p.row_bytes;
    for (var j = 0u; j < p.m; j++) {
        prep_row(l, j, g == 0u);
        var acc = vec2<f32>(0.0);
        if row < p.rows {
            for (var u = lane; u < units; u += LANES) {
                acc += unit_dots(base, u);
            }
        }
        part[l.index] = acc;
        workgroupBarrier();
        if lane == 0u && row < p.rows {
            var s = vec2<f32>(0.0);
            for (var c = 0u; c < LANES; c++) {
                s += part[l.index + c];
            }
            store(j, row, s);
        }
        workgroupBarrier();
    }
}
#endif
