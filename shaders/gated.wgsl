// Gated activation of a fused FFN: out[i] = act(gate[i]) * up[i], with act SiLU (SwiGLU) or
// GELU in its tanh form (GeGLU, Gemma). gate and up are the two halves written by the gate and
// up projections.
#import grid

struct Params {
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate: array<f32>;       // (n)
@group(0) @binding(2) var<storage, read> up: array<f32>;         // (n)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // (n)

fn act(v: f32) -> f32 {
#ifdef ACT_SILU
    return v / (1.0 + exp(-v));
#endif
#ifdef ACT_GELU
    // 0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3))), with a tanh that stays finite.
    let u = 0.7978845608 * (v + 0.044715 * v * v * v);
    let e = exp(-2.0 * abs(u));
    return 0.5 * v * (1.0 + sign(u) * (1.0 - e) / (1.0 + e));
#endif
}

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_workgroup(wg, nwg) * WG_SIZE + lid;
    if i >= p.n {
        return;
    }
    out[i] = act(gate[i]) * up[i];
}
