//! GGUF files: the header (metadata and tensor infos) and the tensor data.
//!
//! Reads GGUF v2 and v3, little-endian, every metadata value type including nested arrays.
//! The file is untrusted input: every count and length is checked against the bytes that remain
//! before anything is allocated, nesting is bounded, tensor sizes are computed with overflow
//! checks, and every tensor's data must lie inside the file. Bad input gives a [`GgufError`]
//! that says what is wrong, never a panic.
//!
//! - [`GgufFile::open`] maps a file (native), [`GgufFile::from_bytes`] takes owned bytes (wasm).
//! - [`GgufHeader::parse_prefix`] parses from the first bytes of a file and says how many more it
//!   needs, so a browser can fetch the header first and then stream each tensor.
//! - [`GgufWriter`] writes GGUF v3 files (tests, tiny random-weight models).

mod types;
mod value;
mod writer;

use std::collections::HashMap;

pub use types::GgmlType;
pub use value::{Array, Value, ValueType};
pub use writer::GgufWriter;

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Tensor data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u32 = 32;
/// Deepest nesting of arrays inside arrays that the reader accepts.
pub const MAX_ARRAY_DEPTH: usize = 8;
/// Most dimensions a ggml tensor has.
pub const MAX_DIMS: u32 = 4;

const REINSTALL: &str = "re-download it (scripts/install-models.sh all)";

/// What can be wrong with a GGUF file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with `GGUF`.
    #[error(
        "not a GGUF file: it starts with {found:02x?}, not \"GGUF\"; check the path, or convert the \
         model with llama.cpp's convert_hf_to_gguf.py"
    )]
    BadMagic { found: [u8; 4] },
    /// A version this reader does not handle.
    #[error(
        "GGUF version {version} is not supported (kiln reads versions 2 and 3); convert the model \
         again with a current llama.cpp"
    )]
    UnsupportedVersion { version: u32 },
    /// A big-endian GGUF file.
    #[error("this GGUF file is big-endian; kiln reads little-endian files only: convert it again")]
    BigEndian,
    /// The bytes end before the header says they should.
    #[error(
        "file is truncated at byte {len} (expected at least {needed} while reading {what}): \
         the file is cut short or its header is corrupt; {REINSTALL}"
    )]
    Truncated { len: u64, needed: u64, what: String },
    /// A string is not UTF-8.
    #[error("{what} at byte {at} is not valid UTF-8: the file is corrupt; {REINSTALL}")]
    InvalidUtf8 { what: String, at: u64 },
    /// A metadata value type id that GGUF does not define.
    #[error(
        "metadata key `{key}` has unknown value type id {id}: the file is corrupt or newer than kiln"
    )]
    UnknownValueType { key: String, id: u32 },
    /// A bool that is neither 0 nor 1.
    #[error("metadata key `{key}` holds a bool byte {byte} (must be 0 or 1): the file is corrupt")]
    InvalidBool { key: String, byte: u8 },
    /// Arrays nested too deep.
    #[error("metadata key `{key}` nests arrays deeper than {max} levels: the file is corrupt")]
    NestingTooDeep { key: String, max: usize },
    /// A metadata key appears twice.
    #[error("metadata key `{key}` appears twice: the file is corrupt; {REINSTALL}")]
    DuplicateKey { key: String },
    /// `general.alignment` is not a power of two `u32`.
    #[error("general.alignment is {value}; it must be a u32 power of two (GGUF's default is 32)")]
    BadAlignment { value: String },
    /// A tensor with more dimensions than ggml has.
    #[error("tensor `{tensor}` has {n_dims} dimensions; ggml tensors have at most {MAX_DIMS}")]
    TooManyDims { tensor: String, n_dims: u32 },
    /// A tensor type id that ggml does not define.
    #[error(
        "tensor `{tensor}` has unknown ggml type id {id}: the file is corrupt or uses a type newer \
         than kiln; re-quantize it to a known type (e.g. Q4_K_M)"
    )]
    UnknownGgmlType { tensor: String, id: u32 },
    /// A row length that is not a whole number of blocks.
    #[error("a {ty} row of {n} elements is not a whole number of {block}-element blocks")]
    RowNotBlockAligned {
        ty: &'static str,
        n: u64,
        block: u64,
    },
    /// A size that does not fit in 64 bits.
    #[error("size of {what} overflows 64 bits: the file is corrupt")]
    SizeOverflow { what: String },
    /// A tensor's shape is not valid for its type.
    #[error("tensor `{tensor}`: {detail}")]
    BadTensor { tensor: String, detail: String },
    /// A tensor info with an empty name (e.g. padding read as a tensor by a lying count).
    #[error("tensor {index} has an empty name: the file is corrupt (is its tensor count right?)")]
    EmptyTensorName { index: u64 },
    /// A tensor's data offset is not aligned.
    #[error(
        "tensor `{tensor}` starts at data offset {offset}, which is not a multiple of the \
         alignment {alignment}: the file is corrupt"
    )]
    TensorMisaligned {
        tensor: String,
        offset: u64,
        alignment: u32,
    },
    /// A tensor's data lies (partly) outside the file.
    #[error(
        "tensor `{tensor}` occupies bytes {start}..{end} but the file has {file_len} bytes: the \
         file is truncated; {REINSTALL}"
    )]
    TensorOutOfRange {
        tensor: String,
        start: u64,
        end: u64,
        file_len: u64,
    },
    /// More bytes arrived than the header accounts for (a file streamed in chunks).
    #[error(
        "the GGUF file is longer than its header says ({file_len} bytes): is this the file that \
         was asked for?"
    )]
    LongerThanHeader { file_len: u64 },
    /// Two tensors share a name.
    #[error("tensor `{name}` appears twice: the file is corrupt; {REINSTALL}")]
    DuplicateTensor { name: String },
    /// A metadata key the caller needs is absent.
    #[error("metadata key `{key}` is missing: the file is not a complete model for this use")]
    MissingKey { key: String },
    /// A metadata value has another type than the caller needs.
    #[error("metadata key `{key}` is {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
    /// An integer metadata value does not fit the type the caller needs.
    #[error("metadata key `{key}` = {value} does not fit in {expected}")]
    OutOfRange {
        key: String,
        value: String,
        expected: &'static str,
    },
    /// Tensor data handed to the writer does not match its shape and type.
    #[error(
        "tensor `{tensor}`: {len} data bytes given, {expected} expected for its shape and type"
    )]
    DataSize {
        tensor: String,
        len: u64,
        expected: u64,
    },
}

