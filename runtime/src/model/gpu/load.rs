//! Loading a GPU model from a GGUF file that arrives in pieces, in three phases:
//!
//! 1. [`GpuLoader::new`] plans from the parsed header alone: it checks every tensor against the
//!    model's shapes, creates every weight buffer (matrices in their stored block format, split
//!    by rows into parts that fit one binding; an FFN's gate and up sharing their parts'
//!    buffers) and records which bytes of the file go where.
//! 2. [`GpuLoader::write`] takes the file from its first byte in chunks of any size and writes
//!    each tensor's bytes into its buffers as they pass (`Queue::write_buffer`), keeping no more
//!    of the file than a small staging buffer. Vectors (norm weights, biases) are kept on the
//!    CPU until complete.
//! 3. [`GpuLoader::finish`] checks that every tensor arrived, uploads the vectors, creates the
//!    KV cache, the scratch buffers and the decode pipelines, and returns the [`GpuModel`].
//!
//! Natively [`GpuModel::load_with`] feeds the mapped file through the same three phases; a
//! browser feeds the chunks of a `fetch()` body, so the file is never held in wasm memory.

use super::{AttnOptions, GpuMatrix, GpuModel, Layer, Part, Weights};
use crate::error::{Error, Result};
use crate::gguf::{GgufError, GgufHeader};
use crate::gpu::Gpu;
use crate::model::MemoryNeeds;
use crate::model::config::{Config, LayerWeights, ROPE_FREQS, matrix, vector_info, vector_values};
use crate::ops::gemv::WType;
use kiln_cpu::QType;

/// Small writes are gathered up to this many bytes before they go to the queue (a chunk of at
/// least this size is written straight from the caller's bytes).
const STAGE_BYTES: usize = 64 << 10;

/// Where a run of the file's bytes goes.
#[derive(Debug)]
struct Dest {
    /// Its first byte in the file (a block boundary).
    start: u64,
    len: u64,
    /// Index into [`GpuLoader::tensors`].
    tensor: usize,
    /// The block format of its bytes (checked for NaN and infinities as they pass).
    qtype: QType,
    target: Target,
}

#[derive(Debug)]
enum Target {
    /// Into a buffer from this byte offset.
    Buffer { buffer: wgpu::Buffer, offset: u64 },
    /// Into [`GpuLoader::vectors`]`[i]`, uploaded at the end.
    Host(usize),
    /// Into [`GpuLoader::widen`]`[i]`: kept until complete, then rewritten as Q8_0 rows.
    Widen(usize),
}

/// A tensor the model uses and how much of it has arrived.
#[derive(Debug)]
struct Arrival {
    name: String,
    start: u64,
    n_bytes: u64,
    received: u64,
}

/// A vector tensor kept on the CPU until complete, and where it then goes in the model's
/// vector buffer (a float offset).
#[derive(Debug)]
struct HostVector {
    bytes: Vec<u8>,
    offset: u32,
}

/// A Q4_0 or Q5_0 matrix that joins a Q8_0 one in a concatenated q/k/v matrix: its bytes are
/// kept until complete (one tensor at a time), then each block is rewritten as the Q8_0 block
/// of the same values (exact: same scale, the same small integers) and written to its places.
#[derive(Debug)]
struct Widening {
    from: WType,
    bytes: Vec<u8>,
    len: usize,
    /// (buffer, byte offset, first row, rows) of the rewritten rows.
    places: Vec<(wgpu::Buffer, u64, u32, u32)>,
    k: u32,
}

/// A weight matrix's description, checked against its bytes in the file.
struct MatrixInfo {
    tensor: usize,
    wtype: WType,
    rows: u32,
    k: u32,
    /// Its first byte in the file.
    start: u64,
    row_bytes: u64,
}

/// The plan under construction: the header, the device and the destinations recorded so far.
struct Planner<'h> {
    gpu: &'h Gpu,
    header: &'h GgufHeader,
    /// The most bytes one part of a matrix may hold.
    max_bytes: u64,
    dests: Vec<Dest>,
    tensors: Vec<Arrival>,
    vectors: Vec<HostVector>,
    /// Floats of the vector buffer laid out so far.
    vector_floats: u32,
    widen: Vec<Widening>,
    /// Only measure: buffers are checked against the limits and counted, not created.
    dry: bool,
    /// Bytes of the buffers created (or, when `dry`, that would be).
    bytes: u64,
}

