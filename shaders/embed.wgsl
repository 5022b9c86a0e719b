// Embedding gather with dequantization: out[t, :] = scale * E[tokens[t0 + t], :]. The token ids
// live in a GPU buffer, so a sampled id feeds the next step without a readback. One workgroup
// per token; invocations split the row's 32-weight units.
#import quant
#import grid

struct Params {
    k: u32,          // row length (multiple of 32)
    row_bytes: u32,
    n_tok: u32,
    t0: u32,         // first index into `tokens`
    scale: f32,
    row0: u32,       // first vocabulary row held by this part of the table
    rows: u32,       // rows held by this part
    pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;           // (vocab, row_bytes / 4)
@group(0) @binding(2) var<storage, read> tokens: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>; // (n_tok, k / 4)

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = flat_workgroup(wg, nwg);
    if t >= p.n_tok {
        return;
    }
    let id = tokens[p.t0 + t];
    // A table larger than one binding is split into parts; each gathers only its own rows.
    if id < p.row0 || id - p.row0 >= p.rows {
        return;
    }
    let base = (id - p.row0) * p.row_bytes;
    let units = p.k / 32u;
    for (var u = lid; u < units; u += WG_SIZE) {
        for (var i = 0u; i < 8u; i++) {
            out[t * (p.k / 4u) + u * 8u + i] = p.scale * unit_vec(base, u, i);
        }
    }
}