/// One tensor's description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Shape in ggml order: `dims[0]` is the contiguous row length.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Bytes of data.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements (the product of the dims).
    pub fn n_elements(&self) -> u64 {
        // Checked when the header was parsed or the tensor added to a writer.
        self.dims.iter().product()
    }
}

/// Result of [`GgufHeader::parse_prefix`].
#[derive(Debug)]
pub enum Parsed {
    /// The prefix held the whole header.
    Complete(GgufHeader),
    /// The prefix is too short: at least this many bytes (from the start of the file) are needed.
    /// Fetch more (e.g. twice as many) and parse again. If this exceeds the file's size, the file
    /// is truncated or corrupt.
    NeedMoreBytes(u64),
}

/// Everything before the tensor data: version, metadata, tensor infos, data offset.
#[derive(Clone, Debug)]
pub struct GgufHeader {
    version: u32,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u32,
    data_offset: u64,
}

/// A cursor over untrusted bytes. Short reads report how many bytes would be needed.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn truncated(&self, needed: u64, what: &str) -> GgufError {
        GgufError::Truncated {
            len: self.buf.len() as u64,
            needed,
            what: what.to_string(),
        }
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(self.truncated((self.pos as u64).saturating_add(n), what));
        }
        let n = n as usize; // n <= remaining, which is a usize
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Checks that `count` items of at least `min_size` bytes each can still follow.
    fn check_count(&self, count: u64, min_size: u64, what: &str) -> Result<usize, GgufError> {
        let need = count.saturating_mul(min_size);
        if need > self.remaining() {
            return Err(self.truncated((self.pos as u64).saturating_add(need), what));
        }
        // count * min_size <= remaining, a usize, and min_size >= 1.
        Ok(count as usize)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let len = self.u64(&what())?;
        let at = self.pos as u64;
        let bytes = self.take(len, &what())?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8 { what: what(), at })
    }

    /// A string value: bytes that are not UTF-8 become U+FFFD, as llama.cpp loads such files
    /// (a vocabulary with one broken token); keys and tensor names must be UTF-8.
    fn text(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let len = self.u64(&what())?;
        let bytes = self.take(len, &what())?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn value(&mut self, key: &str, ty: ValueType, depth: usize) -> Result<Value, GgufError> {
        let what = || format!("the value of `{key}`");
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(&what())?[0]),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array(&what())?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(&what())?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(&what())?)),
            ValueType::U32 => Value::U32(self.u32(&what())?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(&what())?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(&what())?)),
            ValueType::U64 => Value::U64(self.u64(&what())?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(&what())?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(&what())?)),
            ValueType::Bool => Value::Bool(self.bool(key)?),
            ValueType::String => Value::String(self.text(&what)?),
            ValueType::Array => Value::Array(self.array_value(key, depth + 1)?),
        })
    }

    fn bool(&mut self, key: &str) -> Result<bool, GgufError> {
        match self.array::<1>(&format!("the value of `{key}`"))?[0] {
            0 => Ok(false),
            1 => Ok(true),
            byte => Err(GgufError::InvalidBool {
                key: key.to_string(),
                byte,
            }),
        }
    }

    fn array_value(&mut self, key: &str, depth: usize) -> Result<Array, GgufError> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(GgufError::NestingTooDeep {
                key: key.to_string(),
                max: MAX_ARRAY_DEPTH,
            });
        }
        let what = format!("the array `{key}`");
        let id = self.u32(&what)?;
        let ty = ValueType::from_id(id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.to_string(),
            id,
        })?;
        let count = self.u64(&what)?;
        let n = self.check_count(count, ty.min_size(), &what)?;
        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                const SIZE: usize = std::mem::size_of::<$t>();
                let bytes = self.take((n * SIZE) as u64, &what)?;
                Array::$variant(
                    bytes
                        .chunks_exact(SIZE)
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk of SIZE bytes")))
                        .collect(),
                )
            }};
        }
        Ok(match ty {
            ValueType::U8 => Array::U8(self.take(n as u64, &what)?.to_vec()),
            ValueType::I8 => fixed!(I8, i8),
            ValueType::U16 => fixed!(U16, u16),
            ValueType::I16 => fixed!(I16, i16),
            ValueType::U32 => fixed!(U32, u32),
            ValueType::I32 => fixed!(I32, i32),
            ValueType::F32 => fixed!(F32, f32),
            ValueType::U64 => fixed!(U64, u64),
            ValueType::I64 => fixed!(I64, i64),
            ValueType::F64 => fixed!(F64, f64),
            ValueType::Bool => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.bool(key)?);
                }
                Array::Bool(v)
            }
            ValueType::String => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.text(&|| format!("element {i} of `{key}`"))?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.array_value(key, depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }
}

