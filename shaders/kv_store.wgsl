// Appends n_tok rows of keys or values (f32, (n_tok, n_kv_head, head_dim)) to a cache laid out
// (n_kv_head, capacity, head_dim) at positions pos0.., stored as f16 pairs packed in u32 (KV=f16:
// the cache is half size on every device, with or without SHADER_F16) or as f32 pairs (KV=f32).
// One invocation per pair.
#import grid
#import kv

struct Params {
    n_kv_head: u32,
    head_dim: u32,
    capacity: u32,
    n_tok: u32,
    pos0: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec2<f32>>;       // (n_tok, n_kv_head, head_dim / 2)
@group(0) @binding(2) var<storage, read_write> cache: array<KvPair>;  // (n_kv_head, capacity, head_dim / 2)

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let pairs = p.head_dim / 2u;
    let id = flat_workgroup(wg, nwg) * WG_SIZE + lid;
    if id >= p.n_tok * p.n_kv_head * pairs {
        return;
    }
    let d = id % pairs;
    let h = (id / pairs) % p.n_kv_head;
    let t = id / (pairs * p.n_kv_head);
    cache[(h * p.capacity + p.pos0 + t) * pairs + d] = kv_pack(src[id]);
}