impl Planner<'_> {
    /// A weight buffer of `size` bytes (a stand-in when only measuring).
    fn buffer(
        &mut self,
        label: &str,
        size: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer> {
        self.bytes += size.max(4).next_multiple_of(4);
        if self.dry {
            self.gpu.check_buffer_size(label, size, usage)?;
            return Ok(self.gpu.stand_in());
        }
        self.gpu.create_buffer(label, size, usage)
    }

    /// Records that the model uses tensor `name` of `n_bytes` from `start`; its index.
    fn arrival(&mut self, name: &str, start: u64, n_bytes: u64) -> usize {
        self.tensors.push(Arrival {
            name: name.to_string(),
            start,
            n_bytes,
            received: 0,
        });
        self.tensors.len() - 1
    }

    /// The matrix `name`: its type, rows and length, checked against its byte count.
    fn matrix_info(&mut self, name: &str) -> Result<MatrixInfo> {
        let (t, wtype, rows, k) = matrix(self.header, name)?;
        let row_bytes = u64::from(wtype.row_bytes(k)?);
        if row_bytes == 0 || t.n_bytes != row_bytes * u64::from(rows) {
            return Err(Error::Unsupported(format!(
                "tensor `{name}` holds {} bytes, its shape needs {}",
                t.n_bytes,
                row_bytes * u64::from(rows)
            )));
        }
        let (start, n_bytes) = (t.offset, t.n_bytes);
        Ok(MatrixInfo {
            tensor: self.arrival(name, start, n_bytes),
            wtype,
            rows,
            k,
            start,
            row_bytes,
        })
    }

    /// Rows per part when each part holds `copies` matrices' rows (and `extra` bytes).
    fn rows_per_part(&self, m: &MatrixInfo, copies: u64, extra: u64) -> Result<u32> {
        self.rows_fitting(m.row_bytes, m.rows, copies, extra)
    }

    /// Rows (of at most `rows`) of `row_bytes` per part when each part holds `copies` rows per
    /// row (and `extra` bytes).
    fn rows_fitting(&self, row_bytes: u64, rows: u32, copies: u64, extra: u64) -> Result<u32> {
        if copies * row_bytes + extra > self.max_bytes {
            return Err(Error::BufferTooLarge {
                what: "one row of a weight matrix".into(),
                size: copies * row_bytes + extra,
                limit_name: "maxStorageBufferBindingSize",
                limit: self.max_bytes,
            });
        }
        Ok(
            u32::try_from(((self.max_bytes - extra) / (copies * row_bytes)).min(u64::from(rows)))
                .unwrap_or(rows)
                .max(1),
        )
    }

    /// Records that rows `row0..row0 + n` of `m` go to `buffer` from `offset`.
    fn rows_to(&mut self, m: &MatrixInfo, row0: u32, n: u32, buffer: &wgpu::Buffer, offset: u64) {
        self.dests.push(Dest {
            start: m.start + u64::from(row0) * m.row_bytes,
            len: u64::from(n) * m.row_bytes,
            tensor: m.tensor,
            qtype: m.wtype.qtype(),
            target: Target::Buffer {
                buffer: buffer.clone(),
                offset,
            },
        });
    }

    /// Buffers of `per_part` rows of `row_bytes` each (the last holds the rest) for `rows` rows.
    fn parts(
        &mut self,
        label: &str,
        rows: u32,
        per_part: u32,
        row_bytes: u64,
    ) -> Result<Vec<Part>> {
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        let mut parts = Vec::new();
        let mut row0 = 0;
        while row0 < rows {
            let n = per_part.min(rows - row0);
            let buffer = self.buffer(label, u64::from(n) * row_bytes, usage)?;
            parts.push(Part {
                buffer,
                offset: 0,
                row0,
                rows: n,
            });
            row0 += n;
        }
        Ok(parts)
    }

    /// The matrix `name` in buffers of one part each.
    fn matrix(&mut self, name: &str) -> Result<GpuMatrix> {
        let m = self.matrix_info(name)?;
        let per_part = self.rows_per_part(&m, 1, 0)?;
        let parts = self.parts(name, m.rows, per_part, m.row_bytes)?;
        for p in &parts {
            self.rows_to(&m, p.row0, p.rows, &p.buffer, 0);
        }
        Ok(GpuMatrix {
            wtype: m.wtype,
            rows: m.rows,
            k: m.k,
            parts,
        })
    }

    /// An FFN's gate and up matrices in shared buffers for [`super::gemv_gated`]: each part
    /// holds the gate rows `row0..row0 + n`, then, from the next offset a binding may start at,
    /// the same rows of up, so each half is also a binding of its own. None when the two differ
    /// in type or shape (they are then loaded apart).
    fn pair(&mut self, gate: &str, up: &str) -> Result<Option<(GpuMatrix, GpuMatrix)>> {
        let (_, gt, grows, gk) = matrix(self.header, gate)?;
        let (_, ut, urows, uk) = matrix(self.header, up)?;
        if (gt, grows, gk) != (ut, urows, uk) {
            return Ok(None);
        }
        let g = self.matrix_info(gate)?;
        let u = self.matrix_info(up)?;
        let align = u64::from(self.gpu.limits().min_storage_buffer_offset_alignment);
        let rows_per_part = self.rows_per_part(&g, 2, align)?;
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let (mut gate_parts, mut up_parts) = (Vec::new(), Vec::new());
        let mut row0 = 0;
        while row0 < g.rows {
            let n = rows_per_part.min(g.rows - row0);
            let half = u64::from(n) * g.row_bytes;
            let up_offset = half.next_multiple_of(align);
            let buffer = self.buffer("ffn gate and up", up_offset + half, usage)?;
            self.rows_to(&g, row0, n, &buffer, 0);
            self.rows_to(&u, row0, n, &buffer, up_offset);
            for (parts, offset) in [(&mut gate_parts, 0), (&mut up_parts, up_offset)] {
                parts.push(Part {
                    buffer: buffer.clone(),
                    offset,
                    row0,
                    rows: n,
                });
            }
            row0 += n;
        }
        let mat = |parts| GpuMatrix {
            wtype: g.wtype,
            rows: g.rows,
            k: g.k,
            parts,
        };
        Ok(Some((mat(gate_parts), mat(up_parts))))
    }

    /// The vector `name` of `len` f32 values: its float offset in the model's vector buffer
    /// (written when the vector is complete).
    fn vector(&mut self, name: &str, len: u32) -> Result<u32> {
        let t = vector_info(self.header, name, len)?;
        let (start, n_bytes) = (t.offset, t.n_bytes);
        let offset = self.vector_floats;
        self.vector_floats = offset.checked_add(len).ok_or_else(|| {
            Error::Unsupported("more than 2^32 floats of norm weights and biases".into())
        })?;
        let tensor = self.arrival(name, start, n_bytes);
        self.vectors.push(HostVector {
            bytes: Vec::with_capacity(n_bytes as usize),
            offset,
        });
        self.dests.push(Dest {
            start,
            len: n_bytes,
            tensor,
            qtype: QType::F32,
            target: Target::Host(self.vectors.len() - 1),
        });
        Ok(offset)
    }

    /// q, k and v (in that order) as one matrix of their rows back to back, so that one GEMV
    /// projects all three: in their own format when the three share it, as Q8_0 when each is
    /// Q4_0, Q5_0 or Q8_0 (the others rewritten exactly, see [`Widening`]); None otherwise
    /// (they are then loaded apart).
    fn qkv(&mut self, names: [&str; 3]) -> Result<Option<GpuMatrix>> {
        let mut shapes = Vec::with_capacity(3);
        for name in names {
            let (_, wtype, rows, k) = matrix(self.header, name)?;
            shapes.push((wtype, rows, k));
        }
        let (t0, _, k) = shapes[0];
        if shapes.iter().any(|s| s.2 != k) {
            return Ok(None);
        }
        let target = if shapes.iter().all(|s| s.0 == t0) {
            t0
        } else if shapes
            .iter()
            .all(|s| matches!(s.0, WType::Q4_0 | WType::Q5_0 | WType::Q8_0))
        {
            WType::Q8_0
        } else {
            return Ok(None);
        };
        let infos = [
            self.matrix_info(names[0])?,
            self.matrix_info(names[1])?,
            self.matrix_info(names[2])?,
        ];
        let rows: u32 = infos.iter().map(|m| m.rows).sum();
        let row_bytes = u64::from(target.row_bytes(k)?);
        // An even number of rows per part keeps every row boundary where a source starts (q
        // and k span an even number of rows) at a multiple of 4 bytes, as writes need.
        let per_part = (self.rows_fitting(row_bytes, rows, 1, 0)? & !1).max(2);
        let parts = self.parts("attn q|k|v", rows, per_part, row_bytes)?;
        // Each source's rows, split where the parts split them.
        let mut first = 0;
        for m in &infos {
            let mut places = Vec::new();
            for part in &parts {
                let lo = first.max(part.row0);
                let hi = (first + m.rows).min(part.row0 + part.rows);
                if lo < hi {
                    let at = u64::from(lo - part.row0) * row_bytes;
                    places.push((part.buffer.clone(), at, lo - first, hi - lo));
                }
            }
            if m.wtype == target {
                for (buffer, at, src_row, n) in &places {
                    self.rows_to(m, *src_row, *n, buffer, *at);
                }
            } else {
                let len = u64::from(m.rows) * m.row_bytes;
                self.widen.push(Widening {
                    from: m.wtype,
                    bytes: Vec::with_capacity(len as usize),
                    len: len as usize,
                    places,
                    k,
                });
                self.dests.push(Dest {
                    start: m.start,
                    len,
                    tensor: m.tensor,
                    qtype: m.wtype.qtype(),
                    target: Target::Widen(self.widen.len() - 1),
                });
            }
            first += m.rows;
        }
        Ok(Some(GpuMatrix {
            wtype: target,
            rows,
            k,
            parts,
        }))
    }
}

