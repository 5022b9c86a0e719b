//! A GGUF file fed in chunks. Where the model runs is known before the first chunk
//! ([`ModelLoader::open`]), so each chunk goes straight where the model keeps it:
//!
//! - the CPU path keeps the file in wasm memory (its kernels read the weights there): each chunk
//!   is copied once into a buffer sized to the whole file as soon as the header says how long it
//!   is (or up front from a size hint such as `Content-Length`), so the file never exists twice
//!   (no concatenation, no doubling of a growing `Vec`);
//! - the GPU path keeps only the header's bytes until the header is complete; then every chunk
//!   passes through a bounded scratch buffer into the weight buffers on the GPU
//!   ([`kiln::generate::GpuStream`]), so wasm memory never holds the file.

use js_sys::Uint8Array;
use kiln::generate::{Backend, LoadOptions, OnDeviceLost};
use kiln::gguf::{GgufError, GgufFile, GgufHeader, Parsed};
use wasm_bindgen::prelude::*;

use crate::options::for_each_option;
use crate::{Model, js_err};

/// Where the file's bytes go.
#[derive(Debug)]
enum Sink {
    /// The CPU path: `buf` receives the whole file.
    Cpu,
    /// The GPU, before the header is complete: `buf` receives the header's bytes.
    #[cfg(target_arch = "wasm32")]
    GpuHeader(kiln::gpu::Gpu),
    /// The GPU, once the header is complete: chunks go to the weight buffers.
    #[cfg(target_arch = "wasm32")]
    Gpu(Box<kiln::generate::GpuStream>),
}

/// Receives a GGUF file in chunks, then builds a [`Model`] from it.
#[wasm_bindgen]
#[derive(Debug)]
pub struct ModelLoader {
    sink: Sink,
    opts: LoadOptions,
    /// Why the model will run where it runs (`info().backendReason`).
    reason: String,
    /// The bytes kept in wasm memory (see [`Sink`]).
    buf: Vec<u8>,
    /// Bytes received so far.
    received: usize,
    /// Bytes the header needs before it is worth parsing again (0 once parsed).
    header_needs: usize,
    /// The file's length as its header gives it (the end of the last tensor).
    expected: Option<usize>,
}

/// The most bytes of a chunk taken at a time (a bigger chunk is taken in slices).
const SLICE_BYTES: u32 = 1 << 20;

#[wasm_bindgen]
impl ModelLoader {
    /// A loader for the CPU path. `size_hint`: the file's length if known (e.g. from
    /// `Content-Length`), to allocate once.
    #[wasm_bindgen(constructor)]
    pub fn new(size_hint: Option<f64>) -> ModelLoader {
        Self::cpu(size_hint, default_options(Backend::Cpu))
    }

    fn cpu(size_hint: Option<f64>, opts: LoadOptions) -> ModelLoader {
        let mut buf = Vec::new();
        if let Some(n) = size_hint.filter(|n| n.is_finite() && *n > 0.0) {
            // Only a hint: one that memory cannot hold is ignored here (the header's length
            // is what counts, and is checked when it arrives).
            let _ = buf.try_reserve_exact(n.min(usize::MAX as f64) as usize);
        }
        ModelLoader {
            sink: Sink::Cpu,
            opts,
            reason: "the CPU path, as asked".into(),
            buf,
            received: 0,
            header_needs: 1,
            expected: None,
        }
    }

