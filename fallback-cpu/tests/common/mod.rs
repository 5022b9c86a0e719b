//! Helpers shared by the integration tests: a seeded RNG, random GGUF blocks and tolerances.
#![allow(dead_code, reason = "each test file uses a different subset")]

use kiln_cpu::QType;

/// xorshift64: deterministic test inputs.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e3779b97f4a7c15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32() * scale).collect()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Random blocks of `t` with finite f16 scales of either sign (as in real files).
pub fn random_blocks(t: QType, n_elems: usize, rng: &mut Rng) -> Vec<u8> {
    let nb = n_elems / t.block_size();
    let bb = t.block_bytes();
    let mut v: Vec<u8> = (0..nb * bb).map(|_| rng.next_u64() as u8).collect();
    for b in v.chunks_exact_mut(bb) {
        match t {
            QType::F32 => b.copy_from_slice(&rng.f32().to_le_bytes()),
            QType::F16 => b.copy_from_slice(&half::f16::from_f32(rng.f32()).to_le_bytes()),
            _ => {
                let offs: &[usize] = match t {
                    QType::Q4_1 | QType::Q4_K => &[0, 2],
                    QType::Q6_K => &[208],
                    _ => &[0],
                };
                for &o in offs {
                    let s = half::f16::from_f32(rng.f32() * 0.05);
                    b[o..o + 2].copy_from_slice(&s.to_le_bytes());
                }
            }
        }
    }
    v
}

/// `|a - b| <= max(abs, rel * max(|a|, |b|))`, else a message naming the index and both values.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = abs.max(rel * g.abs().max(w.abs()));
        assert!(
            (g - w).abs() <= tol || (g.is_nan() && w.is_nan()),
            "{what}: index {i}: got {g}, want {w} (tol {tol})"
        );
    }
}

/// A straightforward f64 dot product.
pub fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}
