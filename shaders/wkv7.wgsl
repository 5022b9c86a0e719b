// RWKV-7 WKV time mixing over n_tok tokens (llama.cpp's generalized form), with the per-head
// state carried between calls: kiln-cpu's `wkv7_step` applied to each token in order. Per head,
// with state S[i][j] (i over values, j over keys):
//   sa[i] = Σ_j a[j] * S[i][j],   S[i][j] = S[i][j] * w[j] + v[i] * k[j] + sa[i] * b[j],
//   y[i] = Σ_j S[i][j] * r[j]
// i.e. S <- S·(diag(w) + a·bᵀ) + v·kᵀ and y = S·r.
//
// One workgroup per head; invocation i keeps row i of the head's state in registers for the
// whole sequence (head size n <= MAX_HEAD = WG_SIZE). Tokens go in chunks of CHUNK whose w, k, a,
// b, r are staged in workgroup memory, zero-padded to MAX_HEAD, so the inner loops have a
// constant trip count: a padded key j adds nothing to sa or y and keeps S[i][j] = 0. Sums over j
// run in the CPU twin's order. A decode step is n_tok = 1.

struct Params {
    n_head: u32,
    n: u32,      // head size
    n_tok: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> state: array<f32>;  // (n_head, n, n) S[i][j]
@group(0) @binding(2) var<storage, read> r: array<f32>;            // (n_tok, n_head * n)
@group(0) @binding(3) var<storage, read> w: array<f32>;            // (n_tok, n_head * n)
@group(0) @binding(4) var<storage, read> k: array<f32>;            // (n_tok, n_head * n)
@group(0) @binding(5) var<storage, read> v: array<f32>;            // (n_tok, n_head * n)
@group(0) @binding(6) var<storage, read> a: array<f32>;            // (n_tok, n_head * n)
@group(0) @binding(7) var<storage, read> b: array<f32>;            // (n_tok, n_head * n)
@group(0) @binding(8) var<storage, read_write> y: array<f32>;      // (n_tok, n_head * n)

var<workgroup> sh_r: array<f32, CHUNK * MAX_HEAD>;  // (CHUNK, MAX_HEAD)
var<workgroup> sh_w: array<f32, CHUNK * MAX_HEAD>;
var<workgroup> sh_k: array<f32, CHUNK * MAX_HEAD>;
var<workgroup> sh_a: array<f32, CHUNK * MAX_HEAD>;
var<workgroup> sh_b: array<f32, CHUNK * MAX_HEAD>;

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) i: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let head = wg.x;
    if head >= p.n_head {
        return;
    }
    let n = p.n;
    let width = p.n_head * n;
    let o = head * n;
    let base = head * n * n;
    let live = i < n;
    var s: array<f32, MAX_HEAD>;
    if live {
        for (var j = 0u; j < n; j++) {
            s[j] = state[base + i * n + j];
        }
    }
    for (var t0 = 0u; t0 < p.n_tok; t0 += CHUNK) {
        let len = min(CHUNK, p.n_tok - t0);
        for (var e = i; e < CHUNK * MAX_HEAD; e += WG_SIZE) {
            let tl = e / MAX_HEAD;
            let j = e % MAX_HEAD;
            var rv = 0.0;
            var wv = 0.0;
            var kv = 0.0;
            var av = 0.0;
            var bv = 0.0;
            if tl < len && j < n {
                let at = (t0 + tl) * width + o + j;
                rv = r[at];
                wv = w[at];
                kv = k[at];
                av = a[at];
                bv = b[at];
            }
            sh_r[e] = rv;
            sh_w[e] = wv;
            sh_k[e] = kv;
            sh_a[e] = av;
            sh_b[e] = bv;
        }
        workgroupBarrier();
        if live {
            for (var tl = 0u; tl < len; tl++) {
                let row = tl * MAX_HEAD;
                let at = (t0 + tl) * width + o + i;
                let vi = v[at];
                var sa = 0.0;
                for (var j = 0u; j < MAX_HEAD; j++) {
                    sa += sh_a[row + j] * s[j];
                }
                var yi = 0.0;
                for (var j = 0u; j < MAX_HEAD; j++) {
                    s[j] = s[j] * sh_w[row + j] + vi * sh_k[row + j] + sa * sh_b[row + j];
                    yi += s[j] * sh_r[row + j];
                }
                y[at] = yi;
            }
        }
        workgroupBarrier();
    }
    if live {
        for (var j = 0u; j < n; j++) {
            state[base + i * n + j] = s[j];
        }
    }
}