    /// A loader for the backend `options` ask for, opened before the file arrives so that the
    /// GPU path can stream it to the GPU: `{backend, context, gpuMemory, maxBuffer, profiles,
    /// sizeHint}`, `backend` `"auto"` (default: WebGPU when `navigator.gpu` gives an adapter and
    /// the model fits it, else the CPU path), `"gpu"` or `"cpu"`; `context`: KV cache positions
    /// (default 2048, capped at the model's training context); `gpuMemory`: the most GPU memory
    /// the model may take (bytes or `"1GiB"`; checked from the header before anything is
    /// created); `maxBuffer`: ask the device for buffers of at most this size (a phone's
    /// limits); `profiles`: tuned profiles as JSON text (from `Model.tune`), of which the GPU
    /// path takes the first made for its adapter by this kiln build (the others are passed
    /// over; the one taken is `profiles[i]` in `Model.profileUsed()`); `sizeHint`: the file's
    /// length if known. wasm32 only (native builds of this crate are for its tests and lints).
    #[cfg(target_arch = "wasm32")]
    pub async fn open(options: JsValue) -> Result<ModelLoader, JsValue> {
        let mut opts = default_options(Backend::Auto);
        let mut size_hint = None;
        for_each_option(
            "ModelLoader.open options",
            &options,
            &mut |key, v| match key {
                "backend" => {
                    opts.backend = v.as_string().and_then(|s| s.parse().ok()).ok_or_else(|| {
                        js_err("option `backend` must be \"auto\", \"gpu\" or \"cpu\"")
                    })?;
                    Ok(())
                }
                "context" => {
                    opts.context = context(&v)?;
                    Ok(())
                }
                "gpuMemory" => {
                    opts.gpu_memory = Some(size(key, &v)?);
                    Ok(())
                }
                "maxBuffer" => {
                    opts.gpu.max_buffer_bytes = Some(size(key, &v)?);
                    Ok(())
                }
                "profiles" => {
                    let list = v.dyn_ref::<js_sys::Array>().ok_or_else(|| {
                        js_err("option `profiles` must be an array of profile JSON strings")
                    })?;
                    for (i, text) in list.iter().enumerate() {
                        let text = text.as_string().ok_or_else(|| {
                            js_err(format!("option `profiles`: entry {i} is not a string"))
                        })?;
                        opts.gpu
                            .profiles
                            .texts
                            .push((format!("profiles[{i}]"), text));
                    }
                    Ok(())
                }
                "sizeHint" => {
                    size_hint = Some(
                        v.as_f64()
                            .filter(|n| n.is_finite() && *n >= 0.0)
                            .ok_or_else(|| {
                                js_err("option `sizeHint` must be the file's length in bytes")
                            })?,
                    );
                    Ok(())
                }
                _ => Err(js_err(format!(
                    "unknown ModelLoader.open option `{key}` (backend, context, gpuMemory, \
                 maxBuffer, profiles, sizeHint)"
                ))),
            },
        )?;
        if opts.backend != Backend::Cpu && !has_webgpu() {
            if opts.backend == Backend::Gpu {
                return Err(js_err(
                    "backend \"gpu\": this JavaScript engine has no WebGPU (navigator.gpu)",
                ));
            }
            // wgpu aborts instead of failing where there is no `navigator.gpu` (Node).
            return Ok(ModelLoader {
                reason: "auto: the CPU path, as this JavaScript engine has no WebGPU".into(),
                ..Self::cpu(size_hint, default_options(Backend::Cpu))
            });
        }
        let opened = kiln::generate::open_gpu(opts.backend, &opts.gpu)
            .await
            .map_err(js_err)?;
        Ok(match opened.gpu {
            Some(gpu) => ModelLoader {
                sink: Sink::GpuHeader(gpu),
                reason: opened.reason,
                ..Self::cpu(None, opts)
            },
            None => ModelLoader {
                reason: opened.reason,
                ..Self::cpu(size_hint, opts)
            },
        })
    }

    /// Takes the next chunk of the file.
    pub fn push(&mut self, chunk: &Uint8Array) -> Result<(), JsValue> {
        let n = chunk.length() as usize;
        if let Some(total) = self.expected
            && self.received + n > total
        {
            return Err(longer(total));
        }
        // A big chunk (a whole file handed over at once) in slices, so that the GPU path's
        // scratch stays small.
        let mut at = 0;
        while at < chunk.length() {
            let end = chunk.length().min(at.saturating_add(SLICE_BYTES));
            self.take(&chunk.subarray(at, end))?;
            at = end;
        }
        Ok(())
    }

    /// Takes the next slice of the file.
    fn take(&mut self, slice: &Uint8Array) -> Result<(), JsValue> {
        let n = slice.length() as usize;
        #[cfg(target_arch = "wasm32")]
        if let Sink::Gpu(stream) = &mut self.sink {
            // `buf` is the scratch slices pass through once the header is complete.
            self.buf.resize(n, 0);
            slice.copy_to(&mut self.buf);
            stream.write(&self.buf).map_err(js_err)?;
            self.received += n;
            return Ok(());
        }
        let at = self.buf.len();
        self.buf.resize(at + n, 0);
        slice.copy_to(&mut self.buf[at..]);
        self.received += n;
        if self.header_needs != 0 && self.buf.len() >= self.header_needs {
            self.parse_header()?;
        }
        Ok(())
    }

    /// Parses the header from the bytes so far. While it is incomplete the next attempt waits
    /// for at least twice as many bytes, so that a header arriving in many small chunks is
    /// parsed a logarithmic number of times, not once per chunk (each parse starts at byte 0).
    fn parse_header(&mut self) -> Result<(), JsValue> {
        match GgufHeader::parse_prefix(&self.buf).map_err(js_err)? {
            Parsed::NeedMoreBytes(need) => {
                let need = usize::try_from(need).unwrap_or(usize::MAX);
                self.header_needs = need.max(self.buf.len().saturating_mul(2));
            }
            Parsed::Complete(h) => self.header_complete(&h)?,
        }
        Ok(())
    }