/// The Q8_0 rows holding exactly the values of `bytes`, rows of `k` Q4_0 or Q5_0 weights: each
/// block keeps its f16 scale, and its 4- or 5-bit integers (minus their offset) become int8.
fn widen_to_q8_0(from: WType, bytes: &[u8]) -> Vec<u8> {
    let block = from.block_bytes() as usize;
    let mut out = Vec::with_capacity(bytes.len() / block * 34);
    for b in bytes.chunks_exact(block) {
        out.extend_from_slice(&b[..2]);
        let mut q = [0i8; 32];
        match from {
            WType::Q4_0 => {
                for j in 0..16 {
                    q[j] = (b[2 + j] & 0x0f) as i8 - 8;
                    q[j + 16] = (b[2 + j] >> 4) as i8 - 8;
                }
            }
            WType::Q5_0 => {
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                for j in 0..16 {
                    let lo = (b[6 + j] & 0x0f) | (((qh >> j) & 1) << 4) as u8;
                    let hi = (b[6 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4) as u8;
                    q[j] = lo as i8 - 16;
                    q[j + 16] = hi as i8 - 16;
                }
            }
            _ => unreachable!("only Q4_0 and Q5_0 are widened"),
        }
        out.extend(q.iter().map(|&v| v as u8));
    }
    out
}

/// A GPU model whose weight buffers exist and whose file is arriving (see the module docs).
#[derive(Debug)]
pub struct GpuLoader {
    /// The model's weights, their buffers created and being filled.
    weights: Weights,
    /// Destinations in file order, none overlapping.
    dests: Vec<Dest>,
    /// The first destination not yet complete.
    next: usize,
    tensors: Vec<Arrival>,
    vectors: Vec<HostVector>,
    vector_floats: u32,
    widen: Vec<Widening>,
    done: usize,
    /// Bytes of the file received.
    pos: u64,
    /// The file's length (the end of its last tensor).
    file_len: u64,
    /// Bytes of `dests[next]` received but not yet written (fewer than [`STAGE_BYTES`]).
    stage: Vec<u8>,
    /// Bytes of `dests[next]` written to its buffer (a multiple of 4).
    written: u64,
    /// Whether the weights' values are checked for NaN and infinities as they pass (see
    /// [`GpuLoader::check_weights`]).
    check_weights: bool,
    /// Bytes of `dests[next]` received but not yet checked (less than a block), and the blocks
    /// checked.
    unchecked: Vec<u8>,
    checked: u64,
}

/// The weights' layout from the header: every tensor checked against the model's shapes, its
/// parts sized below the device's limits (and `max_part_bytes`), and each buffer created, or
/// when `dry` only measured.
#[allow(
    clippy::type_complexity,
    reason = "the planner and the weights it laid out: embeddings, output matrix, output norm \
              and RoPE frequency divisors, layers"
)]
fn plan<'h>(
    gpu: &'h Gpu,
    header: &'h GgufHeader,
    cfg: &Config,
    max_part_bytes: u64,
    dry: bool,
) -> Result<(
    Planner<'h>,
    GpuMatrix,
    Option<GpuMatrix>,
    (u32, Option<u32>),
    Vec<Layer>,
)> {
    if cfg.final_softcap != 0.0 {
        return Err(Error::Unsupported(
            "final logit soft-capping (Gemma 2) is not implemented".into(),
        ));
    }
    let limits = gpu.limits();
    let mut p = Planner {
        gpu,
        header,
        max_bytes: limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
            .min(max_part_bytes),
        dests: Vec::new(),
        tensors: Vec::new(),
        vectors: Vec::new(),
        vector_floats: 0,
        widen: Vec::new(),
        dry,
        bytes: 0,
    };
    let embd = p.matrix("token_embd.weight")?;
    let output = match header.tensor("output.weight") {
        Some(_) => Some(p.matrix("output.weight")?),
        None => None,
    };
    let output_norm = p.vector("output_norm.weight", cfg.d_model)?;
    let rope_freqs = if cfg.rope_freqs {
        Some(p.vector(ROPE_FREQS, cfg.rope_dims / 2)?)
    } else {
        None
    };
    let mut layers = Vec::with_capacity(cfg.n_layer as usize);
    for il in 0..cfg.n_layer {
        // q, k and v go into one matrix where their formats allow, and the FFN's gate and
        // up matrices into shared buffers for the fused gated GEMV; the absorbed k and v
        // (and the up half, which waits until the layer asks for it) come back as None or
        // from `up_half`. Biases lie back to back (q's, k's, v's) for rope_kv.
        let mut up_half = None;
        let mut in_qkv = false;
        let mut bias_rest = None;
        let planner = std::cell::RefCell::new(&mut p);
        let n = |s: &str| format!("blk.{il}.{s}");
        let mat = |name: &str, _| -> Result<Option<GpuMatrix>> {
            let mut p = planner.borrow_mut();
            if name.ends_with("attn_q.weight") {
                let names = [n("attn_q.weight"), n("attn_k.weight"), n("attn_v.weight")];
                if let Some(qkv) = p.qkv([&names[0], &names[1], &names[2]])? {
                    in_qkv = true;
                    return Ok(Some(qkv));
                }
            }
            if in_qkv && (name.ends_with("attn_k.weight") || name.ends_with("attn_v.weight")) {
                return Ok(None);
            }
            if let Some(stem) = name.strip_suffix("ffn_gate.weight") {
                let up = format!("{stem}ffn_up.weight");
                if let Some((gate, up)) = p.pair(name, &up)? {
                    up_half = Some(up);
                    return Ok(Some(gate));
                }
            }
            if name.ends_with("ffn_up.weight")
                && let Some(up) = up_half.take()
            {
                return Ok(Some(up));
            }
            p.matrix(name).map(Some)
        };
        let vec = |name: &str, len| -> Result<u32> {
            let mut p = planner.borrow_mut();
            if name.ends_with("attn_q.bias") {
                let q = p.vector(name, len)?;
                let k = p.vector(&n("attn_k.bias"), cfg.kv_dim())?;
                let v = p.vector(&n("attn_v.bias"), cfg.kv_dim())?;
                bias_rest = Some([k, v]);
                return Ok(q);
            }
            match (name, bias_rest) {
                (_, Some([k, _])) if name.ends_with("attn_k.bias") => Ok(k),
                (_, Some([_, v])) if name.ends_with("attn_v.bias") => Ok(v),
                _ => p.vector(name, len),
            }
        };
        let w = LayerWeights::load(cfg, il, mat, vec)?;
        layers.push(Layer::new(cfg, il, w)?);
    }
    Ok((p, embd, output, (output_norm, rope_freqs), layers))
}

