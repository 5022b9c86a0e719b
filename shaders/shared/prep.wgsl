// The input of a product, prepared from the residual stream in one pass over a row of `k`:
//   r = x_in + t                   (PREP_RES; with PREP_POST t is RMS-normed first: Gemma's post-norms)
//   v = r / rms(r) * w             (PREP_NORM; else v = r)
// and, with PREP_WRITE, r stored as the new residual (prep_quant.wgsl quantizes v). Used by a
// kernel of its own (prep.wgsl, one workgroup per row, output to storage) and as the prologue
// of the fused GEMVs (gemv_prep.wgsl, output to workgroup memory).
//
// The including kernel declares `p` with a field `pre: Prep` and the bindings `x_in`, `t`,
// `vecs` (array<f32>; norm weights at float offsets) and `x_out`.
#import reduce

struct Prep {
    k: u32,       // row length (a multiple of 32; of 256 for Q8_K)
    flags: u32,   // PREP_* bits
    post_w: u32,  // float offset of the post-norm weight in `vecs` (PREP_POST)
    norm_w: u32,  // float offset of the norm weight in `vecs` (PREP_NORM)
    eps: f32,
    x_row0: u32,  // first row of x_in and t to read: row j reads row x_row0 + j
    pad0: u32,
    pad1: u32,
}

const PREP_RES: u32 = 1u;
const PREP_POST: u32 = 2u;
const PREP_NORM: u32 = 4u;
const PREP_WRITE: u32 = 8u;

fn prep_has(flag: u32) -> bool {
    return (p.pre.flags & flag) != 0u;
}

// The residual value r[i] of the row starting at float `base`, given the post-norm's scale.
fn prep_res(base: u32, i: u32, post: f32) -> f32 {
    var r = x_in[base + i];
    if prep_has(PREP_RES) {
        var d = t[base + i];
        if prep_has(PREP_POST) {
            d = d * post * vecs[p.pre.post_w + i];
        }
        r += d;
    }
    return r;
}

// (post-norm scale, norm scale) of the row at `base`: 1/sqrt(mean(square) + eps) each, or 1
// where the flag is off. Call from uniform control flow.
fn prep_scales(l: Lanes, base: u32) -> vec2<f32> {
    let k = p.pre.k;
    var post = 1.0;
    if prep_has(PREP_RES) && prep_has(PREP_POST) {
        var ss = 0.0;
        for (var i = l.index; i < k; i += WG_SIZE) {
            let v = t[base + i];
            ss += v * v;
        }
        post = inverseSqrt(wg_sum(l, ss) / f32(k) + p.pre.eps);
    }
    var norm = 1.0;
    if prep_has(PREP_NORM) {
        var ss = 0.0;
        for (var i = l.index; i < k; i += WG_SIZE) {
            let v = prep_res(base, i, post);
            ss += v * v;
        }
        norm = inverseSqrt(wg_sum(l, ss) / f32(k) + p.pre.eps);
    }
    return vec2<f32>(post, norm);
}

// The value v[i] the product reads.
fn prep_value(base: u32, i: u32, sc: vec2<f32>) -> f32 {
    let r = prep_res(base, i, sc.x);
    if prep_has(PREP_NORM) {
        return r * sc.y * vecs[p.pre.norm_w + i];
    }
    return r;
}

