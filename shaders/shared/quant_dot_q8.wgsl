// Integer dot product of one 32-weight unit with 32 int8 activations quantized by
// quantize.wgsl (`xq` packed int8, `xd` scales, `xs` sums), scaled back to f32: the arithmetic
// of llama.cpp's CPU vec_dot for each weight type.
//
// Every weight type is first brought to 4 signed bytes per u32 (the activations' layout), then
// `dot_i8` (int_dot.wgsl) multiplies 4 bytes by 4 bytes, through `dot4I8Packed` with DOT4.
#import quant
#import int_dot

// Bytewise a - c, for bytes of `a` in 0..=127 and of `c` in 0..=128: each byte of the result is
// the signed difference (two's complement). Setting each byte's top bit first keeps the
// subtraction from borrowing across bytes.
fn sub_bytes(a: u32, c: u32) -> u32 {
    return ((a | 0x80808080u) - c) ^ 0x80808080u;
}

// Bits 0..3 of `v` moved to bit 4 of bytes 0..3 (the fifth bit of 4 Q5_0 weights).
fn bit4_bytes(v: u32) -> u32 {
    return ((v & 1u) | ((v & 2u) << 7u) | ((v & 4u) << 14u) | ((v & 8u) << 21u)) << 4u;
}

const LO4: u32 = 0x0f0f0f0fu;

// Unit `u` of the row at byte `row` against activation unit `a` (index into xd/xs; xq words
// start at 8 * a).
fn unit_dot_q8(row: u32, u: u32, a: u32) -> f32 {
    let xw = 8u * a;
#ifdef WTYPE_Q4_0
    let o = row + u * 18u;
    var s = 0;
    for (var i = 0u; i < 4u; i++) {
        let q = w_u32(o + 2u + 4u * i);
        s += dot_i8(sub_bytes(q & LO4, 0x08080808u), xq[xw + i])
            + dot_i8(sub_bytes((q >> 4u) & LO4, 0x08080808u), xq[xw + 4u + i]);
    }
    return w_f16(o) * xd[a] * f32(s);
#endif
#ifdef WTYPE_Q4_1
    let o = row + u * 20u;
    var s = 0;
    for (var i = 0u; i < 4u; i++) {
        let q = w_u32(o + 4u + 4u * i);
        s += dot_i8(q & LO4, xq[xw + i]) + dot_i8((q >> 4u) & LO4, xq[xw + 4u + i]);
    }
    return w_f16(o) * xd[a] * f32(s) + w_f16(o + 2u) * xs[a];
#endif
#ifdef WTYPE_Q5_0
    let o = row + u * 22u;
    let qh = w_u32(o + 2u);
    var s = 0;
    for (var i = 0u; i < 4u; i++) {
        let q = w_u32(o + 6u + 4u * i);
        let lo = sub_bytes((q & LO4) | bit4_bytes(qh >> (4u * i)), 0x10101010u);
        let hi = sub_bytes(((q >> 4u) & LO4) | bit4_bytes(qh >> (16u + 4u * i)), 0x10101010u);
        s += dot_i8(lo, xq[xw + i]) + dot_i8(hi, xq[xw + 4u + i]);
    }
    return w_f16(o) * xd[a] * f32(s);
#endif
#ifdef WTYPE_Q8_0
    let o = row + u * 34u;
    var s = 0;
    for (var i = 0u; i < 8u; i++) {
        s += dot_i8(w_u32(o + 2u + 4u * i), xq[xw + i]);
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
        s += dot_i8((w_u32(qo + 4u * i) >> shift) & LO4, xq[xw + i]);
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
        let q = sub_bytes((ql & LO4) | ((qh & 0x03030303u) << 4u), 0x20202020u);
        let v = dot_i8(q, xq[xw + i]);
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
