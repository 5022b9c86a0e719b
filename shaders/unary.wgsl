// Unary elementwise ops, out[i] = f(x[i]) for i < n (OP=silu, gelu_tanh, gelu_erf, sigmoid,
// tanh, scale), and the fused residual OP=axpy, out[i] = x[i] + s * b[i]. Storage DTYPE;
// arithmetic in f32 (an f16 exp overflows above 11, and f16 x^3 in the GELU above 40), rounded
// once to DTYPE on the store. VEC=vec4 handles four elements per invocation (n must be a
// multiple of 4). Every op stays finite for finite inputs of any magnitude: exp only ever sees
// -|v|, never a large positive argument (some drivers' tanh returns NaN above ~42).
#import grid

#ifdef VEC_VEC4
alias T = vec4<DTYPE>;
alias F = vec4<f32>;
const PER: u32 = 4u;
#else
alias T = DTYPE;
alias F = f32;
const PER: u32 = 1u;
#endif

struct Params {
    n: u32,   // elements
    s: f32,   // the factor of OP=scale and OP=axpy
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;          // (n)
#ifdef OP_AXPY
@group(0) @binding(2) var<storage, read> b: array<T>;          // (n)
@group(0) @binding(3) var<storage, read_write> out: array<T>;  // (n)
#else
@group(0) @binding(2) var<storage, read_write> out: array<T>;  // (n)
#endif

// tanh(v) = sign(v) (1 - e) / (1 + e) with e = exp(-2|v|) in (0, 1]: ±1 for large |v|.
fn tanh_finite(v: F) -> F {
    let e = exp(-2.0 * abs(v));
    return sign(v) * (1.0 - e) / (1.0 + e);
}

// 1 / (1 + exp(-v)), from e = exp(-|v|): 1 / (1 + e) for v >= 0, e / (1 + e) below.
fn sigmoid(v: F) -> F {
    let e = exp(-abs(v));
    return select(e, F(1.0), v >= F(0.0)) / (1.0 + e);
}

// erf from the Chebyshev fit of erfc in Numerical Recipes (relative error below 1.2e-7), the
// same fit as kiln_cpu::ops::math::erf.
fn erf(v: F) -> F {
    let z = abs(v);
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    return sign(v) * (1.0 - t * exp(poly));
}

#ifndef OP_AXPY
fn f(v: F) -> F {
#ifdef OP_SILU
    return v * sigmoid(v);
#endif
#ifdef OP_GELU_TANH
    // 0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3)))
    return 0.5 * v * (1.0 + tanh_finite(0.7978845608 * (v + 0.044715 * v * v * v)));
#endif
#ifdef OP_GELU_ERF
    // 0.5 v (1 + erf(v / sqrt(2)))
    return 0.5 * v * (1.0 + erf(v * 0.70710678));
#endif
#ifdef OP_SIGMOID
    return sigmoid(v);
#endif
#ifdef OP_TANH
    return tanh_finite(v);
#endif
#ifdef OP_SCALE
    return v * p.s;
#endif
}
#endif

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_workgroup(wg, nwg) * WG_SIZE + lid;
    if i >= p.n / PER {
        return;
    }
#ifdef OP_AXPY
    out[i] = T(F(x[i]) + p.s * F(b[i]));
#else
    out[i] = T(f(F(x[i])));
#endif
}
