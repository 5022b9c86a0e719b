// In-place accumulate with broadcast: x[i] += b[i % period] for i < n. period = n is a
// residual add; period = row length adds a bias to every row.
#import grid

struct Params {
    n: u32,
    period: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;    // (n)
@group(0) @binding(2) var<storage, read> b: array<f32>;          // (period)

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_workgroup(wg, nwg) * WG_SIZE + lid;
    if i >= p.n {
        return;
    }
    x[i] += b[i % p.period];
}
