// Binary elementwise: out[i] = a[i] OP b[i] for i < n, storage DTYPE, arithmetic in DTYPE.
// VEC=vec4 handles four elements per invocation (n must be a multiple of 4).
#import grid

#ifdef VEC_VEC4
alias T = vec4<DTYPE>;
const PER: u32 = 4u;
#else
alias T = DTYPE;
const PER: u32 = 1u;
#endif

struct Params {
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<T>;        // (n)
@group(0) @binding(2) var<storage, read> b: array<T>;        // (n)
@group(0) @binding(3) var<storage, read_write> out: array<T>; // (n)

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_workgroup(wg, nwg) * WG_SIZE + lid;
    if i >= p.n / PER {
        return;
    }
#ifdef OP_ADD
    out[i] = a[i] + b[i];
#endif
#ifdef OP_MUL
    out[i] = a[i] * b[i];
#endif
}
