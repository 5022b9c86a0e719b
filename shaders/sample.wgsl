// Sampling on the GPU: tokens[slot] = one id drawn from n logits with a repetition penalty,
// temperature, top-k and top-p, by a seeded counter-based RNG. The exact semantics are in the
// rustdoc of `kiln::ops::sample::sample`. One workgroup covers the whole vocabulary with no
// sort: the top-k cut is a radix selection on an order-preserving integer key of the scaled
// logit (4 passes of 8-bit digits with a workgroup histogram), the top-p cut a bisection on
// that key (each step one parallel sum), and the pick an inverse CDF over the kept ids in id
// order, through a prefix sum over contiguous chunks of ids. A NaN or +inf logit (after the
// penalty) leaves no meaningful distribution: the id written is then NONE
// (`kiln::ops::sample::NON_FINITE_ID`), which the host turns into an error; -inf is an ordinary
// logit of probability 0.

struct Params {
    n: u32,            // logits
    slot: u32,         // tokens[slot] receives the id
    top_k: u32,        // 0: off
    n_recent: u32,     // the penalty's window: tokens[slot - n_recent..slot]
    temperature: f32,  // <= 0: greedy
    top_p: f32,        // >= 1: off
    penalty: f32,      // 1: off
    seed: u32,
    step: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;  // (n), penalized in place
@group(0) @binding(2) var<storage, read_write> tokens: array<u32>;  // (slot + 1)

const NONE: u32 = 0xffffffffu;

var<workgroup> red_f: array<f32, WG_SIZE>;
var<workgroup> red_u: array<u32, WG_SIZE>;
var<workgroup> bcast_f: f32;
var<workgroup> bcast_u: u32;
var<workgroup> hist: array<atomic<u32>, 256>;  // counts per 8-bit key digit
var<workgroup> picked: atomic<u32>;
var<workgroup> last_kept: atomic<u32>;

// NaN (either sign) or +inf, by the bits: WGSL lets float operations assume neither exists.
fn unusable(v: f32) -> bool {
    let b = bitcast<u32>(v);
    return (b & 0x7fffffffu) > 0x7f800000u || b == 0x7f800000u;
}

// An integer key with the order of the (non-NaN) floats: -inf < ... < -0 < +0 < ... < +inf.
fn key(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    if (b & 0x80000000u) != 0u {
        return ~b;
    }
    return b | 0x80000000u;
}

fn pcg_hash(x: u32) -> u32 {
    let s = x * 747796405u + 2891336453u;
    let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
    return (w >> 22u) ^ w;
}

// Workgroup sum of one f32 per invocation, the same value in every invocation. The tree order
// is fixed, so the same inputs give the same bits every time.
fn wg_sum_f(lid: u32, v: f32) -> f32 {
    red_f[lid] = v;
    workgroupBarrier();
    for (var s = WG_SIZE / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            red_f[lid] += red_f[lid + s];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        bcast_f = red_f[0];
    }
    return workgroupUniformLoad(&bcast_f);
}

fn wg_sum_u(lid: u32, v: u32) -> u32 {
    red_u[lid] = v;
    workgroupBarrier();
    for (var s = WG_SIZE / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            red_u[lid] += red_u[lid + s];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        bcast_u = red_u[0];
    }
    return workgroupUniformLoad(&bcast_u);
}

// Unnormalized probability of id i if its key is at least t, else 0.
fn weight(i: u32, t: u32, inv_t: f32, zmax: f32) -> f32 {
    let z = logits[i] * inv_t;
    if key(z) < t {
        return 0.0;
    }
    return exp(z - zmax);
}

// Probability mass of the ids with key(z) >= t.
fn mass_ge(lid: u32, t: u32, inv_t: f32, zmax: f32) -> f32 {
    var s = 0.0;
    for (var i = lid; i < p.n; i += WG_SIZE) {
        s += weight(i, t, inv_t, zmax);
    }
    return wg_sum_f(lid, s);
}

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) lid: u32) {
    // 1. Repetition penalty, once per distinct id (its first occurrence in the window).
    if p.penalty != 1.0 {
        let w0 = p.slot - p.n_recent;
        for (var j = lid; j < p.n_recent; j += WG_SIZE) {
            let id = tokens[w0 + j];
            var first = id < p.n;
            for (var i = 0u; i < j; i++) {
                if tokens[w0 + i] == id {
                    first = false;
                    break;
                }
            }
            if first {
                let l = logits[id];
                logits[id] = select(l * p.penalty, l / p.penalty, l > 0.0);
            }
        }
    }
    storageBarrier();

    // 2. The largest logit (lowest id on ties) and how many are usable (neither NaN nor +inf).
    var bv = 0.0;
    var bi = NONE;
    var valid = 0u;
    for (var i = lid; i < p.n; i += WG_SIZE) {
        let l = logits[i];
        if !unusable(l) {
            valid += 1u;
            if bi == NONE || l > bv {
                bv = l;
                bi = i;
            }
        }
    }
    red_f[lid] = bv;
    red_u[lid] = bi;
    workgroupBarrier();
    for (var s = WG_SIZE / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            let ov = red_f[lid + s];
            let oi = red_u[lid + s];
            let v = red_f[lid];
            let i = red_u[lid];
            if oi != NONE && (i == NONE || ov > v || (ov == v && oi < i)) {
                red_f[lid] = ov;
                red_u[lid] = oi;
            }
        }
        workgroupBarrier();
    }
    if lid == 0u {
        bcast_f = red_f[0];
    }
    let best_v = workgroupUniformLoad(&bcast_f);
    if lid == 0u {
        bcast_u = red_u[0];
    }
    let best_i = workgroupUniformLoad(&bcast_u);
    let n_valid = wg_sum_u(lid, valid);
    if n_valid < p.n || p.temperature <= 0.0 {
        // Greedy, or NONE where a logit is unusable; past here every logit is -inf or finite.
        if lid == 0u {
            tokens[p.slot] = select(best_i, NONE, n_valid < p.n);
        }
        return;
    }

    // 3. Top-k: the key of the top_k-th largest scaled logit, found by radix selection, one
    //    8-bit digit of the key per pass (4 passes); every id tied with it stays.
    let inv_t = 1.0 / p.temperature;
    let zmax = best_v * inv_t;
    let top = key(zmax);
    var lo = 0u;
    if p.top_k > 0u && p.top_k < n_valid {
        var need = p.top_k;
        for (var digit = 0u; digit < 4u; digit++) {
            let shift = 24u - 8u * digit;
            // Keys whose digits above `shift` equal the ones chosen so far.
            let high = select(0u, 0xffffffffu << (shift + 8u), digit > 0u);
            for (var b = lid; b < 256u; b += WG_SIZE) {
                atomicStore(&hist[b], 0u);
            }
            workgroupBarrier();
            for (var i = lid; i < p.n; i += WG_SIZE) {
                let kk = key(logits[i] * inv_t);
                if (kk & high) == lo {
                    atomicAdd(&hist[(kk >> shift) & 0xffu], 1u);
                }
            }
            workgroupBarrier();
            if lid == 0u {
                // The digit, from the top, at which the count from above reaches `need`.
                var above = 0u;
                var d = 255u;
                loop {
                    let h = atomicLoad(&hist[d]);
                    if above + h >= need || d == 0u {
                        break;
                    }
                    above += h;
                    d -= 1u;
                }
                bcast_u = d;
                red_u[0] = need - above;
            }
            lo |= workgroupUniformLoad(&bcast_u) << shift;
            need = red_u[0];
            workgroupBarrier();
        }
    }

    // 4. Top-p: the largest key t whose ids at or above it hold at least top_p of the top-k
    //    mass; every id tied with it stays.
    if p.top_p < 1.0 {
        let goal = p.top_p * mass_ge(lid, lo, inv_t, zmax);
        var hi = top;
        while lo < hi {
            let mid = lo + (hi - lo + 1u) / 2u;
            if mass_ge(lid, mid, inv_t, zmax) >= goal {
                lo = mid;
            } else {
                hi = mid - 1u;
            }
        }
    }

    // 5. Inverse CDF in id order: invocation `lid` owns ids [lid * chunk, (lid + 1) * chunk).
    let chunk = (p.n + WG_SIZE - 1u) / WG_SIZE;
    let start = min(lid * chunk, p.n);
    let end = min(start + chunk, p.n);
    var own = 0.0;
    var own_last = 0u;
    for (var i = start; i < end; i++) {
        if key(logits[i] * inv_t) >= lo {
            own_last = i + 1u;
        }
        own += weight(i, lo, inv_t, zmax);
    }
    if lid == 0u {
        atomicStore(&picked, NONE);
        atomicStore(&last_kept, 0u);
    }
    // Exclusive prefix sum of the chunk masses (invocation 0 walks them in order).
    red_f[lid] = own;
    workgroupBarrier();
    if lid == 0u {
        var run = 0.0;
        for (var t = 0u; t < WG_SIZE; t++) {
            let c = red_f[t];
            red_f[t] = run;
            run += c;
        }
        bcast_f = run;
    }
    let total = workgroupUniformLoad(&bcast_f);
    let u = f32(pcg_hash(p.seed ^ pcg_hash(p.step)) >> 8u) * (1.0 / 16777216.0);
    let r = u * total;
    atomicMax(&last_kept, own_last);
    let before = red_f[lid];
    if before <= r {
        var run = before;
        for (var i = start; i < end; i++) {
            run += weight(i, lo, inv_t, zmax);
            if run > r {
                atomicMin(&picked, i);
                break;
            }
        }
    }
    workgroupBarrier();
    if lid == 0u {
        let c = atomicLoad(&picked);
        // Rounding can leave u * total at or past the last running sum: take the last kept id.
        tokens[p.slot] = select(c, atomicLoad(&last_kept) - 1u, c == NONE);
    }
}
