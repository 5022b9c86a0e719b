//! Every SIMD primitive against its scalar twin, ISA selection, and bad lengths.

mod common;

use common::{Rng, assert_close, dot64};
use half::f16;
use kiln_cpu::simd::*;
use kiln_cpu::{CpuError, Isa};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const SIZES: [usize; 8] = [0, 1, 3, 7, 8, 33, 100, 1027];

#[test]
fn detect_and_override_names() {
    let avail = Isa::available();
    assert_eq!(avail.last(), Some(&Isa::Scalar));
    assert_eq!(Isa::detect(), avail[0]);
    assert_eq!(Isa::from_name("scalar"), Ok(Isa::Scalar));
    assert!(matches!(
        Isa::from_name("sse9"),
        Err(CpuError::UnknownIsa(_))
    ));
    for isa in Isa::ALL {
        let name = match isa {
            Isa::Scalar => "scalar",
            Isa::Avx2Fma => "avx2",
            Isa::AvxVnni => "avxvnni",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Neon => "neon",
            Isa::Simd128 => "simd128",
        };
        assert_eq!(Isa::from_name(name).is_ok(), avail.contains(&isa), "{name}");
    }
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        avail.contains(&Isa::Avx2Fma),
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    );
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        avail.contains(&Isa::AvxVnni),
        avail.contains(&Isa::Avx2Fma) && std::arch::is_x86_feature_detected!("avxvnni")
    );
    // The preference order: AVX-512 VNNI, then AVX-VNNI, then AVX2.
    #[cfg(target_arch = "x86_64")]
    if !avail.contains(&Isa::Avx512Vnni) && avail.contains(&Isa::AvxVnni) {
        assert_eq!(Isa::detect(), Isa::AvxVnni);
    }
    assert_eq!(
        Isa::from_name("AVXVNNI").is_ok(),
        avail.contains(&Isa::AvxVnni)
    );
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        avail.contains(&Isa::Avx512Vnni),
        avail.contains(&Isa::Avx2Fma)
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    );
    #[cfg(target_arch = "aarch64")]
    assert!(avail.contains(&Isa::Neon));
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    assert!(avail.contains(&Isa::Simd128));
    assert!(avail.contains(&Isa::active()));
}

#[test]
fn primitives_match_scalar() {
    let mut rng = Rng::new(1);
    for n in SIZES {
        let a = rng.vec(n, 3.0);
        let b = rng.vec(n, 3.0);
        let h: Vec<f16> = rng.vec(n, 3.0).into_iter().map(f16::from_f32).collect();
        let hf: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
        let mag = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum::<f32>() + 1e-6;
        for isa in Isa::available() {
            let d = dot_with(isa, &a, &b).expect("dot");
            assert!(
                (d as f64 - dot64(&a, &b)).abs() <= 1e-5 * mag as f64,
                "{isa:?} dot n={n}"
            );
            let df = dot_f16_with(isa, &a, &h).expect("dot_f16");
            assert!(
                (df as f64 - dot64(&a, &hf)).abs() <= 1e-5 * mag as f64 + 1e-3,
                "{isa:?} dot_f16 n={n}"
            );
            let s = sum_with(isa, &a).expect("sum");
            assert!(
                (s as f64 - a.iter().map(|&v| v as f64).sum::<f64>()).abs()
                    <= 1e-5 * (n as f64 + 1.0),
                "{isa:?} sum"
            );
            let m = max_with(isa, &a).expect("max");
            assert_eq!(m, scalar::max(&a), "{isa:?} max n={n}");
            let mut y = b.clone();
            axpy_with(isa, 0.75, &a, &mut y).expect("axpy");
            let mut want = b.clone();
            scalar::axpy(0.75, &a, &mut want);
            assert_close(&format!("{isa:?} axpy"), &y, &want, 1e-6, 1e-6);
            let mut y = b.clone();
            axpy_f16_with(isa, -1.5, &h, &mut y).expect("axpy_f16");
            let mut want = b.clone();
            scalar::axpy_f16(-1.5, &h, &mut want);
            assert_close(&format!("{isa:?} axpy_f16"), &y, &want, 1e-6, 1e-6);
            let mut y = a.clone();
            scale_with(isa, 0.3, &mut y).expect("scale");
            let want: Vec<f32> = a.iter().map(|v| v * 0.3).collect();
            assert_close(&format!("{isa:?} scale"), &y, &want, 0.0, 0.0);
            let mut y = vec![0f32; n];
            f16_to_f32_with(isa, &h, &mut y).expect("f16");
            assert_eq!(y, hf, "{isa:?} f16_to_f32 n={n}");
        }
    }
}

#[test]
fn max_ignores_nan_and_handles_empty() {
    for isa in Isa::available() {
        assert_eq!(max_with(isa, &[]).expect("max"), f32::NEG_INFINITY);
        let mut v = vec![1.0f32; 19];
        v[3] = f32::NAN;
        v[17] = 4.0;
        assert_eq!(max_with(isa, &v).expect("max"), 4.0, "{isa:?}");
    }
}

#[test]
fn mismatched_lengths_are_errors() {
    for isa in Isa::available() {
        assert!(matches!(
            dot_with(isa, &[1.0; 3], &[1.0; 4]),
            Err(CpuError::Length { .. })
        ));
        assert!(axpy_with(isa, 1.0, &[1.0; 3], &mut [1.0; 2]).is_err());
        assert!(f16_to_f32_with(isa, &[f16::ONE; 3], &mut [0.0; 4]).is_err());
        assert!(dot_f16_with(isa, &[1.0; 3], &[f16::ONE; 2]).is_err());
    }
    for isa in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
        assert_eq!(
            dot_with(isa, &[1.0], &[1.0]),
            Err(CpuError::IsaUnavailable(isa))
        );
    }
}

/// Every one of the 65536 f16 bit patterns converts exactly as `half` converts it (zeros,
/// subnormals, the largest normals, infinities), NaNs to NaNs of the same sign: the SIMD paths
/// convert 8 or 16 halves at a time, so the patterns are laid out that way, with a scalar tail.
#[test]
fn f16_conversion_is_exact_for_every_pattern() {
    let h: Vec<f16> = (0..=u16::MAX)
        .map(f16::from_bits)
        .chain([f16::NAN])
        .collect();
    for isa in Isa::available() {
        let mut y = vec![0f32; h.len()];
        f16_to_f32_with(isa, &h, &mut y).expect("f16");
        for (x, got) in h.iter().zip(&y) {
            let want = x.to_f32();
            if want.is_nan() {
                assert!(
                    got.is_nan() && got.is_sign_negative() == want.is_sign_negative(),
                    "{isa:?} f16 {:#06x}: {got}",
                    x.to_bits()
                );
            } else {
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{isa:?} f16 {:#06x}: {got} (want {want})",
                    x.to_bits()
                );
            }
        }
        // The dot and axpy forms convert through the same path: weights of one non-zero element.
        let finite: Vec<f16> = h.iter().copied().filter(|v| v.is_finite()).collect();
        let ones = vec![1.0f32; finite.len()];
        for (k, win) in finite.chunks(9).enumerate().step_by(97) {
            let d = dot_f16_with(isa, &ones[..win.len()], win).expect("dot_f16");
            let want: f32 = win.iter().map(|v| v.to_f32()).sum();
            let tol = win.iter().map(|v| v.to_f32().abs()).sum::<f32>() * 1e-6;
            assert!(
                (d - want).abs() <= tol,
                "{isa:?} dot_f16 window {k}: {d} vs {want}"
            );
        }
    }
}
