// Merges the partial results of split attention (attention_flash.wgsl with OUT=split): for each
// query row, the splits' maxima m_s, sums l_s and unnormalized accumulators acc_s become
// out = sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s with M = max_s m_s. A split that saw
// no position of a row has m_s = -FLT_MAX and l_s = 0 and drops out. One invocation per output
// value.
#import grid

struct Params {
    n_rows: u32,      // n_tok * n_head
    head_dim: u32,
    n_split: u32,
    pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;        // (n_split, n_rows, head_dim + 2)
@group(0) @binding(2) var<storage, read_write> out: array<f32>;   // (n_rows, head_dim)

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = flat_workgroup(wg, nwg) * WG_SIZE + lid;
    if id >= p.n_rows * p.head_dim {
        return;
    }
    let row = id / p.head_dim;
    let d = id % p.head_dim;
    let stride = p.head_dim + 2u;
    var m = -0x1.fffffep+127f;
    for (var s = 0u; s < p.n_split; s++) {
        m = max(m, part[(s * p.n_rows + row) * stride + p.head_dim]);
    }
    var l = 0.0;
    var acc = 0.0;
    for (var s = 0u; s < p.n_split; s++) {
        let base = (s * p.n_rows + row) * stride;
        let w = exp(part[base + p.head_dim] - m);
        l += w * part[base + p.head_dim + 1u];
        acc += w * part[base + d];
    }
    out[id] = acc / l;
}
