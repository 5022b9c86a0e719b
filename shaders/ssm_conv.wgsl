// Mamba's causal depthwise conv1d over n_tok tokens, with the conv state carried between calls:
// kiln-cpu's `causal_conv1d_step` applied to each token in order. Per channel c and token t,
//   out[t, c] = bias[c] + w[c, k-1] * x[t, c] + Σ_{j<k-1} w[c, j] * window[j],
// where window is the k-1 inputs of channel c before token t, oldest first: the state's k-1
// inputs followed by x[0..t]. Afterwards state[c] holds the last k-1 inputs. No activation
// (Mamba applies SiLU next). One invocation per channel walks the tokens; k >= 2.
#import grid

struct Params {
    d: u32,      // channels (d_inner)
    k: u32,      // taps (d_conv)
    n_tok: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;            // (n_tok, d)
@group(0) @binding(2) var<storage, read_write> state: array<f32>;  // (d, k-1), oldest first
@group(0) @binding(3) var<storage, read> w: array<f32>;            // (d, k)
@group(0) @binding(4) var<storage, read> bias: array<f32>;         // (d)
@group(0) @binding(5) var<storage, read_write> out: array<f32>;    // (n_tok, d)

// Input `pos` of channel c in the sequence (state ++ x): the state's slot while pos < k-1.
fn input(c: u32, pos: u32) -> f32 {
    let km1 = p.k - 1u;
    if pos < km1 {
        return state[c * km1 + pos];
    }
    return x[(pos - km1) * p.d + c];
}

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = flat_workgroup(wg, nwg) * WG_SIZE + lid;
    if c >= p.d {
        return;
    }
    let km1 = p.k - 1u;
    let wc = c * p.k;
    for (var t = 0u; t < p.n_tok; t++) {
        // Same order as the CPU twin: bias, the newest tap, then the window oldest first.
        var acc = bias[c] + w[wc + km1] * x[t * p.d + c];
        for (var j = 0u; j < km1; j++) {
            acc += w[wc + j] * input(c, t + j);
        }
        out[t * p.d + c] = acc;
    }
    // Slide the window by n_tok: slot i takes input n_tok + i, read before it is overwritten
    // (n_tok + i > i, and slots are written in ascending order).
    for (var i = 0u; i < km1; i++) {
        state[c * km1 + i] = input(c, p.n_tok + i);
    }
}
