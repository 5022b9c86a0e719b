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

use super::{Acts, AttnOptions, CHUNK, GpuMatrix, GpuModel, Layer, Part, Scratch};
use crate::error::{Error, Result};
use crate::gguf::{GgufError, GgufHeader};
use crate::gpu::Gpu;
use crate::model::config::{Config, LayerWeights, matrix, vector_info, vector_values};
use crate::ops::attention::{
    Attention, MAX_SPLITS, attention_combine_key, attention_flash_key, attention_key,
    partials_bytes, scratch_bytes,
};
use crate::ops::gemv::{Split, WType};
use crate::ops::matmul_q::Prefill;
use crate::ops::reduce::Combine;

/// Small writes are gathered up to this many bytes before they go to the queue (a chunk of at
/// least this size is written straight from the caller's bytes).
const STAGE_BYTES: usize = 64 << 10;

/// Where a run of the file's bytes goes.
#[derive(Debug)]
struct Dest {
    /// Its first byte in the file.
    start: u64,
    len: u64,
    /// Index into [`GpuLoader::tensors`].
    tensor: usize,
    target: Target,
}

#[derive(Debug)]
enum Target {
    /// Into a buffer from this byte offset.
    Buffer { buffer: wgpu::Buffer, offset: u64 },
    /// Into [`GpuLoader::vectors`]`[i]`, uploaded at the end.
    Host(usize),
}

/// A tensor the model uses and how much of it has arrived.
#[derive(Debug)]
struct Arrival {
    name: String,
    start: u64,
    n_bytes: u64,
    received: u64,
}

/// A vector tensor kept on the CPU until complete, and the buffer it then goes to.
#[derive(Debug)]
struct HostVector {
    bytes: Vec<u8>,
    buffer: wgpu::Buffer,
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
}

