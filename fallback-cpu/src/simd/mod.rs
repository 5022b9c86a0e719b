//! Instruction-set selection and the f32/f16 vector primitives every kernel is built from.
//!
//! The active [`Isa`] is chosen once per process: `KILN_CPU_ISA` (`scalar`, `avx2`, `avxvnni`,
//! `avx512vnni`, `neon`, `simd128`) if set, else the best the CPU offers ([`Isa::detect`]). Every primitive has a
//! scalar twin in [`scalar`]; the `*_with` forms take an explicit `Isa` so tests can run each
//! path against its twin.

use std::sync::OnceLock;

use half::f16;

use crate::{CpuError, check_len};

#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;
pub mod scalar;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod wasm;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

/// An instruction set the CPU kernels can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust, any target.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C (detected at run time).
    Avx2Fma,
    /// x86-64 with AVX-VNNI (256-bit, VEX-encoded) on top of [`Isa::Avx2Fma`] (detected at run
    /// time; Alder Lake and later client CPUs, Sapphire Rapids): the quantized dot products use
    /// `vpdpbusd`/`vpdpwssd`; the f32 kernels are the AVX2 ones.
    AvxVnni,
    /// x86-64 with AVX-512 F/BW/VL/VNNI on top of [`Isa::Avx2Fma`] (detected at run time): the
    /// quantized dot products use 512-bit `vpdpbusd`; the f32 kernels are the AVX2 ones.
    Avx512Vnni,
    /// AArch64 Advanced SIMD (always present on AArch64).
    Neon,
    /// WebAssembly 128-bit SIMD (chosen at compile time with `-C target-feature=+simd128`).
    Simd128,
}

static ACTIVE: OnceLock<Isa> = OnceLock::new();

impl Isa {
    /// Every instruction set, best first.
    pub const ALL: [Isa; 6] = [
        Isa::Avx512Vnni,
        Isa::AvxVnni,
        Isa::Avx2Fma,
        Isa::Neon,
        Isa::Simd128,
        Isa::Scalar,
    ];

    /// Whether this CPU (and build) can run kernels for `self`.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => {
                Isa::Avx2Fma.is_available() && std::arch::is_x86_feature_detected!("avxvnni")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                Isa::Avx2Fma.is_available()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Simd128 => true,
            #[allow(
                unreachable_patterns,
                reason = "which arms exist depends on the target"
            )]
            _ => false,
        }
    }

    /// The instruction sets available here, best first (always ends with `Scalar`).
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
    }

    /// The best instruction set this CPU offers.
    pub fn detect() -> Isa {
        Isa::ALL
            .into_iter()
            .find(|i| i.is_available())
            .unwrap_or(Isa::Scalar)
    }

    /// Parses an override name: `scalar`, `avx2`, `avxvnni`, `avx512vnni`, `neon` or `simd128`.
    pub fn from_name(name: &str) -> Result<Isa, CpuError> {
        let isa = match name.trim().to_ascii_lowercase().as_str() {
            "scalar" => Isa::Scalar,
            "avx2" | "avx2fma" => Isa::Avx2Fma,
            "avxvnni" => Isa::AvxVnni,
            "avx512vnni" | "avx512" => Isa::Avx512Vnni,
            "neon" => Isa::Neon,
            "simd128" => Isa::Simd128,
            _ => return Err(CpuError::UnknownIsa(name.to_string())),
        };
        isa.ensure()
    }

    /// `KILN_CPU_ISA` if set (an error if it names an unknown or unavailable set), else
    /// [`Isa::detect`].
    pub fn from_env() -> Result<Isa, CpuError> {
        match std::env::var("KILN_CPU_ISA") {
            Ok(name) if !name.trim().is_empty() => Isa::from_name(&name),
            _ => Ok(Isa::detect()),
        }
    }

    /// Fixes the process-wide instruction set from [`Isa::from_env`]; call it at start-up to see
    /// a bad `KILN_CPU_ISA` as an error. Later calls return the set already chosen.
    pub fn init() -> Result<Isa, CpuError> {
        if let Some(isa) = ACTIVE.get() {
            return Ok(*isa);
        }
        let isa = Isa::from_env()?;
        Ok(*ACTIVE.get_or_init(|| isa))
    }

    /// The process-wide instruction set used by the kernels that take none. If `KILN_CPU_ISA`
    /// is invalid and [`Isa::init`] was never called, this reports it once on stderr and uses
    /// [`Isa::detect`].
    pub fn active() -> Isa {
        if let Some(isa) = ACTIVE.get() {
            return *isa;
        }
        match Isa::init() {
            Ok(isa) => isa,
            Err(e) => {
                eprintln!("kiln-cpu: {e}; using {:?}", Isa::detect());
                *ACTIVE.get_or_init(Isa::detect)
            }
        }
    }

    /// `Ok(self)` if available, else [`CpuError::IsaUnavailable`].
    pub fn ensure(self) -> Result<Isa, CpuError> {
        if self.is_available() {
            Ok(self)
        } else {
            Err(CpuError::IsaUnavailable(self))
        }
    }
}

// The private `*_isa` functions below take an `Isa` that has been checked with `ensure` (or comes
// from `Isa::active`), which is what makes their `unsafe` calls sound.