impl GgufHeader {
    /// Parses the header from the first bytes of a file, or says how many bytes are needed.
    ///
    /// Tensor data ranges are not checked against the file size here (the prefix does not say
    /// it); call [`GgufHeader::check_file_len`] once the size is known.
    pub fn parse_prefix(prefix: &[u8]) -> Result<Parsed, GgufError> {
        match Self::parse_inner(prefix) {
            Ok(h) => Ok(Parsed::Complete(h)),
            Err(GgufError::Truncated { needed, .. }) => Ok(Parsed::NeedMoreBytes(needed)),
            Err(e) => Err(e),
        }
    }

    /// Parses the header of a whole file and checks that every tensor lies inside it.
    pub fn parse(file: &[u8]) -> Result<GgufHeader, GgufError> {
        let h = Self::parse_inner(file)?;
        h.check_file_len(file.len() as u64)?;
        Ok(h)
    }

    fn parse_inner(buf: &[u8]) -> Result<GgufHeader, GgufError> {
        let mut r = Reader { buf, pos: 0 };
        let magic: [u8; 4] = r.array("the magic")?;
        if magic != MAGIC {
            return Err(GgufError::BadMagic { found: magic });
        }
        let version = r.u32("the version")?;
        if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            return Err(GgufError::BigEndian);
        }
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion { version });
        }
        let tensor_count = r.u64("the tensor count")?;
        let kv_count = r.u64("the metadata count")?;

        // Each key/value takes at least 8 (key length) + 4 (type) + 1 bytes.
        let n_kv = r.check_count(kv_count, 13, "the metadata")?;
        let mut metadata = Vec::with_capacity(n_kv);
        let mut key_index = HashMap::with_capacity(n_kv);
        for i in 0..n_kv {
            let key = r.string(&|| format!("metadata key {i}"))?;
            let id = r.u32(&format!("the type of `{key}`"))?;
            let ty = ValueType::from_id(id).ok_or_else(|| GgufError::UnknownValueType {
                key: key.clone(),
                id,
            })?;
            let value = r.value(&key, ty, 0)?;
            if key_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::DuplicateKey { key });
            }
            metadata.push((key, value));
        }

        let alignment = match key_index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if a.is_power_of_two() => *a,
            Some(v) => {
                return Err(GgufError::BadAlignment {
                    value: format!("{v:?}"),
                });
            }
        };

        // Each tensor info takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset).
        let n_tensors = r.check_count(tensor_count, 24, "the tensor infos")?;
        let mut infos = Vec::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let name = r.string(&|| format!("the name of tensor {i}"))?;
            if name.is_empty() {
                return Err(GgufError::EmptyTensorName { index: i as u64 });
            }
            let what = format!("tensor `{name}`");
            let n_dims = r.u32(&what)?;
            if n_dims > MAX_DIMS {
                return Err(GgufError::TooManyDims {
                    tensor: name,
                    n_dims,
                });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64(&what)?);
            }
            let type_id = r.u32(&what)?;
            let rel_offset = r.u64(&what)?;
            infos.push((name, dims, type_id, rel_offset));
        }
        let data_offset =
            align_up(r.pos as u64, alignment.into()).ok_or_else(|| GgufError::SizeOverflow {
                what: "the data section offset".into(),
            })?;

        let mut tensors = Vec::with_capacity(infos.len());
        let mut tensor_index = HashMap::with_capacity(infos.len());
        for (name, dims, type_id, rel_offset) in infos {
            let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownGgmlType {
                tensor: name.clone(),
                id: type_id,
            })?;
            let n_bytes = tensor_bytes(&name, &dims, ty)?;
            if !rel_offset.is_multiple_of(u64::from(alignment)) {
                return Err(GgufError::TensorMisaligned {
                    tensor: name,
                    offset: rel_offset,
                    alignment,
                });
            }
            let offset =
                data_offset
                    .checked_add(rel_offset)
                    .ok_or_else(|| GgufError::SizeOverflow {
                        what: format!("the offset of tensor `{name}`"),
                    })?;
            offset
                .checked_add(n_bytes)
                .ok_or_else(|| GgufError::SizeOverflow {
                    what: format!("the end of tensor `{name}`"),
                })?;
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(GgufError::DuplicateTensor { name });
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
                n_bytes,
            });
        }
        // Each byte of data belongs to one tensor at most: a streaming loader writes every
        // byte once, into the one buffer it belongs to.
        let mut by_start: Vec<&TensorInfo> = tensors.iter().collect();
        by_start.sort_by_key(|t| t.offset);
        for pair in by_start.windows(2) {
            if pair[0].offset + pair[0].n_bytes > pair[1].offset {
                return Err(GgufError::BadTensor {
                    tensor: pair[1].name.clone(),
                    detail: format!(
                        "its data overlaps that of `{}`: the file is corrupt",
                        pair[0].name
                    ),
                });
            }
        }

        Ok(GgufHeader {
            version,
            metadata,
            key_index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
        })
    }

    /// Checks that every tensor's data lies inside a file of `file_len` bytes.
    pub fn check_file_len(&self, file_len: u64) -> Result<(), GgufError> {
        for t in &self.tensors {
            let end = t.offset + t.n_bytes; // checked at parse
            if end > file_len {
                return Err(GgufError::TensorOutOfRange {
                    tensor: t.name.clone(),
                    start: t.offset,
                    end,
                    file_len,
                });
            }
        }
        Ok(())
    }

    /// The file's length as its tensors give it: the end of the last tensor's data (the data
    /// section's start where there are no tensors).
    pub fn data_end(&self) -> u64 {
        self.tensors
            .iter()
            .map(|t| t.offset + t.n_bytes) // checked at parse
            .max()
            .unwrap_or(self.data_offset)
    }

    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Tensor data alignment in bytes.
    pub fn alignment(&self) -> u32 {
        self.alignment
    }

    /// Absolute offset of the tensor data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// All metadata, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The value of a metadata key, if present.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.value(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_string(),
        })
    }

    fn wrong(key: &str, expected: &'static str, v: &Value) -> GgufError {
        GgufError::WrongType {
            key: key.to_string(),
            expected,
            found: v.type_name(),
        }
    }

    /// An integer value that fits in a `u32` (any integer type is accepted).
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        let v = self.require(key)?;
        let i = v
            .as_i128()
            .ok_or_else(|| Self::wrong(key, "an integer", v))?;
        u32::try_from(i).map_err(|_| GgufError::OutOfRange {
            key: key.to_string(),
            value: i.to_string(),
            expected: "u32",
        })
    }

    /// A float value (`f32`, or `f64` rounded to `f32`).
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        match self.require(key)? {
            Value::F32(f) => Ok(*f),
            Value::F64(f) => Ok(*f as f32),
            v => Err(Self::wrong(key, "a float", v)),
        }
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        match self.require(key)? {
            Value::String(s) => Ok(s),
            v => Err(Self::wrong(key, "a string", v)),
        }
    }

    /// A bool value.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        match self.require(key)? {
            Value::Bool(b) => Ok(*b),
            v => Err(Self::wrong(key, "a bool", v)),
        }
    }

    /// An array of strings.
    pub fn get_array_str(&self, key: &str) -> Result<&[String], GgufError> {
        match self.require(key)? {
            Value::Array(Array::String(a)) => Ok(a),
            v => Err(Self::wrong(key, "an array of string", v)),
        }
    }

    /// An array of `f32`.
    pub fn get_array_f32(&self, key: &str) -> Result<&[f32], GgufError> {
        match self.require(key)? {
            Value::Array(Array::F32(a)) => Ok(a),
            v => Err(Self::wrong(key, "an array of f32", v)),
        }
    }

    /// An array of `i32`.
    pub fn get_array_i32(&self, key: &str) -> Result<&[i32], GgufError> {
        match self.require(key)? {
            Value::Array(Array::I32(a)) => Ok(a),
            v => Err(Self::wrong(key, "an array of i32", v)),
        }
    }

    /// `general.architecture`, e.g. `llama`, `gemma3`, `qwen2`.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.get_str("general.architecture")
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor with this name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }
}

