// Rotary position embedding, in place, on x (n_tok, n_head, head_dim): token t is at position
// pos0 + t. The first rot_dims dimensions of each head rotate; pair i turns by
// (pos * freq_scale) * base^(-2i / rot_dims). NORM layout pairs (2i, 2i + 1) (llama), NEOX pairs
// (i, i + rot_dims / 2) (qwen2, gemma3). One invocation per pair.
#import grid
#import rope

struct Params {
    n_head: u32,
    head_dim: u32,
    rot_dims: u32,
    n_tok: u32,
    pos0: u32,
    base: f32,
    freq_scale: f32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;   // (n_tok, n_head, head_dim)

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let half_rot = p.rot_dims / 2u;
    let id = flat_workgroup(wg, nwg) * WG_SIZE + lid;
    if id >= p.n_tok * p.n_head * half_rot {
        return;
    }
    let i = id % half_rot;
    let head = id / half_rot;               // token * n_head + head
    let t = head / p.n_head;
    let pos = f32(p.pos0 + t) * p.freq_scale;
    let cs = rope_cos_sin(pos, p.base, i, p.rot_dims, 1.0);
    let c = cs.x;
    let s = cs.y;
    let base = head * p.head_dim;
#ifdef LAYOUT_NEOX
    let a = base + i;
    let b = base + i + half_rot;
#else
    let a = base + 2u * i;
    let b = a + 1u;
#endif
    let x0 = x[a];
    let x1 = x[b];
    x[a] = x0 * c - x1 * s;
    x[b] = x0 * s + x1 * c;
}
