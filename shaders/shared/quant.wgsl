// GGUF weight blocks read in place from `w: array<u32>` (declared by the kernel; quant_dot.wgsl
// adds the dot products). Blocks are only 2-byte aligned (Q4_0 18 bytes, Q4_1 20,
// Q5_0 22, Q8_0 34, Q4_K 144, Q6_K 210), so reads go through byte-offset helpers; every offset
// passed in is even. Work is split into units of 32 weights: one block of the simple formats,
// one eighth of a K-quant super-block.
//
// Layouts (ggml): Q4_0 {d: f16, qs: [u8; 16]} q in 0..16, w = (q - 8) d, low nibbles hold
// weights 0..16, high nibbles 16..32. Q4_1 {d, m: f16, qs: [u8; 16]} w = q d + m. Q5_0 {d,
// qh: u32, qs: [u8; 16]} fifth bit of weight j in bit j of qh, w = (q - 16) d. Q8_0 {d, qs:
// [i8; 32]}. Q4_K {d, dmin: f16, scales: [u8; 12] (8 six-bit scale/min pairs), qs: [u8; 128]}.
// Q6_K {ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16}.

fn w_u32(o: u32) -> u32 {
    let i = o >> 2u;
    if (o & 3u) == 0u {
        return w[i];
    }
    return (w[i] >> 16u) | (w[i + 1u] << 16u);
}

fn w_u8(o: u32) -> u32 {
    return (w[o >> 2u] >> ((o & 3u) * 8u)) & 0xffu;
}

fn w_f16(o: u32) -> f32 {
    return unpack2x16float((w[o >> 2u] >> ((o & 2u) * 8u)) & 0xffffu).x;
}

fn sext8(v: u32) -> f32 {
    return f32(bitcast<i32>(v << 24u) >> 24u);
}

fn nib4(q: u32) -> vec4<f32> {
    return vec4<f32>(f32(q & 15u), f32((q >> 8u) & 15u), f32((q >> 16u) & 15u), f32((q >> 24u) & 15u));
}

fn bits4(v: u32) -> vec4<f32> {
    return vec4<f32>(f32(v & 1u), f32((v >> 1u) & 1u), f32((v >> 2u) & 1u), f32((v >> 3u) & 1u));
}

fn i8x4(q: u32) -> vec4<f32> {
    return vec4<f32>(sext8(q), sext8(q >> 8u), sext8(q >> 16u), sext8(q >> 24u));
}

// Six-bit scale and min of sub-block j (0..8) of a Q4_K super-block whose scales start at `so`.
fn q4k_scale_min(so: u32, j: u32) -> vec2<f32> {
    if j < 4u {
        return vec2<f32>(f32(w_u8(so + j) & 63u), f32(w_u8(so + j + 4u) & 63u));
    }
    let a = w_u8(so + j + 4u);
    let sc = (a & 15u) | ((w_u8(so + j - 4u) >> 6u) << 4u);
    let m = (a >> 4u) | ((w_u8(so + j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

#ifdef WTYPE_Q4_0
const BLOCK_BYTES: u32 = 18u;
#endif
#ifdef WTYPE_Q4_1
const BLOCK_BYTES: u32 = 20u;
#endif
#ifdef WTYPE_Q5_0
const BLOCK_BYTES: u32 = 22u;
#endif
#ifdef WTYPE_Q8_0
const BLOCK_BYTES: u32 = 34u;
#endif
#ifdef WTYPE_Q4_K
const BLOCK_BYTES: u32 = 144u;
#endif
#ifdef WTYPE_Q6_K
const BLOCK_BYTES: u32 = 210u;
#endif
#ifdef WTYPE_F16
const BLOCK_BYTES: u32 = 64u;
#endif
#ifdef WTYPE_F32
const BLOCK_BYTES: u32 = 128u;
#endif

// Weights 4i..4i + 4 of unit `u` of the row at byte `row`, dequantized (embedding gathers).
fn unit_vec(row: u32, u: u32, i: u32) -> vec4<f32> {
#ifdef WTYPE_Q4_0
    let o = row + u * 18u;
    return w_f16(o) * (nib4(w_u32(o + 2u + 4u * (i % 4u)) >> ((i / 4u) * 4u)) - 8.0);
#endif
#ifdef WTYPE_Q4_1
    let o = row + u * 20u;
    return w_f16(o) * nib4(w_u32(o + 4u + 4u * (i % 4u)) >> ((i / 4u) * 4u)) + w_f16(o + 2u);
#endif
#ifdef WTYPE_Q5_0
    let o = row + u * 22u;
    let q = nib4(w_u32(o + 6u + 4u * (i % 4u)) >> ((i / 4u) * 4u));
    return w_f16(o) * (q + 16.0 * bits4(w_u32(o + 2u) >> (4u * i)) - 16.0);
#endif
#ifdef WTYPE_Q8_0
    let o = row + u * 34u;
    return w_f16(o) * i8x4(w_u32(o + 2u + 4u * i));
#endif
#ifdef WTYPE_Q4_K
    let o = row + (u / 8u) * 144u;
    let j = u % 8u;
    let sm = q4k_scale_min(o + 4u, j);
    let q = nib4(w_u32(o + 16u + (j / 2u) * 32u + 4u * i) >> ((j % 2u) * 4u));
    return w_f16(o) * sm.x * q - w_f16(o + 2u) * sm.y;
#endif
#ifdef WTYPE_Q6_K
    let o = row + (u / 8u) * 210u;
    let n = (u % 8u) / 4u;
    let g = u % 4u;
    let ql = w_u32(o + n * 64u + (g & 1u) * 32u + 4u * i) >> ((g >> 1u) * 4u);
    let qh = w_u32(o + 128u + n * 32u + 4u * i) >> (g * 2u);
    let q = nib4(ql) + 16.0 * vec4<f32>(f32(qh & 3u), f32((qh >> 8u) & 3u), f32((qh >> 16u) & 3u), f32((qh >> 24u) & 3u)) - 32.0;
    let sc = sext8(w_u8(o + 192u + n * 8u + g * 2u + i / 4u));
    return w_f16(o + 208u) * sc * q;
#endif
#ifdef WTYPE_F16
    let o = (row + u * 64u) >> 2u;
    return vec4<f32>(unpack2x16float(w[o + 2u * i]), unpack2x16float(w[o + 2u * i + 1u]));
#endif
#ifdef WTYPE_F32
    let o = ((row + u * 128u) >> 2u) + 4u * i;
    return vec4<f32>(bitcast<f32>(w[o]), bitcast<f32>(w[o + 1u]), bitcast<f32>(w[o + 2u]), bitcast<f32>(w[o + 3u]));
#endif
}
