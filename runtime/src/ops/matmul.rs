//! Matrix multiplication, batched, with B optionally transposed (weights stored one output
//! feature per row, as in GGUF): `matmul_reg` (f32, register-tiled, every invocation reads its
//! operands from storage) and `matmul_tiled` (f32 or f16 storage, tiles staged in workgroup
//! memory, per-batch strides).

use crate::error::{Error, Result};
use crate::gpu::{DType, KernelKey, Recorder, View, params};
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
    use params::matmul_reg as p;
    KernelKey::new("matmul_reg")
        .uint("TILE_M", p::TILE_M)
        .uint("TILE_N", p::TILE_N)
        .uint("WG_X", p::WG_X)
        .uint("WG_Y", p::WG_Y)
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
    let tile_m = spec.param("TILE_M").unwrap_or(1);
    let tile_n = spec.param("TILE_N").unwrap_or(1);
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

/// Elements between consecutive batches of `a`, `b` and `c` (a batch may be a view into a
/// larger tensor, e.g. one head of an attention layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchStrides {
    pub a: u32,
    pub b: u32,
    pub c: u32,
}

impl MatmulShape {
    /// The strides of batches stored back to back.
    pub fn contiguous(&self) -> BatchStrides {
        BatchStrides {
            a: self.m * self.k,
            b: self.k * self.n,
            c: self.m * self.n,
        }
    }
}

pub fn matmul_tiled_key(dtype: DType, trans_b: bool) -> KernelKey {
    use params::matmul_tiled as p;
    KernelKey::new("matmul_tiled")
        .word("DTYPE", dtype.wgsl())
        .uint("TILE_M", p::TILE_M)
        .uint("TILE_N", p::TILE_N)
        .uint("TILE_K", p::TILE_K)
        .uint("WG_X", p::WG_X)
        .uint("WG_Y", p::WG_Y)
        .flag("TRANS_B", trans_b)
}

/// Records `c[z] = a[z] * op(b[z])` with `a` and `b` stored as `dtype` (f16 needs SHADER_F16)
/// and `c` as f32, accumulating in f32; batch `z` of each starts `z * strides.*` elements in.
/// Tiles of `a` and `op(b)` are staged in workgroup memory, so each element is read from
/// storage once per workgroup rather than once per invocation. The grid (and so `batch`) is
/// bounded by the device's workgroups per dimension; the recorder refuses more.
pub fn matmul_tiled(
    rec: &mut Recorder,
    dtype: DType,
    a: View<'_>,
    b: View<'_>,
    c: View<'_>,
    s: MatmulShape,
    strides: BatchStrides,
) -> Result<()> {
    let shape_err = |detail: String| Error::Shape {
        op: "matmul_tiled",
        detail,
    };
    if s.m == 0 || s.n == 0 || s.k == 0 || s.batch == 0 {
        return Err(shape_err(format!("empty shape {s:?}")));
    }
    let (m, n, k) = (u64::from(s.m), u64::from(s.n), u64::from(s.k));
    // Batches of c must not overlap (two workgroups would race on one element).
    if s.batch > 1 && u64::from(strides.c) < m * n {
        return Err(shape_err(format!(
            "batches of c overlap: stride {} < {m} x {n}",
            strides.c
        )));
    }
    let last = u64::from(s.batch - 1);
    let size = dtype.size();
    let span = |stride: u32, len: u64| (last * u64::from(stride) + len) * size;
    need("matmul_tiled", "a", &a, span(strides.a, m * k))?;
    need("matmul_tiled", "b", &b, span(strides.b, k * n))?;
    need(
        "matmul_tiled",
        "c",
        &c,
        (last * u64::from(strides.c) + m * n) * 4,
    )?;
    let kernel = rec.gpu().kernel(&matmul_tiled_key(dtype, s.trans_b))?;
    let spec = kernel.spec;
    let tile_m = spec.param("TILE_M").unwrap_or(1);
    let tile_n = spec.param("TILE_N").unwrap_or(1);
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
        stride_a: strides.a,
        stride_b: strides.b,
        stride_c: strides.c,
        pad: 0,
    };
    rec.dispatch(&kernel, groups, &params, &[a, b, c])
}
