//! A GGUF file fed in chunks: each chunk is copied once, straight from the JS `Uint8Array` into
//! the buffer the model will keep, and the buffer is sized to the whole file as soon as the
//! header says how long it is (or up front from a size hint such as `Content-Length`), so the
//! file never exists twice in wasm memory (no concatenation, no doubling of a growing `Vec`).

use js_sys::{Reflect, Uint8Array};
use kiln::generate::{Backend, LoadOptions};
use kiln::gguf::{GgufFile, GgufHeader, Parsed};
use kiln::gpu::GpuOptions;
use kiln::ops::attention::KvType;
use wasm_bindgen::prelude::*;

use crate::{Model, js_err};

/// Receives a GGUF file in chunks, then builds a [`Model`] from it.
#[wasm_bindgen]
#[derive(Debug)]
pub struct ModelLoader {
    buf: Vec<u8>,
    /// Bytes the header needs before it is worth parsing again (0 once parsed).
    header_needs: usize,
    /// The file's length as its header gives it (the end of the last tensor).
    expected: Option<usize>,
}

#[wasm_bindgen]
impl ModelLoader {
    /// `size_hint`: the file's length if known (e.g. from `Content-Length`), to allocate once.
    #[wasm_bindgen(constructor)]
    pub fn new(size_hint: Option<f64>) -> ModelLoader {
        let mut buf = Vec::new();
        if let Some(n) = size_hint.filter(|n| n.is_finite() && *n > 0.0) {
            buf.reserve_exact(n as usize);
        }
        ModelLoader {
            buf,
            header_needs: 1,
            expected: None,
        }
    }

    /// Appends the next chunk of the file.
    pub fn push(&mut self, chunk: &Uint8Array) -> Result<(), JsValue> {
        let at = self.buf.len();
        let n = chunk.length() as usize;
        if let Some(total) = self.expected
            && at + n > total
        {
            return Err(js_err(format!(
                "the GGUF file is longer than its header says ({total} bytes): is this the file \
                 that was asked for?"
            )));
        }
        self.buf.resize(at + n, 0);
        chunk.copy_to(&mut self.buf[at..]);
        if self.header_needs != 0 && self.buf.len() >= self.header_needs {
            match GgufHeader::parse_prefix(&self.buf).map_err(js_err)? {
                Parsed::NeedMoreBytes(need) => {
                    self.header_needs = usize::try_from(need).unwrap_or(usize::MAX);
                }
                Parsed::Complete(h) => {
                    self.header_needs = 0;
                    let end = h
                        .tensors()
                        .iter()
                        .map(|t| t.offset + t.n_bytes)
                        .max()
                        .unwrap_or(h.data_offset());
                    let end = usize::try_from(end).map_err(|_| {
                        js_err("the GGUF file is larger than wasm32 memory can hold")
                    })?;
                    self.expected = Some(end);
                    self.buf.reserve_exact(end.saturating_sub(self.buf.len()));
                }
            }
        }
        Ok(())
    }

    /// Bytes received so far.
    pub fn received(&self) -> f64 {
        self.buf.len() as f64
    }

    /// The file's length, once the header has arrived.
    pub fn expected(&self) -> Option<f64> {
        self.expected.map(|n| n as f64)
    }

    /// Parses the whole file and loads the model on the CPU path. `options`: `{context}` (KV
    /// cache positions, default 2048, capped at the model's training context).
    pub fn finish(self, options: &JsValue) -> Result<Model, JsValue> {
        let opts = load_options(options, Backend::Cpu)?;
        let file = GgufFile::from_bytes(self.buf).map_err(js_err)?;
        let inner =
            kiln::generate::Model::from_gguf(file, &opts, &mut |_, _| {}).map_err(js_err)?;
        Ok(Model::new(inner))
    }

    /// [`ModelLoader::finish`] as a Promise, which can open the GPU: `options`: `{context,
    /// backend}`, `backend` `"auto"` (default: WebGPU when `navigator.gpu` gives an adapter, else
    /// the CPU path), `"gpu"` or `"cpu"`. The weights are uploaded to GPU buffers from the loaded
    /// file's bytes once it is complete (those bytes are freed when the load ends). wasm32 only
    /// (native builds of this crate are for its tests and lints).
    #[cfg(target_arch = "wasm32")]
    #[wasm_bindgen(js_name = finishAsync)]
    pub async fn finish_async(self, options: JsValue) -> Result<Model, JsValue> {
        let mut opts = load_options(&options, Backend::Auto)?;
        if opts.backend != Backend::Cpu && !has_webgpu() {
            if opts.backend == Backend::Gpu {
                return Err(js_err(
                    "backend \"gpu\": this JavaScript engine has no WebGPU (navigator.gpu)",
                ));
            }
            // wgpu aborts instead of failing where there is no `navigator.gpu` (Node).
            opts.backend = Backend::Cpu;
        }
        let file = GgufFile::from_bytes(self.buf).map_err(js_err)?;
        let inner = kiln::generate::Model::from_gguf_async(file, &opts, &mut |_, _| {})
            .await
            .map_err(js_err)?;
        Ok(Model::new(inner))
    }
}

/// Load options from `{context, backend}` (`backend` only where `default` is not the CPU).
fn load_options(options: &JsValue, default: Backend) -> Result<LoadOptions, JsValue> {
    let mut opts = LoadOptions {
        backend: default,
        context: 2048,
        threads: 1,
        gpu: GpuOptions::default(),
        kv_cache: KvType::default(),
    };
    if options.is_object() {
        let v = Reflect::get(options, &"context".into())?;
        if !v.is_undefined() {
            opts.context = v
                .as_f64()
                .filter(|x| x.fract() == 0.0 && *x >= 1.0 && *x <= f64::from(u32::MAX))
                .ok_or_else(|| js_err("option `context` must be a positive integer"))?
                as u32;
        }
        let v = Reflect::get(options, &"backend".into())?;
        if !v.is_undefined() {
            if default == Backend::Cpu {
                return Err(js_err(
                    "option `backend`: finish() loads the CPU path; use finishAsync()",
                ));
            }
            opts.backend = v
                .as_string()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| js_err("option `backend` must be \"auto\", \"gpu\" or \"cpu\""))?;
        }
    }
    Ok(opts)
}

/// Whether the global object has `navigator.gpu` (browsers with WebGPU, in a page or a worker).
#[cfg(target_arch = "wasm32")]
fn has_webgpu() -> bool {
    let global = js_sys::global();
    Reflect::get(&global, &"navigator".into())
        .ok()
        .filter(|n| n.is_object())
        .and_then(|n| Reflect::get(&n, &"gpu".into()).ok())
        .is_some_and(|g| g.is_object())
}
