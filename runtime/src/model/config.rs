//! A model's hyperparameters and tensor layout, read from GGUF metadata alone.

use crate::error::{Error, Result};
use crate::gguf::{GgmlType, GgufFile, GgufHeader, TensorInfo};
use crate::ops::gemv::WType;
use crate::ops::rope::RopeLayout;

/// The architectures kiln runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// SmolLM2, TinyLlama, Llama 3.x (with `rope_freqs.weight`).
    Llama,
    /// Qwen2 / Qwen2.5: q/k/v biases, NeoX RoPE.
    Qwen2,
    /// Qwen3: per-head q/k RMSNorm and no biases, NeoX RoPE, head size from `key_length`.
    Qwen3,
    /// Gemma 3: q/k norms, post-norms, GeGLU, sliding-window and global layers, scaled embeddings.
    Gemma3,
}

/// Everything the forward pass needs to know about a model.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub arch: Arch,
    pub n_layer: u32,
    pub d_model: u32,
    pub n_head: u32,
    pub n_kv_head: u32,
    pub head_dim: u32,
    pub d_ff: u32,
    pub vocab: u32,
    pub eps: f32,
    pub rope_layout: RopeLayout,
    pub rope_dims: u32,
    pub rope_base: f32,
    /// RoPE base of sliding-window layers (Gemma 3 uses 10 000 there).
    pub rope_base_local: f32,
    /// Positions are multiplied by this (linear RoPE scaling: 1 / `rope.scaling.factor`).
    pub rope_freq_scale: f32,
    /// The model has `rope_freqs.weight`: `rope_dims / 2` divisors of the rotation frequencies
    /// (Llama 3.x's RoPE scaling, as llama.cpp's converter writes it).
    pub rope_freqs: bool,
    /// Sliding window of local layers (0 = none).
    pub window: u32,
    /// Every `swa_pattern`-th layer is global; the others use the window (Gemma 3: 6).
    pub swa_pattern: u32,
    /// Context length the model was trained for.
    pub n_ctx_train: u32,
    pub embed_scale: f32,
    pub attn_scale: f32,
    pub attn_softcap: f32,
    pub final_softcap: f32,
}

impl Config {
    /// Reads the configuration of a supported architecture.
    pub fn from_gguf(file: &GgufFile) -> Result<Config> {
        Self::from_header(file.header())
    }

