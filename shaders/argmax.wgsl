// Greedy pick: tokens[slot] = the index of the largest of n logits (the lowest index on ties),
// so a decode step reads back 4 bytes and the next step's embedding reads the id on the GPU.
// One workgroup; each invocation scans a strided share, then the workgroup takes the maximum
// value (`wg_max`, subgroup or shared memory) and the lowest index holding it (`wg_min_index`).
// Logits are clamped to -FLT_MAX, so -inf logits are ordinary (tied) candidates. A NaN or +inf
// logit makes the pick meaningless (corrupt weights, an overflow): the id written is then
// NO_INDEX (`kiln::ops::sample::NON_FINITE_ID`), which the host turns into an error.
#import reduce

struct Params {
    n: u32,
    slot: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;      // (n)
@group(0) @binding(2) var<storage, read_write> tokens: array<u32>;

const NO_INDEX: u32 = 0xffffffffu;

var<workgroup> min_scratch: array<u32, WG_SIZE>;
var<workgroup> non_finite: atomic<u32>;  // zero at the start; nonzero once a NaN/+inf is seen

// NaN (either sign) or +inf, by the bits: WGSL lets float operations assume neither exists.
fn unusable(v: f32) -> bool {
    let b = bitcast<u32>(v);
    return (b & 0x7fffffffu) > 0x7f800000u || b == 0x7f800000u;
}

#ifdef SUBGROUP
fn wg_min_index(l: Lanes, v: u32) -> u32 {
    let partial = subgroupMin(v);
    if l.sg_lane == 0u {
        min_scratch[l.sg_id] = partial;
    }
    workgroupBarrier();
    var t = NO_INDEX;
    for (var i = l.sg_lane; i < l.n_sg; i += l.sg_size) {
        t = min(t, min_scratch[i]);
    }
    return subgroupMin(t);
}
#else
fn wg_min_index(l: Lanes, v: u32) -> u32 {
    min_scratch[l.index] = v;
    workgroupBarrier();
    for (var s = WG_SIZE / 2u; s > 0u; s >>= 1u) {
        if l.index < s {
            min_scratch[l.index] = min(min_scratch[l.index], min_scratch[l.index + s]);
        }
        workgroupBarrier();
    }
    return min_scratch[0];
}
#endif

@compute @workgroup_size(WG_SIZE)
fn main(l: Lanes) {
    var v = RED_LOWEST;
    var idx = NO_INDEX;
    var bad = false;
    for (var i = l.index; i < p.n; i += WG_SIZE) {
        let raw = logits[i];
        bad = bad || unusable(raw);
        let x = max(raw, RED_LOWEST);
        if x > v || idx == NO_INDEX {
            v = x;
            idx = i;
        }
    }
    if bad {
        atomicOr(&non_finite, 1u);
    }
    let best = wg_max(l, v);  // its barrier publishes `non_finite`
    var mine = NO_INDEX;
    if idx != NO_INDEX && v == best {
        mine = idx;
    }
    let chosen = wg_min_index(l, mine);
    if l.index == 0u {
        tokens[p.slot] = select(chosen, NO_INDEX, atomicLoad(&non_finite) != 0u);
    }
}
