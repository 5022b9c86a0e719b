// Dot products of 4 signed bytes packed in a u32 with 4 others. With DOT4 through WGSL's
// `dot4I8Packed` (one instruction where the hardware has a packed int8 dot, e.g. dp4a; the
// variant then needs the language extension packed_4x8_integer_dot_product); without, both
// words are unpacked to vec4<i32>.

// The 4 signed bytes of `q`, lowest byte first.
fn i8x4i(q: u32) -> vec4<i32> {
    return vec4<i32>(bitcast<i32>(q << 24u), bitcast<i32>(q << 16u), bitcast<i32>(q << 8u), bitcast<i32>(q)) >> vec4<u32>(24u);
}

// The dot product of the 4 signed bytes of `a` with the 4 signed bytes of `b`.
fn dot_i8(a: u32, b: u32) -> i32 {
#ifdef DOT4
    return dot4I8Packed(a, b);
#else
    return dot(i8x4i(a), i8x4i(b));
#endif
}
