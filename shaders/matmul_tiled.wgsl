// Shared-memory-tiled matmul, batched: c[z] = a[z] * op(b[z]) with a (m, k) row-major and
// op(b) (k, n): b is (k, n) when TRANS_B = 0 and (n, k) when TRANS_B = 1 (weights as stored in
// GGUF, one output feature per row). a and b are stored as DTYPE (f32, or f16 with SHADER_F16),
// c is f32; products are accumulated in f32. Batches sit `stride_*` elements apart.
//
// A workgroup of WG_X x WG_Y invocations owns a BM x BN block of c (BM = WG_Y * TILE_M,
// BN = WG_X * TILE_N). It walks k in steps of TILE_K: all invocations copy a BM x TILE_K tile of
// a and a TILE_K x BN tile of op(b) into workgroup memory (converted to f32, zero outside the
// matrices), then each invocation accumulates its TILE_M x TILE_N register sub-tile from them.
// Its rows are lid.y + WG_Y * i and its columns lid.x + WG_X * j, so neighbouring invocations
// read neighbouring workgroup words and write neighbouring columns of c.
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
@group(0) @binding(1) var<storage, read> a: array<DTYPE>;        // (batch, m, k)
@group(0) @binding(2) var<storage, read> b: array<DTYPE>;        // (batch, k, n) or (batch, n, k)
@group(0) @binding(3) var<storage, read_write> c: array<f32>;    // (batch, m, n)

const BM: u32 = WG_Y * TILE_M;
const BN: u32 = WG_X * TILE_N;
const THREADS: u32 = WG_X * WG_Y;

var<workgroup> ta: array<f32, TILE_K * BM>;  // [kk][row]
var<workgroup> tb: array<f32, TILE_K * BN>;  // [kk][col]

@compute @workgroup_size(WG_X, WG_Y)
fn main(@builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32,
        @builtin(workgroup_id) wg: vec3<u32>) {
    let row0 = wg.y * BM;
    let col0 = wg.x * BN;
    let z = wg.z;
    let a0 = z * p.stride_a;
    let b0 = z * p.stride_b;
    var acc: array<array<f32, TILE_N>, TILE_M>;
    var av: array<f32, TILE_M>;
    var bv: array<f32, TILE_N>;
    // Every invocation takes part in every barrier: no early return before the last one.
    for (var k0 = 0u; k0 < p.k; k0 += TILE_K) {
        // a's tile: consecutive invocations read consecutive k of one row.
        for (var e = li; e < TILE_K * BM; e += THREADS) {
            let kk = e % TILE_K;
            let r = e / TILE_K;
            var v = 0.0;
            if row0 + r < p.m && k0 + kk < p.k {
                v = f32(a[a0 + (row0 + r) * p.k + k0 + kk]);
            }
            ta[kk * BM + r] = v;
        }
        for (var e = li; e < TILE_K * BN; e += THREADS) {
#ifdef TRANS_B
            // b (n, k): consecutive invocations read consecutive k of one column.
            let kk = e % TILE_K;
            let col = e / TILE_K;
            var v = 0.0;
            if col0 + col < p.n && k0 + kk < p.k {
                v = f32(b[b0 + (col0 + col) * p.k + k0 + kk]);
            }
#else
            // b (k, n): consecutive invocations read consecutive columns of one k.
            let col = e % BN;
            let kk = e / BN;
            var v = 0.0;
            if col0 + col < p.n && k0 + kk < p.k {
                v = f32(b[b0 + (k0 + kk) * p.n + col0 + col]);
            }
#endif
            tb[kk * BN + col] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            for (var i = 0u; i < TILE_M; i++) {
                av[i] = ta[kk * BM + lid.y + WG_Y * i];
            }
            for (var j = 0u; j < TILE_N; j++) {
                bv[j] = tb[kk * BN + lid.x + WG_X * j];
            }
            for (var i = 0u; i < TILE_M; i++) {
                for (var j = 0u; j < TILE_N; j++) {
                    acc[i][j] = fma(av[i], bv[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }
    let c0 = z * p.stride_c;
    for (var i = 0u; i < TILE_M; i++) {
        let r = row0 + lid.y + WG_Y * i;
        for (var j = 0u; j < TILE_N; j++) {
            let col = col0 + lid.x + WG_X * j;
            if r < p.m && col < p.n {
                c[c0 + r * p.n + col] = acc[i][j];
            }
        }
    }
}
