// Fused dequantize-and-dot of one 32-weight unit; needs `fn xv4(i: u32) -> vec4<f32>` (the i-th
// four activations, as f32) besides `w`.
#import quant

// Dot product of weight unit `u` (32 weights) of the row at byte `row` with xv4(xv..xv + 8)
// (8 vec4s).
fn unit_dot(row: u32, u: u32, xv: u32) -> f32 {
#ifdef WTYPE_Q4_0
    let o = row + u * 18u;
    var acc = 0.0;
    for (var i = 0u; i < 4u; i++) {
        let q = w_u32(o + 2u + 4u * i);
        acc += dot(nib4(q) - 8.0, xv4(xv + i)) + dot(nib4(q >> 4u) - 8.0, xv4(xv + 4u + i));
    }
    return w_f16(o) * acc;
#endif
#ifdef WTYPE_Q4_1
    let o = row + u * 20u;
    var acc = 0.0;
    var xs = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        let q = w_u32(o + 4u + 4u * i);
        acc += dot(nib4(q), xv4(xv + i)) + dot(nib4(q >> 4u), xv4(xv + 4u + i));
        xs += xv4(xv + i) + xv4(xv + 4u + i);
    }
    return w_f16(o) * acc + w_f16(o + 2u) * dot(xs, vec4<f32>(1.0));
#endif
#ifdef WTYPE_Q5_0
    let o = row + u * 22u;
    let qh = w_u32(o + 2u);
    var acc = 0.0;
    for (var i = 0u; i < 4u; i++) {
        let q = w_u32(o + 6u + 4u * i);
        let lo = nib4(q) + 16.0 * bits4(qh >> (4u * i)) - 16.0;
        let hi = nib4(q >> 4u) + 16.0 * bits4(qh >> (16u + 4u * i)) - 16.0;
        acc += dot(lo, xv4(xv + i)) + dot(hi, xv4(xv + 4u + i));
    }
    return w_f16(o) * acc;
#endif
#ifdef WTYPE_Q8_0
    let o = row + u * 34u;
    var acc = 0.0;
    for (var i = 0u; i < 8u; i++) {
        acc += dot(i8x4(w_u32(o + 2u + 4u * i)), xv4(xv + i));
    }
    return w_f16(o) * acc;
#endif
#ifdef WTYPE_Q4_K
    let o = row + (u / 8u) * 144u;
    let j = u % 8u;
    let sm = q4k_scale_min(o + 4u, j);
    let qo = o + 16u + (j / 2u) * 32u;
    let shift = (j % 2u) * 4u;
    var acc = 0.0;
    var xs = vec4<f32>(0.0);
    for (var i = 0u; i < 8u; i++) {
        acc += dot(nib4(w_u32(qo + 4u * i) >> shift), xv4(xv + i));
        xs += xv4(xv + i);
    }
    return w_f16(o) * sm.x * acc - w_f16(o + 2u) * sm.y * dot(xs, vec4<f32>(1.0));
#endif
#ifdef WTYPE_Q6_K
    let o = row + (u / 8u) * 210u;
    let n = (u % 8u) / 4u;
    let g = u % 4u;
    let qlo = o + n * 64u + (g & 1u) * 32u;
    let qls = (g >> 1u) * 4u;
    let qho = o + 128u + n * 32u;
    let qhs = g * 2u;
    var acc = vec2<f32>(0.0);
    for (var i = 0u; i < 8u; i++) {
        let ql = w_u32(qlo + 4u * i) >> qls;
        let qh = w_u32(qho + 4u * i) >> qhs;
        let q = nib4(ql) + 16.0 * vec4<f32>(f32(qh & 3u), f32((qh >> 8u) & 3u), f32((qh >> 16u) & 3u), f32((qh >> 24u) & 3u)) - 32.0;
        acc[i / 4u] += dot(q, xv4(xv + i));
    }
    let so = o + 192u + n * 8u + g * 2u;
    return w_f16(o + 208u) * (sext8(w_u8(so)) * acc.x + sext8(w_u8(so + 1u)) * acc.y);
#endif
#ifdef WTYPE_F16
    let o = row + u * 64u;
    var acc = 0.0;
    for (var i = 0u; i < 8u; i++) {
        let a = w[(o >> 2u) + 2u * i];
        let b = w[(o >> 2u) + 2u * i + 1u];
        acc += dot(vec4<f32>(unpack2x16float(a), unpack2x16float(b)), xv4(xv + i));
    }
    return acc;
#endif
#ifdef WTYPE_F32
    let o = (row + u * 128u) >> 2u;
    var acc = 0.0;
    for (var i = 0u; i < 8u; i++) {
        let v = vec4<f32>(bitcast<f32>(w[o + 4u * i]), bitcast<f32>(w[o + 4u * i + 1u]), bitcast<f32>(w[o + 4u * i + 2u]), bitcast<f32>(w[o + 4u * i + 3u]));
        acc += dot(v, xv4(xv + i));
    }
    return acc;
#endif
}