    /// [`Config::from_gguf`] from the header alone (e.g. one streamed with
    /// [`GgufHeader::parse_prefix`]).
    pub fn from_header(file: &GgufHeader) -> Result<Config> {
        let arch_name = file.architecture()?.to_string();
        let arch = match arch_name.as_str() {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "gemma3" => Arch::Gemma3,
            other => {
                return Err(Error::Unsupported(format!(
                    "architecture `{other}`; kiln runs llama, qwen2, qwen3 and gemma3 models"
                )));
            }
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let u = |k: &str| file.get_u32(&key(k));
        // llama.cpp applies `rope.scaling.factor` as linear scaling under every type; YaRN and
        // LongRoPE change the frequencies further, which kiln does not.
        match file.get_str(&key("rope.scaling.type")) {
            Err(_) | Ok("none" | "linear") => {}
            Ok(other) => {
                return Err(Error::Unsupported(format!(
                    "RoPE scaling `{other}` (metadata `{}`); kiln implements linear scaling \
                     and Llama 3's `rope_freqs.weight`",
                    key("rope.scaling.type")
                )));
            }
        }
        let n_head = u("attention.head_count")?;
        let d_model = u("embedding_length")?;
        if n_head == 0 || d_model == 0 {
            return Err(Error::Unsupported(
                "zero heads or zero embedding length".into(),
            ));
        }
        let head_dim = u("attention.key_length").unwrap_or(d_model / n_head);
        let embd = file
            .tensor("token_embd.weight")
            .ok_or_else(|| missing("token_embd.weight"))?;
        let vocab = u32::try_from(*embd.dims.get(1).unwrap_or(&0))
            .map_err(|_| Error::Unsupported("vocabulary over 2^32".into()))?;
        let gemma = arch == Arch::Gemma3;
        let cfg = Config {
            arch,
            n_layer: u("block_count")?,
            d_model,
            n_head,
            n_kv_head: u("attention.head_count_kv").unwrap_or(n_head),
            head_dim,
            d_ff: u("feed_forward_length")?,
            vocab,
            eps: file.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_layout: if arch == Arch::Llama {
                RopeLayout::Norm
            } else {
                RopeLayout::Neox
            },
            rope_dims: u("rope.dimension_count").unwrap_or(head_dim),
            rope_base: file.get_f32(&key("rope.freq_base")).unwrap_or(10_000.0),
            rope_base_local: if gemma { 10_000.0 } else { 0.0 },
            rope_freq_scale: file
                .get_f32(&key("rope.scaling.factor"))
                .ok()
                .filter(|f| *f > 0.0)
                .map_or(1.0, |f| 1.0 / f),
            rope_freqs: file.tensor(ROPE_FREQS).is_some(),
            window: if gemma {
                u("attention.sliding_window").unwrap_or(0)
            } else {
                0
            },
            swa_pattern: if gemma { 6 } else { 0 },
            n_ctx_train: u("context_length").unwrap_or(2048),
            embed_scale: if gemma { (d_model as f32).sqrt() } else { 1.0 },
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            attn_softcap: file.get_f32(&key("attn_logit_softcapping")).unwrap_or(0.0),
            final_softcap: file.get_f32(&key("final_logit_softcapping")).unwrap_or(0.0),
        };
        cfg.check()?;
        cfg.check_tensors(file)?;
        Ok(cfg)
    }

    fn check(&self) -> Result<()> {
        // Bounds far above any model kiln is for, so that products of them cannot overflow
        // and nothing is sized from a lying field before the tensors confirm it.
        for (key, value, most) in [
            ("block_count", self.n_layer, 1 << 12),
            ("attention.head_count", self.n_head, 1 << 12),
            ("attention.head_count_kv", self.n_kv_head, 1 << 12),
            ("embedding_length", self.d_model, 1 << 20),
            ("feed_forward_length", self.d_ff, 1 << 22),
        ] {
            if value > most {
                return Err(Error::Unsupported(format!(
                    "metadata `{key}` is {value}, above the {most} kiln takes: the file is \
                     corrupt or not a small language model"
                )));
            }
        }
        let max_head = crate::ops::attention::MAX_HEAD_DIM;
        let problem = if self.n_layer == 0 {
            "metadata `block_count` is 0; a model has at least one layer".to_string()
        } else if self.n_kv_head == 0 {
            "metadata `attention.head_count_kv` is 0; a model has at least one".to_string()
        } else if !self.n_head.is_multiple_of(self.n_kv_head) {
            format!(
                "metadata `attention.head_count` is {}, not a multiple of \
                 `attention.head_count_kv` {}",
                self.n_head, self.n_kv_head
            )
        } else if !self.head_dim.is_multiple_of(2) || self.head_dim > max_head {
            format!(
                "the head size (metadata `attention.key_length`, else embedding_length / \
                 head_count) is {}; kiln's kernels take an even head size of at most {max_head}",
                self.head_dim
            )
        } else if self.rope_dims > self.head_dim {
            format!(
                "metadata `rope.dimension_count` is {}, above the head size {}",
                self.rope_dims, self.head_dim
            )
        } else if !self.d_model.is_multiple_of(32) {
            format!(
                "metadata `embedding_length` is {}; kiln takes a multiple of 32",
                self.d_model
            )
        } else if self.vocab == 0 {
            "tensor `token_embd.weight` has no rows: a vocabulary of 0 tokens".to_string()
        } else {
            return Ok(());
        };
        Err(Error::Unsupported(format!(
            "a shape kiln's kernels cannot take: {problem}"
        )))
    }

    /// Whether layer `il` attends through the sliding window.
    pub fn is_local(&self, il: u32) -> bool {
        self.window > 0 && self.swa_pattern > 0 && !(il + 1).is_multiple_of(self.swa_pattern)
    }

    /// Checks every weight matrix the model uses against the shape the metadata implies
    /// (`[row length, rows]` as GGUF stores it), so that no loader slices or allocates by a
    /// field the tensors contradict.
    fn check_tensors(&self, header: &GgufHeader) -> Result<()> {
        let check = |name: &str, want: Shape| -> Result<()> {
            let t = header.tensor(name).ok_or_else(|| missing(name))?;
            if t.dims[..] != want.dims {
                return Err(Error::TensorShape {
                    tensor: name.into(),
                    found: t.dims.clone(),
                    expected: want.dims.to_vec(),
                    from: want.from,
                });
            }
            Ok(())
        };
        let table = Shape {
            dims: [u64::from(self.d_model), u64::from(self.vocab)],
            from: "embedding_length x vocabulary",
        };
        check("token_embd.weight", table)?;
        if header.tensor("output.weight").is_some() {
            check("output.weight", table)?;
        }
        if self.rope_freqs {
            vector_info(header, ROPE_FREQS, self.rope_dims / 2)?;
        }
        for il in 0..self.n_layer {
            LayerWeights::load(self, il, check, |_, _| Ok(()))?;
        }
        Ok(())
    }

    /// Fails (for `op`) on the first of `ids` outside the vocabulary.
    pub fn check_tokens(&self, op: &'static str, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&t| t >= self.vocab) {
            Some(bad) => Err(Error::Shape {
                op,
                detail: format!("token id {bad} is outside the vocabulary of {}", self.vocab),
            }),
            None => Ok(()),
        }
    }

