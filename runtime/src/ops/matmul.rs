//! f32 matrix multiplication: register-tiled, batched, with B optionally transposed (weights
//! stored one output feature per row, as in GGUF).

use crate::error::{Error, Result};
use crate::gpu::{KernelKey, Recorder, View};
use crate::ops::need;

/// Shape of `c[z] = a[z] * op(b[z])`: a (m, k), op(b) (k, n), c (m, n), `batch` times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulShape {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub batch: u32,
    /// b is stored (n, k) rather than (k, n).
    pub trans_b: bool,
}

pub fn matmul_key(trans_b: bool) -> KernelKey {
    KernelKey::new("matmul_reg")
        .uint("TILE_M", 4)
        .uint("TILE_N", 4)
        .uint("WG_X", 8)
        .uint("WG_Y", 8)
        .flag("TRANS_B", trans_b)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    stride_a: u32,
    stride_b: u32,
    stride_c: u32,
    pad: u32,
}

/// Reads a `u32` parameter of the variant's key back from its spec (`TILE_M=4` -> 4).
fn key_param(key: &str, name: &str) -> Option<u32> {
    key.split(',')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

/// Records `c = a * op(b)` for f32 matrices laid out contiguously per batch.
pub fn matmul(
    rec: &mut Recorder,
    a: View<'_>,
    b: View<'_>,
    c: View<'_>,
    s: MatmulShape,
) -> Result<()> {
    let (m, n, k, batch) = (
        u64::from(s.m),
        u64::from(s.n),
        u64::from(s.k),
        u64::from(s.batch),
    );
    if m == 0 || n == 0 || k == 0 || batch == 0 {
        return Err(Error::Shape {
            op: "matmul",
            detail: format!("empty shape {s:?}"),
        });
    }
    need("matmul", "a", &a, batch * m * k * 4)?;
    need("matmul", "b", &b, batch * k * n * 4)?;
    need("matmul", "c", &c, batch * m * n * 4)?;
    let kernel = rec.gpu().kernel(&matmul_key(s.trans_b))?;
    let spec = kernel.spec;
    let tile_m = key_param(spec.key, "TILE_M").unwrap_or(1);
    let tile_n = key_param(spec.key, "TILE_N").unwrap_or(1);
    let [wg_x, wg_y, _] = spec.workgroup_size;
    let groups = [
        s.n.div_ceil(wg_x * tile_n),
        s.m.div_ceil(wg_y * tile_m),
        s.batch,
    ];
    let params = Params {
        m: s.m,
        n: s.n,
        k: s.k,
        batch: s.batch,
        stride_a: s.m * s.k,
        stride_b: s.k * s.n,
        stride_c: s.m * s.n,
        pad: 0,
    };
    rec.dispatch(&kernel, groups, &params, &[a, b, c])
}
