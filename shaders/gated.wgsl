// Gated activation of a fused FFN: out[i] = act(gate[i]) * up[i], with act SiLU (SwiGLU) or
// GELU in its tanh form (GeGLU, Gemma). gate and up are the two halves written by the gate and
// up projections.
#import grid
#import act

struct Params {
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate: array<f32>;       // (n)
@group(0) @binding(2) var<storage, read> up: array<f32>;         // (n)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // (n)

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_workgroup(wg, nwg) * WG_SIZE + lid;
    if i >= p.n {
        return;
    }
    out[i] = act(gate[i]) * up[i];
}