    pub fn q_dim(&self) -> u32 {
        self.n_head * self.head_dim
    }

    pub fn kv_dim(&self) -> u32 {
        self.n_kv_head * self.head_dim
    }
}

/// The tensor of Llama 3.x's per-pair RoPE frequency divisors.
pub const ROPE_FREQS: &str = "rope_freqs.weight";

fn missing(name: &str) -> Error {
    Error::Unsupported(format!("the model has no tensor `{name}`"))
}

/// The kernel format of a GGUF tensor type.
pub fn wtype(t: &TensorInfo) -> Result<WType> {
    Ok(match t.ty {
        GgmlType::Q4_0 => WType::Q4_0,
        GgmlType::Q4_1 => WType::Q4_1,
        GgmlType::Q5_0 => WType::Q5_0,
        GgmlType::Q8_0 => WType::Q8_0,
        GgmlType::Q4_K => WType::Q4K,
        GgmlType::Q6_K => WType::Q6K,
        GgmlType::F16 => WType::F16,
        GgmlType::F32 => WType::F32,
        other => {
            return Err(Error::Unsupported(format!(
                "tensor `{}` is stored as {other:?}, which kiln has no kernel for \
                 (supported: F32, F16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K)",
                t.name
            )));
        }
    })
}

/// A matrix tensor `(rows, k)` and its format, checked.
pub fn matrix<'a>(header: &'a GgufHeader, name: &str) -> Result<(&'a TensorInfo, WType, u32, u32)> {
    let t = header.tensor(name).ok_or_else(|| missing(name))?;
    let (k, rows) = match t.dims[..] {
        [k, rows] => (k, rows),
        [k] => (k, 1),
        _ => {
            return Err(Error::Unsupported(format!(
                "tensor `{name}` has shape {:?}, expected a matrix",
                t.dims
            )));
        }
    };
    let k = u32::try_from(k).map_err(|_| Error::Unsupported(format!("`{name}` is too wide")))?;
    let rows =
        u32::try_from(rows).map_err(|_| Error::Unsupported(format!("`{name}` is too tall")))?;
    Ok((t, wtype(t)?, rows, k))
}

/// A vector tensor as f32 (norm weights, biases), checked against its expected length.
pub fn vector(file: &GgufFile, name: &str, len: u32) -> Result<Vec<f32>> {
    let t = vector_info(file.header(), name, len)?;
    Ok(vector_values(file.tensor_data(t)))
}

/// Scans every weight the model uses (`cfg` checked against the file already) for NaN and
/// infinities: one pass over the tensors' bytes, each block's scales or each float (a
/// quantized block with finite scales dequantizes to finite values).
pub fn check_weights(file: &GgufFile, cfg: &Config) -> Result<()> {
    let check = |name: &str| -> Result<()> {
        let t = file.tensor(name).ok_or_else(|| missing(name))?;
        // A type kiln has no kernel for is the loaders' to refuse, with their message.
        match kiln_cpu::QType::from_ggml_id(t.ty as u32) {
            Some(qtype) => check_finite(name, qtype, file.tensor_data(t)),
            None => Ok(()),
        }
    };
    check("token_embd.weight")?;
    check("output_norm.weight")?;
    if cfg.rope_freqs {
        check(ROPE_FREQS)?;
    }
    if file.tensor("output.weight").is_some() {
        check("output.weight")?;
    }
    for il in 0..cfg.n_layer {
        LayerWeights::load(cfg, il, |name, _| check(name), |name, _| check(name))?;
    }
    Ok(())
}

/// Fails with the first NaN or infinite weight of tensor `name` (`data`: whole blocks of
/// `qtype`).
pub fn check_finite(name: &str, qtype: kiln_cpu::QType, data: &[u8]) -> Result<()> {
    match qtype.first_non_finite(data) {
        Some(index) => Err(Error::NonFiniteWeight {
            tensor: name.to_string(),
            index: index as u64,
        }),
        None => Ok(()),
    }
}

/// The description of the vector tensor `name` (see [`vector`]), checked: `len` f32 values.
pub fn vector_info<'a>(header: &'a GgufHeader, name: &str, len: u32) -> Result<&'a TensorInfo> {
    let t = header.tensor(name).ok_or_else(|| missing(name))?;
    if t.n_elements() != u64::from(len) || t.ty != GgmlType::F32 {
        return Err(Error::Unsupported(format!(
            "tensor `{name}` is {:?} {:?}, expected {len} f32 values",
            t.ty, t.dims
        )));
    }
    Ok(t)
}

