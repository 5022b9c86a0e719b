// Mamba's selective scan (S6) over n_tok tokens, with the state carried between calls:
// kiln-cpu's `selective_scan`. Per channel c and state s, for each token t in order:
//   h[c, s] = exp(dt[t, c] * A[c, s]) * h[c, s] + dt[t, c] * B[t, s] * x[t, c]
//   y[t, c] = Σ_s C[t, s] * h[c, s] + D[c] * x[t, c]
// dt is already softplus'd and x already through conv and SiLU (as in the CPU twin).
//
// One invocation per (channel, state) keeps h[c, s] in a register for the whole sequence; a
// workgroup holds cpw = WG_SIZE / n channels (n <= WG_SIZE). Tokens go in chunks of CHUNK: the
// chunk's B, C, x, dt are staged in workgroup memory, each invocation advances its state over
// the chunk leaving C·h per token in workgroup memory, and the workgroup then sums those over s
// in order s = 0, 1, ... (the CPU twin's order) into y. A decode step is n_tok = 1.
#import grid

struct Params {
    d: u32,      // channels (d_inner)
    n: u32,      // states per channel (d_state)
    n_tok: u32,
    cpw: u32,    // channels per workgroup, WG_SIZE / n
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> h: array<f32>;  // (d, n) state
@group(0) @binding(2) var<storage, read> a: array<f32>;        // (d, n) A = -exp(A_log)
@group(0) @binding(3) var<storage, read> d_skip: array<f32>;   // (d)
@group(0) @binding(4) var<storage, read> x: array<f32>;        // (n_tok, d)
@group(0) @binding(5) var<storage, read> dt: array<f32>;       // (n_tok, d)
@group(0) @binding(6) var<storage, read> b: array<f32>;        // (n_tok, n)
@group(0) @binding(7) var<storage, read> c: array<f32>;        // (n_tok, n)
@group(0) @binding(8) var<storage, read_write> y: array<f32>;  // (n_tok, d)

// One chunk, row tl of each at tl * WG_SIZE: B and C by state, x and dt by channel of this
// workgroup, and C·h by invocation.
var<workgroup> sh_b: array<f32, CHUNK * WG_SIZE>;
var<workgroup> sh_c: array<f32, CHUNK * WG_SIZE>;
var<workgroup> sh_x: array<f32, CHUNK * WG_SIZE>;
var<workgroup> sh_dt: array<f32, CHUNK * WG_SIZE>;
var<workgroup> sh_ch: array<f32, CHUNK * WG_SIZE>;

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) lane: u32, @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let c0 = flat_workgroup(wg, nwg) * p.cpw;
    if c0 >= p.d {
        return;
    }
    // Channels this workgroup holds (the last one may hold fewer).
    let n_ch = min(p.cpw, p.d - c0);
    let cl = lane / p.n;
    let s = lane % p.n;
    let live = cl < n_ch;
    let at = (c0 + cl) * p.n + s;
    var hv = 0.0;
    var av = 0.0;
    if live {
        hv = h[at];
        av = a[at];
    }
    for (var t0 = 0u; t0 < p.n_tok; t0 += CHUNK) {
        let len = min(CHUNK, p.n_tok - t0);
        for (var i = lane; i < len * p.n; i += WG_SIZE) {
            let tl = i / p.n;
            let j = (t0 + tl) * p.n + i % p.n;
            sh_b[tl * WG_SIZE + i % p.n] = b[j];
            sh_c[tl * WG_SIZE + i % p.n] = c[j];
        }
        for (var i = lane; i < len * n_ch; i += WG_SIZE) {
            let tl = i / n_ch;
            let j = (t0 + tl) * p.d + c0 + i % n_ch;
            sh_x[tl * WG_SIZE + i % n_ch] = x[j];
            sh_dt[tl * WG_SIZE + i % n_ch] = dt[j];
        }
        workgroupBarrier();
        if live {
            for (var tl = 0u; tl < len; tl++) {
                let r = tl * WG_SIZE;
                let dtv = sh_dt[r + cl];
                hv = exp(dtv * av) * hv + dtv * sh_b[r + s] * sh_x[r + cl];
                sh_ch[r + lane] = sh_c[r + s] * hv;
            }
        }
        workgroupBarrier();
        for (var i = lane; i < len * n_ch; i += WG_SIZE) {
            let tl = i / n_ch;
            let ch = i % n_ch;
            let r = tl * WG_SIZE;
            var acc = 0.0;
            for (var j = 0u; j < p.n; j++) {
                acc += sh_ch[r + ch * p.n + j];
            }
            y[(t0 + tl) * p.d + c0 + ch] = acc + d_skip[c0 + ch] * sh_x[r + ch];
        }
        workgroupBarrier();
    }
    if live {
        h[at] = hv;
    }
}