/// Bytes of a tensor of this shape and type, with overflow and block checks.
pub(crate) fn tensor_bytes(name: &str, dims: &[u64], ty: GgmlType) -> Result<u64, GgufError> {
    let overflow = || GgufError::SizeOverflow {
        what: format!("tensor `{name}`"),
    };
    let mut n_elements: u64 = 1;
    for &d in dims {
        n_elements = n_elements.checked_mul(d).ok_or_else(overflow)?;
    }
    let row = dims.first().copied().unwrap_or(1);
    let row_bytes = ty.row_bytes(row).map_err(|e| GgufError::BadTensor {
        tensor: name.to_string(),
        detail: e.to_string(),
    })?;
    dims.iter()
        .skip(1)
        .try_fold(row_bytes, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    Some(x.checked_add(a - 1)? / a * a)
}

enum Bytes {
    #[cfg(not(target_arch = "wasm32"))]
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            Bytes::Mapped(m) => write!(f, "Mapped({} bytes)", m.len()),
            Bytes::Owned(v) => write!(f, "Owned({} bytes)", v.len()),
        }
    }
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A whole GGUF file: its parsed header and its bytes.
#[derive(Debug)]
pub struct GgufFile {
    bytes: Bytes,
    header: GgufHeader,
}

impl GgufFile {
    /// Maps a GGUF file into memory and parses its header.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and kiln never writes to it. Another process truncating or
        // rewriting a model file while it is loaded would change the bytes under us; model files
        // are written once by the installer and only read afterwards.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let header = GgufHeader::parse(&map)?;
        Ok(GgufFile {
            bytes: Bytes::Mapped(map),
            header,
        })
    }

    /// Parses a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        let header = GgufHeader::parse(&bytes)?;
        Ok(GgufFile {
            bytes: Bytes::Owned(bytes),
            header,
        })
    }

    /// The parsed header.
    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// A tensor's data bytes.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        // The header checked every tensor's range against this file's length.
        let start = usize::try_from(t.offset).expect("offset inside the file");
        let end = usize::try_from(t.offset + t.n_bytes).expect("end inside the file");
        &self.bytes()[start..end]
    }

    /// See [`GgufHeader::value`].
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.header.value(key)
    }
    /// See [`GgufHeader::get_u32`].
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.header.get_u32(key)
    }
    /// See [`GgufHeader::get_f32`].
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        self.header.get_f32(key)
    }
    /// See [`GgufHeader::get_str`].
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        self.header.get_str(key)
    }
    /// See [`GgufHeader::get_bool`].
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        self.header.get_bool(key)
    }
    /// See [`GgufHeader::get_array_str`].
    pub fn get_array_str(&self, key: &str) -> Result<&[String], GgufError> {
        self.header.get_array_str(key)
    }
    /// See [`GgufHeader::get_array_f32`].
    pub fn get_array_f32(&self, key: &str) -> Result<&[f32], GgufError> {
        self.header.get_array_f32(key)
    }
    /// See [`GgufHeader::get_array_i32`].
    pub fn get_array_i32(&self, key: &str) -> Result<&[i32], GgufError> {
        self.header.get_array_i32(key)
    }
    /// See [`GgufHeader::architecture`].
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.header.architecture()
    }
    /// See [`GgufHeader::tensors`].
    pub fn tensors(&self) -> &[TensorInfo] {
        self.header.tensors()
    }
    /// See [`GgufHeader::tensor`].
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.header.tensor(name)
    }
}