impl Planner<'_> {
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
        if copies * m.row_bytes + extra > self.max_bytes {
            return Err(Error::BufferTooLarge {
                what: "weight row",
                size: copies * m.row_bytes + extra,
                limit: self.max_bytes,
            });
        }
        Ok(u32::try_from(
            ((self.max_bytes - extra) / (copies * m.row_bytes)).min(u64::from(m.rows)),
        )
        .unwrap_or(m.rows)
        .max(1))
    }

    /// Records that rows `row0..row0 + n` of `m` go to `buffer` from `offset`.
    fn rows_to(&mut self, m: &MatrixInfo, row0: u32, n: u32, buffer: &wgpu::Buffer, offset: u64) {
        self.dests.push(Dest {
            start: m.start + u64::from(row0) * m.row_bytes,
            len: u64::from(n) * m.row_bytes,
            tensor: m.tensor,
            target: Target::Buffer {
                buffer: buffer.clone(),
                offset,
            },
        });
    }

    /// The matrix `name` in buffers of one part each.
    fn matrix(&mut self, name: &str) -> Result<GpuMatrix> {
        let m = self.matrix_info(name)?;
        let rows_per_part = self.rows_per_part(&m, 1, 0)?;
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        let mut parts = Vec::new();
        let mut row0 = 0;
        while row0 < m.rows {
            let n = rows_per_part.min(m.rows - row0);
            let buffer = self
                .gpu
                .create_buffer(name, u64::from(n) * m.row_bytes, usage)?;
            self.rows_to(&m, row0, n, &buffer, 0);
            parts.push(Part {
                buffer,
                offset: 0,
                row0,
                rows: n,
            });
            row0 += n;
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
            let buffer = self
                .gpu
                .create_buffer("ffn gate and up", up_offset + half, usage)?;
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

    /// The vector `name` of `len` f32 values: its buffer, written when the vector is complete.
    fn vector(&mut self, name: &str, len: u32) -> Result<wgpu::Buffer> {
        let t = vector_info(self.header, name, len)?;
        let (start, n_bytes) = (t.offset, t.n_bytes);
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        let buffer = self.gpu.create_buffer(name, n_bytes, usage)?;
        let tensor = self.arrival(name, start, n_bytes);
        self.vectors.push(HostVector {
            bytes: Vec::with_capacity(n_bytes as usize),
            buffer: buffer.clone(),
        });
        self.dests.push(Dest {
            start,
            len: n_bytes,
            tensor,
            target: Target::Host(self.vectors.len() - 1),
        });
        Ok(buffer)
    }
}

/// A GPU model whose weight buffers exist and whose file is arriving (see the module docs).
#[derive(Debug)]
pub struct GpuLoader {
    gpu: Gpu,
    cfg: Config,
    capacity: u32,
    attn: AttnOptions,
    embd: GpuMatrix,
    output: Option<GpuMatrix>,
    output_norm: wgpu::Buffer,
    layers: Vec<LayerWeights<GpuMatrix, wgpu::Buffer>>,
    /// Destinations in file order, none overlapping.
    dests: Vec<Dest>,
    /// The first destination not yet complete.
    next: usize,
    tensors: Vec<Arrival>,
    vectors: Vec<HostVector>,
    done: usize,
    /// Bytes of the file received.
    pos: u64,
    /// The file's length (the end of its last tensor).
    file_len: u64,
    /// Bytes of `dests[next]` received but not yet written (fewer than [`STAGE_BYTES`]).
    stage: Vec<u8>,
    /// Bytes of `dests[next]` written to its buffer (a multiple of 4).
    written: u64,
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
        };
        let embd = p.matrix("token_embd.weight")?;
        let output = match header.tensor("output.weight") {
            Some(_) => Some(p.matrix("output.weight")?),
            None => None,
        };
        let output_norm = p.vector("output_norm.weight", cfg.d_model)?;
        let mut layers = Vec::with_capacity(cfg.n_layer as usize);
        for il in 0..cfg.n_layer {
            // The FFN's gate and up matrices go into shared buffers for the fused gated GEMV;
            // the up half waits here until the layer asks for it (right after the gate).
            let mut up_half = None;
            let planner = std::cell::RefCell::new(&mut p);
            let mat = |name: &str| {
                let mut p = planner.borrow_mut();
                if let Some(stem) = name.strip_suffix("ffn_gate.weight") {
                    let up = format!("{stem}ffn_up.weight");
                    if let Some((gate, up)) = p.pair(name, &up)? {
                        up_half = Some(up);
                        return Ok(gate);
                    }
                }
                if name.ends_with("ffn_up.weight")
                    && let Some(up) = up_half.take()
                {
                    return Ok(up);
                }
                p.matrix(name)
            };
            let vec = |name: &str, len| planner.borrow_mut().vector(name, len);
            let w = LayerWeights::load(cfg, il, mat, vec)?;
            let shapes_ok = w.q.rows == cfg.q_dim()
                && w.k.rows == cfg.kv_dim()
                && w.v.rows == cfg.kv_dim()
                && w.o.k == cfg.q_dim()
                && w.gate.rows == cfg.d_ff
                && w.down.k == cfg.d_ff;
            if !shapes_ok {
                return Err(Error::Unsupported(format!(
                    "layer {il}'s tensor shapes do not match the metadata"
                )));
            }
            layers.push(w);
        }
        let Planner {
            mut dests,
            tensors,
            vectors,
            ..
        } = p;
        dests.sort_by_key(|d| d.start);
        for pair in dests.windows(2) {
            if pair[0].start + pair[0].len > pair[1].start {
                return Err(GgufError::BadTensor {
                    tensor: tensors[pair[1].tensor].name.clone(),
                    detail: format!(
                        "its data overlaps that of `{}`: the file is corrupt",
                        tensors[pair[0].tensor].name
                    ),
                }
                .into());
            }
        }
        Ok(GpuLoader {
            gpu: gpu.clone(),
            cfg: cfg.clone(),
            capacity,
            attn,
            embd,
            output,
            output_norm,
            layers,
            dests,
            next: 0,
            tensors,
            vectors,
            done: 0,
            pos: 0,
            file_len: header.data_end(),
            stage: Vec::new(),
            written: 0,
        })
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
            }
        }
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
            self.gpu.write(buffer, offset + self.written, &self.stage);
            self.written += self.stage.len() as u64;
            self.stage.clear();
        }
        let whole = data.len() / 4 * 4;
        if whole > 0 {
            self.gpu
                .write(buffer, offset + self.written, &data[..whole]);
            self.written += whole as u64;
        }
        if last {
            // The tail, padded to a word (the buffer is padded too).
            if whole < data.len() {
                self.gpu
                    .write(buffer, offset + self.written, &data[whole..]);
            }
        } else {
            self.stage.extend_from_slice(&data[whole..]);
        }
    }

    /// Checks that every tensor arrived, uploads the vectors, allocates the KV cache and
    /// scratch and builds the decode pipelines.
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
        let gpu = &self.gpu;
        for v in &self.vectors {
            gpu.write(&v.buffer, 0, bytemuck::cast_slice(&vector_values(&v.bytes)));
        }
        let (cfg, capacity, attn) = (&self.cfg, self.capacity, self.attn);
        let a = Attention {
            n_head: cfg.n_head,
            n_kv_head: cfg.n_kv_head,
            head_dim: cfg.head_dim,
            capacity,
            n_tok: CHUNK,
            pos0: 0,
            window: 0,
            scale: cfg.attn_scale,
            softcap: cfg.attn_softcap,
            kv: attn.kv,
        };
        // The most splits a step can use: spans of fewer than two minimal splits are not split.
        let max_splits =
            if attn.split_min_len > 0 && capacity >= attn.split_min_len.saturating_mul(2) {
                capacity.div_ceil(attn.split_min_len).min(MAX_SPLITS)
            } else {
                0
            };
        let storage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        let mut layers = Vec::with_capacity(self.layers.len());
        for w in self.layers {
            layers.push(Layer {
                w,
                k_cache: gpu.create_buffer("k cache", a.cache_bytes(), storage)?,
                v_cache: gpu.create_buffer("v cache", a.cache_bytes(), storage)?,
            });
        }
        let f = |label: &str, floats: u64| gpu.create_buffer(label, floats.max(1) * 4, storage);
        let c = u64::from(CHUNK);
        let s = Scratch {
            x: f("x", c * u64::from(cfg.d_model))?,
            xn: f("xn", c * u64::from(cfg.d_model))?,
            q: f("q", c * u64::from(cfg.q_dim()))?,
            k: f("k", c * u64::from(cfg.kv_dim()))?,
            v: f("v", c * u64::from(cfg.kv_dim()))?,
            qn: f("qn", c * u64::from(cfg.q_dim()))?,
            kn: f("kn", c * u64::from(cfg.kv_dim()))?,
            att: f("att", c * u64::from(cfg.q_dim()))?,
            tmp: f("tmp", c * u64::from(cfg.d_model))?,
            tmp2: f("tmp2", c * u64::from(cfg.d_model))?,
            gate: f("gate", c * u64::from(cfg.d_ff))?,
            up: f("up", c * u64::from(cfg.d_ff))?,
            hidden: f("hidden", c * u64::from(cfg.d_ff))?,
            last: f("last", u64::from(cfg.d_model))?,
            last_norm: f("last norm", u64::from(cfg.d_model))?,
            logits: f("logits", u64::from(cfg.vocab))?,
            scores: gpu.create_buffer(
                "scores",
                scratch_bytes(&Attention { n_tok: 1, ..a }),
                storage,
            )?,
            partials: gpu.create_buffer(
                "attention partials",
                partials_bytes(&a, max_splits).max(4),
                storage,
            )?,
            tokens: f("tokens", u64::from(capacity) + 1)?,
            recent: f("recent", u64::from(capacity) + 1)?,
        };
        // The kernels only decode steps use (the prompt compiles its own on the first step),
        // created now so that no decode step compiles a pipeline, however long the context.
        let combine = Combine::best(gpu);
        let mut decode_kernels = vec![attention_key(combine, attn.kv)];
        if max_splits > 0 {
            decode_kernels.push(attention_flash_key(attn.kv, cfg.head_dim, true));
            decode_kernels.push(attention_combine_key());
        }
        #[cfg(not(target_arch = "wasm32"))]
        pollster::block_on(gpu.prewarm(&decode_kernels))?;
        // A browser cannot block on the validation scope: build the pipelines without it (their
        // errors reach the device's error handler, which the first readback checks).
        #[cfg(target_arch = "wasm32")]
        for key in &decode_kernels {
            gpu.kernel(key)?;
        }
        let model = GpuModel {
            gpu: gpu.clone(),
            cfg: self.cfg.clone(),
            combine,
            split: Split::best(gpu),
            prefill: Prefill::best(gpu),
            acts: Acts::new(gpu, cfg.d_model.max(cfg.d_ff).max(cfg.q_dim()))?,
            embd: self.embd,
            output: self.output,
            output_norm: self.output_norm,
            layers,
            s,
            capacity,
            attn,
            cached_pipelines: 0,
        };
        model.prewarm_decode()?;
        Ok(model)
    }
}
