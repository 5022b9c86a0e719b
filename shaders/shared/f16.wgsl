// Rounding to f16, ties to even, on every device. `pack2x16float` leaves the rounding to the
// implementation (NVIDIA's Vulkan driver does not round to nearest), and kiln must round as
// llama.cpp does (F16C, nearest-even) to compute the same products. A value already exactly
// representable in f16 packs the same everywhere, so pack `f16_round(v)` to store f16.

fn f16_round(v: f32) -> f32 {
    let b = bitcast<u32>(v);
    let e = (b >> 23u) & 0xffu;
    if e < 113u {
        // f16 subnormals (and zero): a multiple of 2^-24; round() ties to even, and scaling by
        // a power of two is exact.
        return round(v * 16777216.0) / 16777216.0;
    }
    if e > 142u {
        // Beyond f16's range: the conversion's own overflow.
        return unpack2x16float(pack2x16float(vec2<f32>(v, 0.0))).x;
    }
    // Keep 10 of the 23 mantissa bits, rounding to nearest, ties to even.
    let lsb = (b >> 13u) & 1u;
    return bitcast<f32>((b + 0xfffu + lsb) & 0xffffe000u);
}

fn f16_round2(v: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(f16_round(v.x), f16_round(v.y));
}