/// The values of a vector tensor checked by [`vector_info`], from its data bytes.
pub fn vector_values(data: &[u8]) -> Vec<f32> {
    bytemuck::pod_collect_to_vec(data)
}

/// One layer's weights as GGUF names them, for any backend: `M` is a matrix, `V` a vector (norm
/// weights, biases). Which tensors exist depends on the architecture.
#[derive(Debug)]
pub struct LayerWeights<M, V> {
    pub attn_norm: V,
    pub q: M,
    pub k: M,
    pub v: M,
    pub o: M,
    /// q, k, v biases (Qwen2).
    pub bias: Option<[V; 3]>,
    /// Per-head q and k RMSNorm weights (Gemma 3, Qwen3).
    pub qk_norm: Option<[V; 2]>,
    /// Norms of the attention and FFN outputs (Gemma 3).
    pub post_attn_norm: Option<V>,
    pub ffn_norm: V,
    pub gate: M,
    pub up: M,
    pub down: M,
    pub post_ffn_norm: Option<V>,
}

/// A weight matrix's shape as the metadata implies it (`[row length, rows]`, as GGUF stores
/// it), and the metadata it comes from, for errors.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub dims: [u64; 2],
    pub from: &'static str,
}

impl<M, V> LayerWeights<M, V> {
    /// Loads layer `il` with the backend's loaders: `mat(name, shape the metadata implies)` and
    /// `vec(name, len)`. [`Config::from_header`] has checked every matrix against its shape.
    pub fn load(
        cfg: &Config,
        il: u32,
        mut mat: impl FnMut(&str, Shape) -> Result<M>,
        mut vec: impl FnMut(&str, u32) -> Result<V>,
    ) -> Result<Self> {
        let n = |s: &str| format!("blk.{il}.{s}");
        let qwen = cfg.arch == Arch::Qwen2;
        let gemma = cfg.arch == Arch::Gemma3;
        let qk_norm = gemma || cfg.arch == Arch::Qwen3;
        let (d, q, kv, ff) = (
            u64::from(cfg.d_model),
            u64::from(cfg.q_dim()),
            u64::from(cfg.kv_dim()),
            u64::from(cfg.d_ff),
        );
        let shape = |dims, from| Shape { dims, from };
        let kv_shape = shape([d, kv], "embedding_length x head_count_kv * key_length");
        let ffn_in = shape([d, ff], "embedding_length x feed_forward_length");
        Ok(LayerWeights {
            attn_norm: vec(&n("attn_norm.weight"), cfg.d_model)?,
            q: mat(
                &n("attn_q.weight"),
                shape([d, q], "embedding_length x head_count * key_length"),
            )?,
            k: mat(&n("attn_k.weight"), kv_shape)?,
            v: mat(&n("attn_v.weight"), kv_shape)?,
            o: mat(
                &n("attn_output.weight"),
                shape([q, d], "head_count * key_length x embedding_length"),
            )?,
            bias: if qwen {
                Some([
                    vec(&n("attn_q.bias"), cfg.q_dim())?,
                    vec(&n("attn_k.bias"), cfg.kv_dim())?,
                    vec(&n("attn_v.bias"), cfg.kv_dim())?,
                ])
            } else {
                None
            },
            qk_norm: if qk_norm {
                Some([
                    vec(&n("attn_q_norm.weight"), cfg.head_dim)?,
                    vec(&n("attn_k_norm.weight"), cfg.head_dim)?,
                ])
            } else {
                None
            },
            post_attn_norm: if gemma {
                Some(vec(&n("post_attention_norm.weight"), cfg.d_model)?)
            } else {
                None
            },
            ffn_norm: vec(&n("ffn_norm.weight"), cfg.d_model)?,
            gate: mat(&n("ffn_gate.weight"), ffn_in)?,
            up: mat(&n("ffn_up.weight"), ffn_in)?,
            down: mat(
                &n("ffn_down.weight"),
                shape([ff, d], "feed_forward_length x embedding_length"),
            )?,
            post_ffn_norm: if gemma {
                Some(vec(&n("post_ffw_norm.weight"), cfg.d_model)?)
            } else {
                None
            },
        })
    }

    /// Tensors per layer of `arch`.
    pub fn count(arch: Arch) -> usize {
        match arch {
            Arch::Llama => 9,
            Arch::Qwen2 => 12,
            Arch::Qwen3 => 11,
            Arch::Gemma3 => 15,
        }
    }
}
