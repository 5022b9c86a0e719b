// Workgroup-wide sum and max of one f32 per invocation, for a kernel of WG_SIZE invocations
// (a power of two). Every invocation gets the result. Call from uniform control flow.
//
// With SUBGROUP: reduce inside each subgroup, one partial per subgroup through workgroup memory,
// then every subgroup reduces the partials (strided by its own size). Without: a tree over
// WG_SIZE slots with a barrier per level.
#import lanes

var<workgroup> red_scratch: array<f32, WG_SIZE>;

// The identity of max: -FLT_MAX rather than -inf, which WGSL lets implementations assume away.
// Written in hex: Tint (Chromium) rejects the decimal -3.40282347e38, which lies just beyond it.
const RED_LOWEST: f32 = -0x1.fffffep+127f;

#ifdef SUBGROUP
fn wg_sum(l: Lanes, v: f32) -> f32 {
    let partial = subgroupAdd(v);
    if l.sg_lane == 0u {
        red_scratch[l.sg_id] = partial;
    }
    workgroupBarrier();
    var t = 0.0;
    for (var i = l.sg_lane; i < l.n_sg; i += l.sg_size) {
        t += red_scratch[i];
    }
    let total = subgroupAdd(t);
    workgroupBarrier();
    return total;
}

fn wg_max(l: Lanes, v: f32) -> f32 {
    let partial = subgroupMax(v);
    if l.sg_lane == 0u {
        red_scratch[l.sg_id] = partial;
    }
    workgroupBarrier();
    var t = RED_LOWEST;
    for (var i = l.sg_lane; i < l.n_sg; i += l.sg_size) {
        t = max(t, red_scratch[i]);
    }
    let total = subgroupMax(t);
    workgroupBarrier();
    return total;
}
#else
fn wg_sum(l: Lanes, v: f32) -> f32 {
    red_scratch[l.index] = v;
    workgroupBarrier();
    for (var s = WG_SIZE / 2u; s > 0u; s >>= 1u) {
        if l.index < s {
            red_scratch[l.index] += red_scratch[l.index + s];
        }
        workgroupBarrier();
    }
    let total = red_scratch[0];
    workgroupBarrier();
    return total;
}

fn wg_max(l: Lanes, v: f32) -> f32 {
    red_scratch[l.index] = v;
    workgroupBarrier();
    for (var s = WG_SIZE / 2u; s > 0u; s >>= 1u) {
        if l.index < s {
            red_scratch[l.index] = max(red_scratch[l.index], red_scratch[l.index + s]);
        }
        workgroupBarrier();
    }
    let total = red_scratch[0];
    workgroupBarrier();
    return total;
}
#endif