impl GpuLoader {
    /// Plans the load of a model with this header and config and a KV cache of `capacity`
    /// positions: checks the tensors and creates their buffers (nothing is written yet).
    pub fn new(
        gpu: &Gpu,
        header: &GgufHeader,
        cfg: &Config,
        capacity: u32,
        attn: AttnOptions,
    ) -> Result<GpuLoader> {
        Self::with_part_limit(gpu, header, cfg, capacity, attn, u64::MAX)
    }

    /// [`GpuLoader::new`] splitting matrices into parts of at most `max_part_bytes` (or the
    /// device's binding limit, if lower): tests split small models' tensors with it.
    pub fn with_part_limit(
        gpu: &Gpu,
        header: &GgufHeader,
        cfg: &Config,
        capacity: u32,
        attn: AttnOptions,
        max_part_bytes: u64,
    ) -> Result<GpuLoader> {
        // Every tensor and buffer size is checked before the first buffer is created.
        let needs = Self::memory_needs(gpu, header, cfg, capacity, attn)?;
        // Natively, a buffer the device cannot allocate is caught here (a browser's reaches
        // the device's error handler and fails the first readback).
        #[cfg(not(target_arch = "wasm32"))]
        let scope = gpu
            .device()
            .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let planned = plan(gpu, header, cfg, max_part_bytes, false);
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::GpuMemory {
                needs,
                why: format!("but the device ran out of memory creating the weights ({e})"),
            });
        }
        let (p, embd, output, (output_norm, rope_freqs), layers) = planned?;
        let Planner {
            mut dests,
            tensors,
            vectors,
            vector_floats,
            widen,
            ..
        } = p;
        // In file order; the reader has refused files whose tensors overlap.
        dests.sort_by_key(|d| d.start);
        Ok(GpuLoader {
            weights: Weights {
                gpu: gpu.clone(),
                cfg: cfg.clone(),
                capacity,
                attn,
                embd,
                output,
                output_norm,
                rope_freqs,
                layers,
                needs,
            },
            dests,
            next: 0,
            tensors,
            vectors,
            vector_floats,
            widen,
            done: 0,
            pos: 0,
            file_len: header.data_end(),
            stage: Vec::new(),
            written: 0,
            check_weights: false,
            unchecked: Vec::new(),
            checked: 0,
        })
    }

    /// What the model needs on the GPU for a KV cache of `capacity` positions, from the
    /// header alone and before anything is created: the weights as [`GpuLoader::new`] would lay
    /// them out, the KV cache and the scratch as [`GpuLoader::finish`] creates them. Fails as
    /// `new` would where a tensor is wrong or one buffer exceeds the device's limits.
    pub fn memory_needs(
        gpu: &Gpu,
        header: &GgufHeader,
        cfg: &Config,
        capacity: u32,
        attn: AttnOptions,
    ) -> Result<MemoryNeeds> {
        let (p, ..) = plan(gpu, header, cfg, u64::MAX, true)?;
        let vectors = (u64::from(p.vector_floats) * 4).max(4).next_multiple_of(4);
        let (kv_cache, scratch) = GpuModel::activation_bytes(gpu, cfg, capacity, attn)?;
        Ok(MemoryNeeds {
            weights: p.bytes + vectors,
            kv_cache,
            scratch,
        })
    }

    /// Checks the weights' values for NaN and infinities as they arrive (off by default: a
    /// model loaded from a whole file is checked before, by
    /// [`crate::model::config::check_weights`]; [`crate::generate::Model::gpu_stream`] turns it
    /// on as `LoadOptions::check_weights` says). A bad value fails the `write` that brings it
    /// with [`Error::NonFiniteWeight`].
    pub fn check_weights(&mut self, on: bool) {
        self.check_weights = on;
    }

    /// The file's length as its header gives it (the end of its last tensor).
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Bytes of the file received so far.
    pub fn received(&self) -> u64 {
        self.pos
    }

    /// (tensors complete, tensors the model uses).
    pub fn progress(&self) -> (usize, usize) {
        (self.done, self.tensors.len())
    }

    /// Takes the next `bytes` of the file (the first call gets its first bytes, header
    /// included); chunks may have any size.
    pub fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        if bytes.len() as u64 > self.file_len - self.pos {
            return Err(GgufError::LongerThanHeader {
                file_len: self.file_len,
            }
            .into());
        }
        while !bytes.is_empty() {
            let Some(&Dest {
                start, len, tensor, ..
            }) = self.dests.get(self.next)
            else {
                // Past the last tensor the model uses.
                self.pos += bytes.len() as u64;
                break;
            };
            if self.pos < start {
                let skip = (start - self.pos).min(bytes.len() as u64);
                self.pos += skip;
                bytes = &bytes[skip as usize..];
                continue;
            }
            let n = (start + len - self.pos).min(bytes.len() as u64) as usize;
            let last = self.pos + n as u64 == start + len;
            if self.check_weights {
                self.check_finite(&bytes[..n])?;
            }
            self.deliver(&bytes[..n], last);
            self.pos += n as u64;
            bytes = &bytes[n..];
            if last {
                let t = &mut self.tensors[tensor];
                t.received += len;
                if t.received == t.n_bytes {
                    self.done += 1;
                }
                self.next += 1;
                self.written = 0;
                self.checked = 0;
            }
        }
        Ok(())
    }

    /// Checks the next bytes of `dests[next]` for NaN and infinities, a whole block at a time
    /// (a block split between two chunks waits for its end).
    fn check_finite(&mut self, mut data: &[u8]) -> Result<()> {
        let qtype = self.dests[self.next].qtype;
        let block = qtype.block_bytes();
        if !self.unchecked.is_empty() {
            let take = (block - self.unchecked.len()).min(data.len());
            self.unchecked.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.unchecked.len() < block {
                return Ok(());
            }
            let joined = std::mem::take(&mut self.unchecked);
            self.check_blocks(qtype, &joined)?;
        }
        let whole = data.len() / block * block;
        self.check_blocks(qtype, &data[..whole])?;
        self.unchecked.extend_from_slice(&data[whole..]);
        Ok(())
    }

    /// Checks whole blocks of `dests[next]` that follow the blocks checked so far.
    fn check_blocks(&mut self, qtype: QType, blocks: &[u8]) -> Result<()> {
        let block = qtype.block_bytes();
        if let Some(at) = qtype.first_non_finite(blocks) {
            let d = &self.dests[self.next];
            let t = &self.tensors[d.tensor];
            // The destination starts at a block boundary of its tensor.
            let before = (d.start - t.start) / block as u64 + self.checked;
            return Err(Error::NonFiniteWeight {
                tensor: t.name.clone(),
                index: before * qtype.block_size() as u64 + at as u64,
            });
        }
        self.checked += (blocks.len() / block) as u64;
        Ok(())
    }

    /// Passes the next bytes of `dests[next]` on; `last`: they are its end.
    fn deliver(&mut self, mut data: &[u8], last: bool) {
        let d = &self.dests[self.next];
        let (buffer, offset) = match &d.target {
            Target::Host(i) => {
                self.vectors[*i].bytes.extend_from_slice(data);
                return;
            }
            Target::Widen(i) => {
                let w = &mut self.widen[*i];
                w.bytes.extend_from_slice(data);
                if w.bytes.len() == w.len {
                    let rows = widen_to_q8_0(w.from, &w.bytes);
                    let row_bytes = (w.k / 32 * 34) as usize;
                    for (buffer, at, row0, n) in &w.places {
                        let lo = *row0 as usize * row_bytes;
                        let hi = lo + *n as usize * row_bytes;
                        self.weights.gpu.write(buffer, *at, &rows[lo..hi]);
                    }
                    w.bytes = Vec::new();
                }
                return;
            }
            Target::Buffer { buffer, offset } => (buffer, *offset),
        };
        if !last && self.stage.len() + data.len() < STAGE_BYTES {
            self.stage.extend_from_slice(data);
            return;
        }
        // Writes start and (but for a destination's last) end at multiples of 4 bytes.
        if !self.stage.is_empty() {
            let fill = ((4 - self.stage.len() % 4) % 4).min(data.len());
            self.stage.extend_from_slice(&data[..fill]);
            data = &data[fill..];
            self.weights
                .gpu
                .write(buffer, offset + self.written, &self.stage);
            self.written += self.stage.len() as u64;
            self.stage.clear();
        }
        let whole = data.len() / 4 * 4;
        if whole > 0 {
            self.weights
                .gpu
                .write(buffer, offset + self.written, &data[..whole]);
            self.written += whole as u64;
        }
        if last {
            // The tail, padded to a word (the buffer is padded too).
            if whole < data.len() {
                self.weights
                    .gpu
                    .write(buffer, offset + self.written, &data[whole..]);
            }
        } else {
            self.stage.extend_from_slice(&data[whole..]);
        }
    }

    /// Checks that every tensor arrived, uploads the vectors, and builds the model (its KV
    /// cache, scratch, pipelines and decode plans).
    pub fn finish(self) -> Result<GpuModel> {
        // The first destination not filled is in the first tensor the file has not given.
        if let Some(d) = self.dests.get(self.next) {
            let t = &self.tensors[d.tensor];
            return Err(GgufError::TensorOutOfRange {
                tensor: t.name.clone(),
                start: t.start,
                end: t.start + t.n_bytes,
                file_len: self.pos,
            }
            .into());
        }
        if self.pos < self.file_len {
            return Err(GgufError::Truncated {
                len: self.pos,
                needed: self.file_len,
                what: "the tensor data".into(),
            }
            .into());
        }
        let gpu = &self.weights.gpu;
        let vecs = gpu.create_buffer(
            "norm weights and biases",
            u64::from(self.vector_floats) * 4,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        )?;
        for v in &self.vectors {
            let values = vector_values(&v.bytes);
            gpu.write(
                &vecs,
                u64::from(v.offset) * 4,
                bytemuck::cast_slice(&values),
            );
        }
        GpuModel::assemble(self.weights, vecs)
    }
}

