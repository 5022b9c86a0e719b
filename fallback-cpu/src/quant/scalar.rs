//! Scalar integer dot products: the twins every SIMD path is tested against.

use super::{ActRow, QType, f16_at, q4k_scale_min, q6k_quad};

/// Dot product of one quantized weight row with an activation row (formats as in
/// [`QType::act_kind`]). `w` must hold exactly the blocks for `a`'s length.
pub fn vec_dot(wtype: QType, w: &[u8], a: &ActRow<'_>) -> f32 {
    let qs = a.qs;
    match wtype {
        QType::Q4_0 => {
            let mut acc = 0f32;
            for (i, b) in w.chunks_exact(18).enumerate() {
                let x = &qs[32 * i..32 * i + 32];
                let mut s = 0i32;
                for j in 0..16 {
                    s += ((b[2 + j] & 15) as i32 - 8) * x[j] as i32;
                    s += ((b[2 + j] >> 4) as i32 - 8) * x[j + 16] as i32;
                }
                acc += f16_at(b, 0) * a.d[i] * s as f32;
            }
            acc
        }
        QType::Q4_1 => {
            let mut acc = 0f32;
            for (i, b) in w.chunks_exact(20).enumerate() {
                let x = &qs[32 * i..32 * i + 32];
                let mut s = 0i32;
                for j in 0..16 {
                    s += (b[4 + j] & 15) as i32 * x[j] as i32;
                    s += (b[4 + j] >> 4) as i32 * x[j + 16] as i32;
                }
                acc += f16_at(b, 0) * a.d[i] * s as f32 + f16_at(b, 2) * a.s[i];
            }
            acc
        }
        QType::Q5_0 => {
            let mut acc = 0f32;
            for (i, b) in w.chunks_exact(22).enumerate() {
                let x = &qs[32 * i..32 * i + 32];
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                let mut s = 0i32;
                for j in 0..16 {
                    let h0 = (((qh >> j) & 1) << 4) as i32;
                    let h1 = (((qh >> (j + 16)) & 1) << 4) as i32;
                    s += (((b[6 + j] & 15) as i32 | h0) - 16) * x[j] as i32;
                    s += (((b[6 + j] >> 4) as i32 | h1) - 16) * x[j + 16] as i32;
                }
                acc += f16_at(b, 0) * a.d[i] * s as f32;
            }
            acc
        }
        QType::Q8_0 => {
            let mut acc = 0f32;
            for (i, b) in w.chunks_exact(34).enumerate() {
                let x = &qs[32 * i..32 * i + 32];
                let s: i32 = (0..32).map(|j| b[2 + j] as i8 as i32 * x[j] as i32).sum();
                acc += f16_at(b, 0) * a.d[i] * s as f32;
            }
            acc
        }
        QType::Q4_K => {
            let mut acc = 0f32;
            for (i, b) in w.chunks_exact(144).enumerate() {
                let x = &qs[256 * i..256 * i + 256];
                let (scales, q) = (&b[4..16], &b[16..144]);
                let (mut sumi, mut summ) = (0i32, 0i32);
                for k in 0..4 {
                    let (s0, m0) = q4k_scale_min(2 * k, scales);
                    let (s1, m1) = q4k_scale_min(2 * k + 1, scales);
                    let (mut p0, mut p1) = (0i32, 0i32);
                    for l in 0..32 {
                        p0 += (q[32 * k + l] & 15) as i32 * x[64 * k + l] as i32;
                        p1 += (q[32 * k + l] >> 4) as i32 * x[64 * k + 32 + l] as i32;
                    }
                    sumi += s0 as i32 * p0 + s1 as i32 * p1;
                    let bs = &a.bsums[16 * i..16 * i + 16];
                    summ += m0 as i32 * (bs[4 * k] as i32 + bs[4 * k + 1] as i32);
                    summ += m1 as i32 * (bs[4 * k + 2] as i32 + bs[4 * k + 3] as i32);
                }
                acc += a.d[i] * (f16_at(b, 0) * sumi as f32 - f16_at(b, 2) * summ as f32);
            }
            acc
        }
        QType::Q6_K => {
            let mut acc = 0f32;
            for (i, b) in w.chunks_exact(210).enumerate() {
                let x = &qs[256 * i..256 * i + 256];
                let mut sumi = 0i32;
                for c in 0..2 {
                    let ql = &b[64 * c..64 * c + 64];
                    let qh = &b[128 + 32 * c..128 + 32 * c + 32];
                    for l in 0..32 {
                        for (j, q) in q6k_quad(ql, qh, l).into_iter().enumerate() {
                            let e = 128 * c + 32 * j + l;
                            let sc = b[192 + e / 16] as i8 as i32;
                            sumi += sc * (q as i32 - 32) * x[e] as i32;
                        }
                    }
                }
                acc += f16_at(b, 208) * a.d[i] * sumi as f32;
            }
            acc
        }
        QType::F32 | QType::F16 => unreachable!("float weights are handled by dot_row"),
    }
}
