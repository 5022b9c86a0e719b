// Register-tiled f32 matmul, batched: c[z] = a[z] * op(b[z]) with a (m, k) row-major and
// op(b) (k, n): b is (k, n) when TRANS_B = 0 and (n, k) when TRANS_B = 1 (weights as stored
// in GGUF, one output feature per row). Each invocation computes a TILE_M x TILE_N block of c;
// a workgroup of WG_X x WG_Y invocations covers (WG_Y * TILE_M) x (WG_X * TILE_N).
struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    stride_a: u32,  // elements between batches of a
    stride_b: u32,
    stride_c: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;          // (batch, m, k)
@group(0) @binding(2) var<storage, read> b: array<f32>;          // (batch, k, n) or (batch, n, k)
@group(0) @binding(3) var<storage, read_write> c: array<f32>;    // (batch, m, n)

@compute @workgroup_size(WG_X, WG_Y)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>) {
    let row0 = (wg.y * WG_Y + lid.y) * TILE_M;
    let col0 = (wg.x * WG_X + lid.x) * TILE_N;
    let z = wg.z;
    if row0 >= p.m || col0 >= p.n || z >= p.batch {
        return;
    }
    let a0 = z * p.stride_a;
    let b0 = z * p.stride_b;
    var acc: array<array<f32, TILE_N>, TILE_M>;
    var av: array<f32, TILE_M>;
    var bv: array<f32, TILE_N>;
    for (var kk = 0u; kk < p.k; kk++) {
        for (var i = 0u; i < TILE_M; i++) {
            let r = min(row0 + i, p.m - 1u);
            av[i] = a[a0 + r * p.k + kk];
        }
        for (var j = 0u; j < TILE_N; j++) {
            let col = min(col0 + j, p.n - 1u);
#ifdef TRANS_B
            bv[j] = b[b0 + col * p.k + kk];
#else
            bv[j] = b[b0 + kk * p.n + col];
#endif
        }
        for (var i = 0u; i < TILE_M; i++) {
            for (var j = 0u; j < TILE_N; j++) {
                acc[i][j] = fma(av[i], bv[j], acc[i][j]);
            }
        }
    }
    let c0 = z * p.stride_c;
    for (var i = 0u; i < TILE_M; i++) {
        for (var j = 0u; j < TILE_N; j++) {
            if row0 + i < p.m && col0 + j < p.n {
                c[c0 + (row0 + i) * p.n + col0 + j] = acc[i][j];
            }
        }
    }
}
