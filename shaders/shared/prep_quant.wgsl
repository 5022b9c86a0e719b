// Quantization of a prepared row (prep.wgsl's v) to int8 32-wide units, the way llama.cpp's
// CPU path quantizes activations: Q8_0 (scale amax / 127 rounded to f16), Q8_1 (plus the f16
// scaled sum) or Q8_K (256-wide blocks scaled by the signed extreme, f32 scale, integer sums),
// in the layout gemv_q8 reads (per 32 values: 8 words of packed int8, a scale, a sum).
//
// The including kernel declares `ACT_KIND` (one of the ACT_* below), `prep_barrier()`, the
// stores `put_q(j, word, value)`, `put_d(j, unit, value)`, `put_s(j, unit, value)` and the loads
// `get_d(j, unit)`, `get_s(j, unit)` (scale and sum slots double as scratch between the passes),
// and `blk`, one vec2 per 256-wide block (Q8_K's extremes).
#import prep
#import f16

const ACT_Q8_0: u32 = 0u;
const ACT_Q8_1: u32 = 1u;
const ACT_Q8K: u32 = 2u;

// Prepares activation row j: scales, the new residual (PREP_WRITE and `write`), then the int8
// units through put_q/put_d/put_s. Call from uniform control flow; ends with a barrier.
fn prep_row(l: Lanes, j: u32, write: bool) {
    let k = p.pre.k;
    let base = (p.pre.x_row0 + j) * k;
    let sc = prep_scales(l, base);
    if write && prep_has(PREP_WRITE) {
        for (var i = l.index; i < k; i += WG_SIZE) {
            x_out[base + i] = prep_res(base, i, sc.x);
        }
    }
    let units = k / 32u;
    // Pass 1: each unit's largest magnitude and the value holding it (the first, on ties).
    for (var u = l.index; u < units; u += WG_SIZE) {
        var amax = 0.0;
        var vmax = 0.0;
        for (var i = 0u; i < 32u; i++) {
            let v = prep_value(base, 32u * u + i, sc);
            if abs(v) > amax {
                amax = abs(v);
                vmax = v;
            }
        }
        put_d(j, u, amax);
        put_s(j, u, vmax);
    }
    prep_barrier();
    if ACT_KIND == ACT_Q8K {
        // Each 256-wide block's extreme: the first of its units' largest magnitudes.
        for (var b = l.index; b < k / 256u; b += WG_SIZE) {
            var amax = 0.0;
            var vmax = 0.0;
            for (var c = 0u; c < 8u; c++) {
                let a = get_d(j, 8u * b + c);
                if a > amax {
                    amax = a;
                    vmax = get_s(j, 8u * b + c);
                }
            }
            blk[b] = vec2<f32>(amax, vmax);
        }
        prep_barrier();
    }
    // Pass 2: the int8 values, each unit's scale and sum.
    for (var u = l.index; u < units; u += WG_SIZE) {
        var id = 0.0;
        var d = 0.0;
        if ACT_KIND == ACT_Q8K {
            let e = blk[u / 8u];
            if e.x != 0.0 {
                id = -127.0 / e.y;
                d = 1.0 / id;
            }
        } else {
            let amax = get_d(j, u);
            d = amax / 127.0;
            if amax != 0.0 {
                id = 127.0 / amax;  // as llama.cpp's SIMD quantizers compute it
            }
        }
        var sum = 0;
        for (var wd = 0u; wd < 8u; wd++) {
            var word = 0u;
            for (var c = 0u; c < 4u; c++) {
                let s = round(prep_value(base, 32u * u + 4u * wd + c, sc) * id);
                var q = i32(s);
                if ACT_KIND == ACT_Q8K {
                    q = i32(min(127.0, s));
                }
                sum += q;
                word |= (bitcast<u32>(q) & 0xffu) << (8u * c);
            }
            put_q(j, 8u * u + wd, word);
        }
        if ACT_KIND == ACT_Q8K {
            put_d(j, u, d);
            put_s(j, u, f32(sum));
        } else {
            put_d(j, u, f16_round(d));
            put_s(j, u, f16_round(f32(sum) * d));
        }
    }
    prep_barrier();
}
