// RWKV-6 WKV time mixing over n_tok tokens, with the per-head state carried between calls:
// kiln-cpu's `wkv6_step` applied to each token in order. Per head, with state S[i][j] (i over
// keys, j over values), decay w (already exp(-exp(w_raw))) and bonus u (time_first):
//   y[j] = Σ_i r[i] * (u[i] * k[i] * v[j] + S[i][j]),   then   S[i][j] = w[i] * S[i][j] + k[i] * v[j]
//
// One workgroup per head; invocation j keeps column j of the head's state in registers for the
// whole sequence (head size n <= MAX_HEAD = WG_SIZE). Tokens go in chunks of CHUNK whose r, k, w
// are staged in workgroup memory, zero-padded to MAX_HEAD, so the inner loop has a constant trip
// count: a padded key i has r = k = w = 0 and leaves y and S[i][j] = 0 untouched. The sum over i
// runs in the CPU twin's order. A decode step is n_tok = 1.

struct Params {
    n_head: u32,
    n: u32,      // head size
    n_tok: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> state: array<f32>;  // (n_head, n, n) S[i][j]
@group(0) @binding(2) var<storage, read> r: array<f32>;            // (n_tok, n_head * n)
@group(0) @binding(3) var<storage, read> k: array<f32>;            // (n_tok, n_head * n)
@group(0) @binding(4) var<storage, read> v: array<f32>;            // (n_tok, n_head * n)
@group(0) @binding(5) var<storage, read> w: array<f32>;            // (n_tok, n_head * n)
@group(0) @binding(6) var<storage, read> u: array<f32>;            // (n_head * n)
@group(0) @binding(7) var<storage, read_write> y: array<f32>;      // (n_tok, n_head * n)

var<workgroup> sh_r: array<f32, CHUNK * MAX_HEAD>;  // (CHUNK, MAX_HEAD)
var<workgroup> sh_k: array<f32, CHUNK * MAX_HEAD>;
var<workgroup> sh_w: array<f32, CHUNK * MAX_HEAD>;
var<workgroup> sh_u: array<f32, MAX_HEAD>;

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) j: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let head = wg.x;
    if head >= p.n_head {
        return;
    }
    let n = p.n;
    let width = p.n_head * n;
    let o = head * n;
    let base = head * n * n;
    let live = j < n;
    var s: array<f32, MAX_HEAD>;
    if live {
        for (var i = 0u; i < n; i++) {
            s[i] = state[base + i * n + j];
        }
    }
    for (var i = j; i < MAX_HEAD; i += WG_SIZE) {
        sh_u[i] = select(0.0, u[o + min(i, n - 1u)], i < n);
    }
    for (var t0 = 0u; t0 < p.n_tok; t0 += CHUNK) {
        let len = min(CHUNK, p.n_tok - t0);
        for (var e = j; e < CHUNK * MAX_HEAD; e += WG_SIZE) {
            let tl = e / MAX_HEAD;
            let i = e % MAX_HEAD;
            var rv = 0.0;
            var kv = 0.0;
            var wv = 0.0;
            if tl < len && i < n {
                let at = (t0 + tl) * width + o + i;
                rv = r[at];
                kv = k[at];
                wv = w[at];
            }
            sh_r[e] = rv;
            sh_k[e] = kv;
            sh_w[e] = wv;
        }
        workgroupBarrier();
        if live {
            for (var tl = 0u; tl < len; tl++) {
                let row = tl * MAX_HEAD;
                let at = (t0 + tl) * width + o + j;
                let vj = v[at];
                var yj = 0.0;
                for (var i = 0u; i < MAX_HEAD; i++) {
                    let kv = sh_k[row + i] * vj;
                    yj += sh_r[row + i] * (sh_u[i] * kv + s[i]);
                    s[i] = sh_w[row + i] * s[i] + kv;
                }
                y[at] = yj;
            }
        }
        workgroupBarrier();
    }
    if live {
        for (var i = 0u; i < n; i++) {
            state[base + i * n + j] = s[i];
        }
    }
}