#[cfg(test)]
mod tests {
    use super::widen_to_q8_0;
    use crate::ops::gemv::WType;
    use kiln_cpu::QType;

    /// Widened blocks dequantize to exactly the values of the originals.
    #[test]
    fn widening_to_q8_0_keeps_every_value() {
        let mut seed = 0x2545f491u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for (from, qtype) in [(WType::Q4_0, QType::Q4_0), (WType::Q5_0, QType::Q5_0)] {
            let k = 64;
            let mut bytes = Vec::new();
            for _ in 0..3 * k / 32 {
                // A finite f16 scale, then random quants.
                let d = half::f16::from_f32((next() % 1000) as f32 / 997.0 - 0.5);
                bytes.extend_from_slice(&d.to_bits().to_le_bytes());
                for _ in 2..from.block_bytes() {
                    bytes.push(next() as u8);
                }
            }
            let wide = widen_to_q8_0(from, &bytes);
            for row in 0..3 {
                let (mut a, mut b) = (vec![0f32; k], vec![0f32; k]);
                kiln_cpu::ops::embed_row(qtype, &bytes, row, &mut a).unwrap();
                kiln_cpu::ops::embed_row(QType::Q8_0, &wide, row, &mut b).unwrap();
                assert_eq!(a, b, "{from:?} row {row}");
            }
        }
    }
}
