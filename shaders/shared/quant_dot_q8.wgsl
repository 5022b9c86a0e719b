// Integer dot product of one 32-weight unit with 32 int8 activations quantized by
// quantize.wgsl (`xq` packed int8, `xd` scales, `xs` sums), scaled back to f32: the arithmetic
// of llama.cpp's CPU vec_dot for each weight type.
#import quant

fn nib4i(q: u32) -> vec4<i32> {
    return vec4<i32>(i32(q & 15u), i32((q >> 8u) & 15u), i32((q >> 16u) & 15u), i32((q >> 24u) & 15u));
}

fn bits4i(v: u32) -> vec4<i32> {
    return vec4<i32>(i32(v & 1u), i32((v >> 1u) & 1u), i32((v >> 2u) & 1u), i32((v >> 3u) & 1u));
}

fn i8x4i(q: u32) -> vec4<i32> {
    return vec4<i32>(bitcast<i32>(q << 24u), bitcast<i32>(q << 16u), bitcast<i32>(q << 8u), bitcast<i32>(q)) >> vec4<u32>(24u);
}

// Unit `u` of the row at byte `row` against activation unit `a` (index into xd/xs; xq words
// start at 8 * a).
fn unit_dot_q8(row: u32, u: u32, a: u32) -> f32 {
    let xw = 8u * a;
#ifdef WTYPE_Q4_0
    let o = row + u * 18u;
    var s = 0;
    for (var i = 0u; i < 4u; i++) {
        let q = w_u32(o + 2u + 4u * i);
        s += dot(nib4i(q) - 8, i8x4i(xq[xw + i])) + dot(nib4i(q >> 4u) - 8, i8x4i(xq[xw + 4u + i]));
    }
    return w_f16(o) * xd[a] * f32(s);
#endif
#ifdef WTYPE_Q4_1
    let o = row + u * 20u;
    var s = 0;
    for (var i = 0u; i < 4u; i++) {
        let q = w_u32(o + 4u + 4u * i);
        s += dot(nib4i(q), i8x4i(xq[xw + i])) + dot(nib4i(q >> 4u), i8x4i(xq[xw + 4u + i]));
    }
    return w_f16(o) * xd[a] * f32(s) + w_f16(o + 2u) * xs[a];
#endif
#ifdef WTYPE_Q5_0
    let o = row + u * 22u;
    let qh = w_u32(o + 2u);
    var s = 0;
    for (var i = 0u; i < 4u; i++) {
        let q = w_u32(o + 6u + 4u * i);
        let lo = nib4i(q) + 16 * bits4i(qh >> (4u * i)) - 16;
        let hi = nib4i(q >> 4u) + 16 * bits4i(qh >> (16u + 4u * i)) - 16;
        s += dot(lo, i8x4i(xq[xw + i])) + dot(hi, i8x4i(xq[xw + 4u + i]));
    }
    return w_f16(o) * xd[a] * f32(s);
#endif
#ifdef WTYPE_Q8_0
    let o = row + u * 34u;
    var s = 0;
    for (var i = 0u; i < 8u; i++) {
        s += dot(i8x4i(w_u32(o + 2u + 4u * i)), i8x4i(xq[xw + i]));
    }
    return w_f16(o) * xd[a] * f32(s);
#endif
#ifdef WTYPE_Q4_K
    let o = row + (u / 8u) * 144u;
    let j = u % 8u;
    let sm = q4k_scale_min(o + 4u, j);
    let qo = o + 16u + (j / 2u) * 32u;
    let shift = (j % 2u) * 4u;
    var s = 0;
    for (var i = 0u; i < 8u; i++) {
        s += dot(nib4i(w_u32(qo + 4u * i) >> shift), i8x4i(xq[xw + i]));
    }
    return xd[a] * (w_f16(o) * sm.x * f32(s) - w_f16(o + 2u) * sm.y * xs[a]);
#endif
#ifdef WTYPE_Q6_K
    let o = row + (u / 8u) * 210u;
    let n = (u % 8u) / 4u;
    let g = u % 4u;
    let qlo = o + n * 64u + (g & 1u) * 32u;
    let qls = (g >> 1u) * 4u;
    let qho = o + 128u + n * 32u;
    let qhs = g * 2u;
    var s0 = 0;
    var s1 = 0;
    for (var i = 0u; i < 8u; i++) {
        let ql = w_u32(qlo + 4u * i) >> qls;
        let qh = w_u32(qho + 4u * i) >> qhs;
        let q = nib4i(ql) + 16 * vec4<i32>(i32(qh & 3u), i32((qh >> 8u) & 3u), i32((qh >> 16u) & 3u), i32((qh >> 24u) & 3u)) - 32;
        let v = dot(q, i8x4i(xq[xw + i]));
        if i < 4u {
            s0 += v;
        } else {
            s1 += v;
        }
    }
    let so = o + 192u + n * 8u + g * 2u;
    return w_f16(o + 208u) * xd[a] * (sext8(w_u8(so)) * f32(s0) + sext8(w_u8(so + 1u)) * f32(s1));
#endif
}
