// RoPE's rotation of pair i at (scaled) position `pos`: (cos, sin) of
// pos * base^(-2i / rot_dims) / factor (factor: the pair's frequency divisor, 1 for none).
// Shared by rope.wgsl and rope_kv.wgsl, so both turn a pair by exactly the same angle.

fn rope_cos_sin(pos: f32, base: f32, i: u32, rot_dims: u32, factor: f32) -> vec2<f32> {
    let theta = pos * pow(base, -2.0 * f32(i) / f32(rot_dims)) / factor;
    return vec2<f32>(cos(theta), sin(theta));
}
