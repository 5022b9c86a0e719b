// The activations of gated FFNs, shared by `gated` and the fused `gemv_gated` so that both
// compute the same values: SiLU (SwiGLU) or GELU in its tanh form (GeGLU, Gemma).

fn act(v: f32) -> f32 {
#ifdef ACT_SILU
    return v / (1.0 + exp(-v));
#endif
#ifdef ACT_GELU
    // 0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3))), with a tanh that stays finite.
    let u = 0.7978845608 * (v + 0.044715 * v * v * v);
    let e = exp(-2.0 * abs(u));
    return 0.5 * v * (1.0 + sign(u) * (1.0 - e) / (1.0 + e));
#endif
}
