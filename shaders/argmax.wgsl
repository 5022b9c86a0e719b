// Greedy pick: tokens[slot] = the index of the largest of n logits (the lowest index on ties),
// so a decode step reads back 4 bytes and the next step's embedding reads the id on the GPU.
// One workgroup; each invocation scans a strided share, then a tree in workgroup memory.

struct Params {
    n: u32,
    slot: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;      // (n)
@group(0) @binding(2) var<storage, read_write> tokens: array<u32>;

var<workgroup> best_v: array<f32, WG_SIZE>;
var<workgroup> best_i: array<u32, WG_SIZE>;

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) lid: u32) {
    var v = -3.40282347e38;
    var idx = 0xffffffffu;
    for (var i = lid; i < p.n; i += WG_SIZE) {
        let l = logits[i];
        if l > v || idx == 0xffffffffu {
            v = l;
            idx = i;
        }
    }
    best_v[lid] = v;
    best_i[lid] = idx;
    workgroupBarrier();
    for (var s = WG_SIZE / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            let ov = best_v[lid + s];
            let oi = best_i[lid + s];
            if oi != 0xffffffffu && (ov > best_v[lid] || (ov == best_v[lid] && oi < best_i[lid]) || best_i[lid] == 0xffffffffu) {
                best_v[lid] = ov;
                best_i[lid] = oi;
            }
        }
        workgroupBarrier();
    }
    if lid == 0u {
        tokens[p.slot] = best_i[0];
    }
}
