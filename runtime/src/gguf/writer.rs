//! A small GGUF v3 writer: metadata plus tensors, for tests and tiny generated models.

use super::{Array, DEFAULT_ALIGNMENT, GgmlType, GgufError, Value, tensor_bytes};

/// Builds a GGUF v3 file in memory.
///
/// ```
/// use kiln::gguf::{GgufWriter, GgufFile, GgmlType, Value};
/// let mut w = GgufWriter::new();
/// w.add("general.architecture", Value::String("llama".into()));
/// w.add_tensor("t", &[2], GgmlType::F32, &[0u8; 8]).unwrap();
/// let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
/// assert_eq!(f.tensor("t").unwrap().n_bytes, 8);
/// ```
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<Tensor>,
}

/// A tensor to write: name, dims, type, size in bytes and the data (None: declared only, see
/// [`GgufWriter::declare_tensor`]).
type Tensor = (String, Vec<u64>, GgmlType, u64, Option<Vec<u8>>);

impl GgufWriter {
    /// An empty file.
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Adds a metadata key. A `general.alignment` `u32` sets the data alignment.
    pub fn add(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Adds a tensor (`dims` in ggml order); `data` must have exactly the size its shape needs.
    pub fn add_tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        ty: GgmlType,
        data: &[u8],
    ) -> Result<&mut Self, GgufError> {
        let expected = tensor_bytes(name, dims, ty)?;
        if data.len() as u64 != expected {
            return Err(GgufError::DataSize {
                tensor: name.to_string(),
                len: data.len() as u64,
                expected,
            });
        }
        self.tensors.push((
            name.to_string(),
            dims.to_vec(),
            ty,
            expected,
            Some(data.to_vec()),
        ));
        Ok(self)
    }

    /// Declares a tensor without its data: the header lists it (its offset reserves its size)
    /// but [`GgufWriter::to_bytes`] writes no data for it, so a file whose tensors are all
    /// declared is a header prefix (what `kiln synth` fills with random blocks).
    pub fn declare_tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        ty: GgmlType,
    ) -> Result<&mut Self, GgufError> {
        let size = tensor_bytes(name, dims, ty)?;
        self.tensors
            .push((name.to_string(), dims.to_vec(), ty, size, None));
        Ok(self)
    }

    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find_map(|(k, v)| match (k.as_str(), v) {
                ("general.alignment", Value::U32(a)) if a.is_power_of_two() => Some(u64::from(*a)),
                _ => None,
            })
            .unwrap_or(DEFAULT_ALIGNMENT.into())
    }

    /// The file's bytes (up to the data of the first declared-only tensor).
    pub fn to_bytes(&self) -> Vec<u8> {
        let align = self.alignment();
        let pad = |out: &mut Vec<u8>| {
            while !(out.len() as u64).is_multiple_of(align) {
                out.push(0);
            }
        };
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut out, k);
            out.extend_from_slice(&(v.ty() as u32).to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offset = 0u64;
        for (name, dims, ty, size, _) in &self.tensors {
            put_str(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&(*ty as u32).to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset = (offset + size).div_ceil(align) * align;
        }
        pad(&mut out);
        for (_, _, _, _, data) in &self.tensors {
            let Some(data) = data else { break };
            out.extend_from_slice(data);
            pad(&mut out);
        }
        out
    }

    /// Writes the file.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn write(&self, path: impl AsRef<std::path::Path>) -> Result<(), GgufError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes()).map_err(|source| GgufError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::Array(a) => put_array(out, a),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&(a.elem_type() as u32).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => each!(v),
        Array::U16(v) => each!(v),
        Array::I16(v) => each!(v),
        Array::U32(v) => each!(v),
        Array::I32(v) => each!(v),
        Array::F32(v) => each!(v),
        Array::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        Array::String(v) => v.iter().for_each(|s| put_str(out, s)),
        Array::Array(v) => v.iter().for_each(|a| put_array(out, a)),
        Array::U64(v) => each!(v),
        Array::I64(v) => each!(v),
        Array::F64(v) => each!(v),
    }
}
