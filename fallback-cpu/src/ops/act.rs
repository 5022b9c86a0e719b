//! Elementwise activations, gated units and softmax.

use super::{math, multiversion};
use crate::{CpuError, Isa, check_len};

macro_rules! unary {
    ($name:ident, $with:ident, $f:path, $doc:literal) => {
        #[doc = $doc]
        #[doc = " In place, on the active ISA."]
        pub fn $name(x: &mut [f32]) {
            $with(Isa::active(), x).expect("the active ISA is available");
        }
        #[doc = $doc]
        #[doc = " In place, on `isa`."]
        pub fn $with(isa: Isa, x: &mut [f32]) -> Result<(), CpuError> {
            isa.ensure()?;
            multiversion!(isa, |x: &mut [f32]| {
                for v in x.iter_mut() {
                    *v = $f(*v);
                }
            }(x));
            Ok(())
        }
    };
}

unary!(silu, silu_with, math::silu, "SiLU: `x·sigmoid(x)`.");
unary!(
    gelu_tanh,
    gelu_tanh_with,
    math::gelu_tanh,
    "GELU (tanh approximation)."
);
unary!(gelu_erf, gelu_erf_with, math::gelu_erf, "GELU (erf form).");
unary!(sigmoid, sigmoid_with, math::sigmoid, "Logistic sigmoid.");
unary!(
    tanh,
    tanh_with,
    math::tanh,
    "`tanh`, finite for large inputs."
);

macro_rules! gated {
    ($name:ident, $with:ident, $f:path, $doc:literal) => {
        #[doc = $doc]
        pub fn $name(gate: &[f32], up: &[f32], out: &mut [f32]) -> Result<(), CpuError> {
            $with(Isa::active(), gate, up, out)
        }
        #[doc = $doc]
        #[doc = " On `isa`."]
        pub fn $with(isa: Isa, gate: &[f32], up: &[f32], out: &mut [f32]) -> Result<(), CpuError> {
            isa.ensure()?;
            check_len(concat!(stringify!($name), ": up"), gate.len(), up.len())?;
            check_len(concat!(stringify!($name), ": out"), gate.len(), out.len())?;
            multiversion!(isa, |g: &[f32], u: &[f32], o: &mut [f32]| {
                for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                    *o = $f(g) * u;
                }
            }(
                gate, up, out
            ));
            Ok(())
        }
    };
}

gated!(
    swiglu,
    swiglu_with,
    math::silu,
    "SwiGLU: `out = silu(gate) · up`."
);
gated!(
    geglu,
    geglu_with,
    math::gelu_tanh,
    "GeGLU: `out = gelu_tanh(gate) · up` (Gemma's form)."
);

/// Softmax in place on the active ISA: `x[i] = e^(x[i]-max) / Σ`. An empty slice is left as is.
pub fn softmax(x: &mut [f32]) {
    softmax_with(Isa::active(), x).expect("the active ISA is available");
}

/// [`softmax`] on `isa`.
pub fn softmax_with(isa: Isa, x: &mut [f32]) -> Result<(), CpuError> {
    isa.ensure()?;
    if x.is_empty() {
        return Ok(());
    }
    let max = crate::simd::max_isa(isa, x);
    let max = if max.is_finite() { max } else { 0.0 };
    multiversion!(isa, |x: &mut [f32], max: f32| {
        for v in x.iter_mut() {
            *v = math::exp(*v - max);
        }
    }(x, max));
    let sum = crate::simd::sum_isa(isa, x);
    crate::simd::scale_isa(isa, 1.0 / sum, x);
    Ok(())
}