macro_rules! dispatch {
    ($isa:expr, $name:ident ( $($arg:expr),* )) => {
        match $isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the Isa was checked available (AVX2+FMA+F16C, which AvxVnni and Avx512Vnni
            // include) before reaching here.
            Isa::Avx2Fma | Isa::AvxVnni | Isa::Avx512Vnni => unsafe { x86::$name($($arg),*) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: NEON was checked available.
            Isa::Neon => unsafe { neon::$name($($arg),*) },
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Simd128 => wasm::$name($($arg),*),
            _ => scalar::$name($($arg),*),
        }
    };
}

pub(crate) fn dot_isa(isa: Isa, a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    dispatch!(isa, dot(a, b))
}
pub(crate) fn axpy_isa(isa: Isa, alpha: f32, x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    dispatch!(isa, axpy(alpha, x, y))
}
pub(crate) fn scale_isa(isa: Isa, alpha: f32, x: &mut [f32]) {
    dispatch!(isa, scale(alpha, x))
}
pub(crate) fn sum_isa(isa: Isa, x: &[f32]) -> f32 {
    dispatch!(isa, sum(x))
}
pub(crate) fn max_isa(isa: Isa, x: &[f32]) -> f32 {
    dispatch!(isa, max(x))
}
pub(crate) fn f16_to_f32_isa(isa: Isa, src: &[f16], dst: &mut [f32]) {
    debug_assert_eq!(src.len(), dst.len());
    dispatch!(isa, f16_to_f32(src, dst))
}
pub(crate) fn dot_f16_isa(isa: Isa, a: &[f32], b: &[f16]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    dispatch!(isa, dot_f16(a, b))
}
pub(crate) fn axpy_f16_isa(isa: Isa, alpha: f32, x: &[f16], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    dispatch!(isa, axpy_f16(alpha, x, y))
}

/// `Σ a[i]·b[i]` on `isa`.
pub fn dot_with(isa: Isa, a: &[f32], b: &[f32]) -> Result<f32, CpuError> {
    isa.ensure()?;
    check_len("dot: b", a.len(), b.len())?;
    Ok(dot_isa(isa, a, b))
}
/// `y[i] += alpha·x[i]` on `isa`.
pub fn axpy_with(isa: Isa, alpha: f32, x: &[f32], y: &mut [f32]) -> Result<(), CpuError> {
    isa.ensure()?;
    check_len("axpy: y", x.len(), y.len())?;
    axpy_isa(isa, alpha, x, y);
    Ok(())
}
/// `x[i] *= alpha` on `isa`.
pub fn scale_with(isa: Isa, alpha: f32, x: &mut [f32]) -> Result<(), CpuError> {
    isa.ensure()?;
    scale_isa(isa, alpha, x);
    Ok(())
}
/// `Σ x[i]` on `isa`.
pub fn sum_with(isa: Isa, x: &[f32]) -> Result<f32, CpuError> {
    isa.ensure()?;
    Ok(sum_isa(isa, x))
}
/// `max x[i]` on `isa` (`-inf` for an empty slice; NaNs are ignored unless all are NaN).
pub fn max_with(isa: Isa, x: &[f32]) -> Result<f32, CpuError> {
    isa.ensure()?;
    Ok(max_isa(isa, x))
}
/// Converts an f16 row to f32 on `isa` (F16C on x86).
pub fn f16_to_f32_with(isa: Isa, src: &[f16], dst: &mut [f32]) -> Result<(), CpuError> {
    isa.ensure()?;
    check_len("f16_to_f32: dst", src.len(), dst.len())?;
    f16_to_f32_isa(isa, src, dst);
    Ok(())
}
/// `Σ a[i]·b[i]` with `b` in f16, on `isa`.
pub fn dot_f16_with(isa: Isa, a: &[f32], b: &[f16]) -> Result<f32, CpuError> {
    isa.ensure()?;
    check_len("dot_f16: b", a.len(), b.len())?;
    Ok(dot_f16_isa(isa, a, b))
}
/// `y[i] += alpha·x[i]` with `x` in f16, on `isa`.
pub fn axpy_f16_with(isa: Isa, alpha: f32, x: &[f16], y: &mut [f32]) -> Result<(), CpuError> {
    isa.ensure()?;
    check_len("axpy_f16: y", x.len(), y.len())?;
    axpy_f16_isa(isa, alpha, x, y);
    Ok(())
}

/// `Σ a[i]·b[i]` on the active ISA.
pub fn dot(a: &[f32], b: &[f32]) -> Result<f32, CpuError> {
    dot_with(Isa::active(), a, b)
}
/// `y[i] += alpha·x[i]` on the active ISA.
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) -> Result<(), CpuError> {
    axpy_with(Isa::active(), alpha, x, y)
}
/// `x[i] *= alpha` on the active ISA.
pub fn scale(alpha: f32, x: &mut [f32]) {
    scale_isa(Isa::active(), alpha, x)
}
/// `Σ x[i]` on the active ISA.
pub fn sum(x: &[f32]) -> f32 {
    sum_isa(Isa::active(), x)
}
/// `max x[i]` on the active ISA.
pub fn max(x: &[f32]) -> f32 {
    max_isa(Isa::active(), x)
}
/// Converts an f16 row to f32 on the active ISA.
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) -> Result<(), CpuError> {
    f16_to_f32_with(Isa::active(), src, dst)
}