    /// The header has arrived: the CPU path reserves the whole file, the GPU path creates the
    /// weight buffers and passes them the bytes received so far.
    fn header_complete(&mut self, h: &GgufHeader) -> Result<(), JsValue> {
        self.header_needs = 0;
        let end = usize::try_from(h.data_end())
            .map_err(|_| js_err("the GGUF file is larger than wasm32 memory can hold"))?;
        self.expected = Some(end);
        if self.received > end {
            return Err(longer(end));
        }
        match &self.sink {
            Sink::Cpu => self
                .buf
                .try_reserve_exact(end.saturating_sub(self.buf.len()))
                .map_err(|_| {
                    js_err(format!(
                        "the GGUF file is {end} bytes, more than this page can allocate for the \
                         CPU path (try the GPU path, which streams the file, or a smaller model)"
                    ))
                })?,
            #[cfg(target_arch = "wasm32")]
            Sink::GpuHeader(gpu) => {
                match kiln::generate::Model::gpu_stream_for(gpu, h, &self.opts, self.reason.clone())
                {
                    Ok(mut stream) => {
                        stream.write(&self.buf).map_err(js_err)?;
                        self.buf = Vec::new();
                        self.sink = Sink::Gpu(Box::new(stream));
                    }
                    Err(e) if self.opts.backend == Backend::Auto && e.does_not_fit() => {
                        // The whole file then comes to wasm memory, as on the CPU path.
                        self.reason = format!(
                            "auto: the CPU path, because the model does not fit the GPU: {e}"
                        );
                        self.sink = Sink::Cpu;
                        self.opts.backend = Backend::Cpu;
                        return self.header_complete(h);
                    }
                    Err(e) => return Err(js_err(e)),
                }
            }
            #[cfg(target_arch = "wasm32")]
            Sink::Gpu(_) => unreachable!("the header is parsed once"),
        }
        Ok(())
    }

    /// Bytes received so far.
    pub fn received(&self) -> f64 {
        self.received as f64
    }

    /// The file's length, once the header has arrived.
    pub fn expected(&self) -> Option<f64> {
        self.expected.map(|n| n as f64)
    }

    /// Builds the model once the whole file has arrived (an error that says what is missing
    /// otherwise). `options`: `{context}` (KV cache positions) for a loader made with `new`; a
    /// loader from [`ModelLoader::open`] took its options there.
    pub fn finish(mut self, options: &JsValue) -> Result<Model, JsValue> {
        // The header may be complete without having been parsed yet (see parse_header).
        if self.header_needs != 0 && !self.buf.is_empty() {
            self.parse_header()?;
        }
        let mut opts = self.opts;
        let cpu = matches!(self.sink, Sink::Cpu);
        for_each_option("finish options", options, &mut |key, v| match key {
            "context" if cpu => {
                opts.context = context(&v)?;
                Ok(())
            }
            "context" => Err(js_err(
                "option `context`: a GPU loader takes it in ModelLoader.open",
            )),
            _ => Err(js_err(format!("unknown finish option `{key}` (context)"))),
        })?;
        let inner = match self.sink {
            Sink::Cpu => {
                let file = GgufFile::from_bytes(self.buf).map_err(js_err)?;
                kiln::generate::Model::from_gguf(file, &opts, &mut |_, _| {})
                    .map_err(js_err)?
                    .with_backend_reason(self.reason)
            }
            #[cfg(target_arch = "wasm32")]
            Sink::GpuHeader(_) => {
                // The header never completed: say what it still needed.
                return Err(js_err(GgufHeader::parse(&self.buf).err().map_or_else(
                    || "the GGUF file is incomplete".into(),
                    |e| e.to_string(),
                )));
            }
            #[cfg(target_arch = "wasm32")]
            Sink::Gpu(stream) => stream.finish().map_err(js_err)?,
        };
        Ok(Model::new(inner))
    }
}

/// The error for more bytes than the header's `total`.
fn longer(total: usize) -> JsValue {
    js_err(GgufError::LongerThanHeader {
        file_len: total as u64,
    })
}

/// The load options of the web: one thread, 2048 positions, an f16 KV cache.
fn default_options(backend: Backend) -> LoadOptions {
    LoadOptions {
        backend,
        threads: 1,
        // A streamed model has no file to reload from: kiln.js loads it again.
        on_device_lost: OnDeviceLost::Fail,
        ..LoadOptions::default()
    }
}

/// A size option (`gpuMemory`, `maxBuffer`): bytes as a positive integer, or a string such as
/// `"1GiB"`.
#[cfg(target_arch = "wasm32")]
fn size(key: &str, v: &JsValue) -> Result<u64, JsValue> {
    let bytes = match v.as_string() {
        Some(text) => kiln::gpu::context::parse_bytes(&text),
        None => v
            .as_f64()
            .filter(|x| x.fract() == 0.0 && *x >= 0.0 && *x < 2f64.powi(64))
            .map(|x| x as u64),
    };
    bytes.filter(|&n| n > 0).ok_or_else(|| {
        js_err(format!(
            "option `{key}` must be a size: bytes as a positive integer, or a string such as \"1GiB\""
        ))
    })
}

/// A `context` option: a positive integer.
fn context(v: &JsValue) -> Result<u32, JsValue> {
    Ok(v.as_f64()
        .filter(|x| x.fract() == 0.0 && *x >= 1.0 && *x <= f64::from(u32::MAX))
        .ok_or_else(|| js_err("option `context` must be a positive integer"))? as u32)
}

/// Whether the global object has `navigator.gpu` (browsers with WebGPU, in a page or a worker).
#[cfg(target_arch = "wasm32")]
fn has_webgpu() -> bool {
    let global = js_sys::global();
    js_sys::Reflect::get(&global, &"navigator".into())
        .ok()
        .filter(|n| n.is_object())
        .and_then(|n| js_sys::Reflect::get(&n, &"gpu".into()).ok())
        .is_some_and(|g| g.is_object())
}
