// The pointwise steps of RWKV's channel mix (kiln-cpu's `channel_mix`), for i < n:
//   OP=relu_sq:      x[i] = max(x[i], 0)^2, in place (the squared ReLU of the key)
//   OP=sigmoid_gate: x[i] = sigmoid(g[i]) * x[i], in place (RWKV-6's receptance gate)
#import grid

struct Params {
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;  // (n)
#ifdef OP_SIGMOID_GATE
@group(0) @binding(2) var<storage, read> g: array<f32>;        // (n)
#endif

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_workgroup(wg, nwg) * WG_SIZE + lid;
    if i >= p.n {
        return;
    }
#ifdef OP_RELU_SQ
    let v = max(x[i], 0.0);
    x[i] = v * v;
#endif
#ifdef OP_SIGMOID_GATE
    x[i] = x[i] * (1.0 / (1.0 + exp(-g[i])));
#endif
}
