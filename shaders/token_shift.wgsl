// RWKV token shift over n_tok tokens, with the shift state carried between calls: for each mix
// vector m, out[m, t, c] = x[t, c] + (x[t-1, c] - x[t, c]) * mu[m, c], where x[-1] is prev
// (kiln-cpu's `token_shift`). Afterwards prev holds x[n_tok-1]. Several mixes (RWKV-6's channel
// mix has two) read the same previous token in one pass. One invocation per channel walks the
// tokens, so the state is read before it is replaced. Mix m's rows start at m * mix_stride, a
// stride the runtime rounds up so that each mix's output can be bound on its own.
#import grid

struct Params {
    d: u32,       // channels
    n_tok: u32,
    n_mix: u32,
    mix_stride: u32,  // elements from one mix's output to the next, >= n_tok * d
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;           // (n_tok, d)
@group(0) @binding(2) var<storage, read_write> prev: array<f32>;  // (d) shift state
@group(0) @binding(3) var<storage, read> mu: array<f32>;          // (n_mix, d)
@group(0) @binding(4) var<storage, read_write> out: array<f32>;   // (n_mix, mix_stride), (n_tok, d) used

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = flat_workgroup(wg, nwg) * WG_SIZE + lid;
    if c >= p.d {
        return;
    }
    var last = prev[c];
    for (var t = 0u; t < p.n_tok; t++) {
        let xv = x[t * p.d + c];
        for (var m = 0u; m < p.n_mix; m++) {
            out[m * p.mix_stride + t * p.d + c] = xv + (last - xv) * mu[m * p.d + c];
        }
        last = xv;
    }
    prev[c] = last;
}
