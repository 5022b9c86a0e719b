//! `kiln synth`: writes a model with the metadata and tensor layout of a real GGUF but seeded
//! random weights (valid blocks with small scales). Only the real file's header is read, so a
//! few MB of header stand in for hundreds of MB of weights where the weights cannot travel (a
//! lent benchmark machine); speed does not depend on weight values, text quality does.
//!
//! `kiln synth --header PREFIX_OF_REAL.gguf --out OUT.gguf [--seed S] [--gain G]`
//! (`--gain` multiplies the blocks' scales: the default 1 gives small weights, under which the
//! logits hardly depend on anything but the last token; checks use larger ones.)
//! (`head -c 8M real.gguf > prefix` makes a prefix; the header must fit in it.)
//!
//! A layout is smaller still: `kiln synth --header REAL.gguf --layout-out LAYOUT.json` keeps the
//! metadata and the tensors' names, types and shapes but not the vocabulary's strings (a few KB
//! where the header holds MB), and `kiln synth --layout LAYOUT.json --out OUT.gguf` writes a
//! model from it whose tokens are `<0>`, `<1>`, ... (same count, same special ids): the same
//! bytes from the same layout and seed on every machine, for token-id inputs.

use std::io::Write as _;
use std::path::Path;

use half::f16;
use kiln::gguf::{Array, GgmlType, GgufHeader, GgufWriter, Parsed, Value};
use serde_json::{Value as Json, json};

use kiln_cpu::rng::SplitMix64;

use crate::cli::SynthArgs;

/// Overwrites the f16 field at `o` with a small positive scale.
fn scale(buf: &mut [u8], o: usize, rng: &mut SplitMix64, size: f32) {
    let v = f16::from_f32(size * (0.5 + rng.unit()));
    buf[o..o + 2].copy_from_slice(&v.to_le_bytes());
}

/// Fills `data` (tensor `name`) with random blocks of `ty` whose scales are about `gain` times
/// the defaults. Weights are centred on zero in every format (Q4_1's min is -7.5 of its scale,
/// Q4_K's sub-block mins equal their scales and its min scale is 7.5 of its scale), so that
/// each layer mixes its input instead of adding one fixed direction; norm weights are near 1,
/// biases near 0.
fn fill(
    name: &str,
    ty: GgmlType,
    data: &mut [u8],
    rng: &mut SplitMix64,
    gain: f32,
) -> Result<(), String> {
    for b in data.iter_mut() {
        *b = rng.next_u64() as u8;
    }
    let block = ty.type_size() as usize;
    let set = |b: &mut [u8], o: usize, v: f32| {
        b[o..o + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
    };
    match ty {
        GgmlType::F32 => {
            let centre = if name.ends_with(".bias") { 0.0 } else { 1.0 };
            for c in data.chunks_exact_mut(4) {
                c.copy_from_slice(&(centre + 0.1 * (rng.unit() - 0.5)).to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for c in data.chunks_exact_mut(2) {
                c.copy_from_slice(&f16::from_f32(gain * 0.02 * (rng.unit() - 0.5)).to_le_bytes());
            }
        }
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => {
            for b in data.chunks_exact_mut(block) {
                scale(b, 0, rng, gain * 0.003);
            }
        }
        GgmlType::Q4_1 => {
            for b in data.chunks_exact_mut(block) {
                let d = gain * 0.003 * (0.5 + rng.unit());
                set(b, 0, d);
                set(b, 2, -7.5 * d);
            }
        }
        GgmlType::Q4_K => {
            for b in data.chunks_exact_mut(block) {
                let d = gain * 0.003 * (0.5 + rng.unit()) / 32.0;
                set(b, 0, d);
                set(b, 2, 7.5 * d);
                // Twelve equal bytes with equal nibbles give each sub-block equal 6-bit scale
                // and min, so that d * sc * q - dmin * m = d * sc * (q - 7.5).
                let v = 0x11 * (1 + (rng.next_u64() % 15) as u8);
                b[4..16].fill(v);
            }
        }
        GgmlType::Q6_K => {
            for b in data.chunks_exact_mut(block) {
                scale(b, 208, rng, gain * 0.0003);
            }
        }
        other => return Err(format!("no synthetic blocks for {other:?}")),
    }
    Ok(())
}

/// Metadata arrays longer than this are left out of a layout (the vocabulary's strings, scores
/// and merges); the token list keeps its length.
const LAYOUT_ARRAY_MAX: usize = 1024;

/// A metadata value as `[type, value]` (arrays: `["array:TYPE", [...]]`), or None for a long
/// array.
fn value_json(v: &Value) -> Option<Json> {
    Some(match v {
        Value::U8(x) => json!(["u8", x]),
        Value::I8(x) => json!(["i8", x]),
        Value::U16(x) => json!(["u16", x]),
        Value::I16(x) => json!(["i16", x]),
        Value::U32(x) => json!(["u32", x]),
        Value::I32(x) => json!(["i32", x]),
        Value::F32(x) => json!(["f32", x]),
        Value::Bool(x) => json!(["bool", x]),
        Value::String(x) => json!(["string", x]),
        Value::U64(x) => json!(["u64", x]),
        Value::I64(x) => json!(["i64", x]),
        Value::F64(x) => json!(["f64", x]),
        Value::Array(a) if a.len() > LAYOUT_ARRAY_MAX => return None,
        Value::Array(a) => match a {
            Array::U8(x) => json!(["array:u8", x]),
            Array::I8(x) => json!(["array:i8", x]),
            Array::U16(x) => json!(["array:u16", x]),
            Array::I16(x) => json!(["array:i16", x]),
            Array::U32(x) => json!(["array:u32", x]),
            Array::I32(x) => json!(["array:i32", x]),
            Array::F32(x) => json!(["array:f32", x]),
            Array::Bool(x) => json!(["array:bool", x]),
            Array::String(x) => json!(["array:string", x]),
            Array::U64(x) => json!(["array:u64", x]),
            Array::I64(x) => json!(["array:i64", x]),
            Array::F64(x) => json!(["array:f64", x]),
            Array::Array(_) => return None,
        },
    })
}

/// The value `[type, value]` describes.
fn json_value(key: &str, j: &Json) -> Result<Value, String> {
    let bad = || format!("layout: metadata `{key}` is not a [type, value] kiln can read");
    let (Some(ty), Some(v)) = (j.get(0).and_then(Json::as_str), j.get(1)) else {
        return Err(bad());
    };
    let u = || v.as_u64().ok_or_else(bad);
    let i = || v.as_i64().ok_or_else(bad);
    let f = || v.as_f64().ok_or_else(bad);
    let arr = || v.as_array().ok_or_else(bad);
    let nums = |conv: &dyn Fn(&Json) -> Option<f64>| -> Result<Vec<f64>, String> {
        arr()?.iter().map(|x| conv(x).ok_or_else(bad)).collect()
    };
    Ok(match ty {
        "u8" => Value::U8(u()? as u8),
        "i8" => Value::I8(i()? as i8),
        "u16" => Value::U16(u()? as u16),
        "i16" => Value::I16(i()? as i16),
        "u32" => Value::U32(u()? as u32),
        "i32" => Value::I32(i()? as i32),
        "f32" => Value::F32(f()? as f32),
        "bool" => Value::Bool(v.as_bool().ok_or_else(bad)?),
        "string" => Value::String(v.as_str().ok_or_else(bad)?.to_string()),
        "u64" => Value::U64(u()?),
        "i64" => Value::I64(i()?),
        "f64" => Value::F64(f()?),
        "array:string" => Value::Array(Array::String(
            arr()?
                .iter()
                .map(|x| x.as_str().map(str::to_string).ok_or_else(bad))
                .collect::<Result<_, _>>()?,
        )),
        "array:bool" => Value::Array(Array::Bool(
            arr()?
                .iter()
                .map(|x| x.as_bool().ok_or_else(bad))
                .collect::<Result<_, _>>()?,
        )),
        "array:f32" => Value::Array(Array::F32(
            nums(&Json::as_f64)?.into_iter().map(|x| x as f32).collect(),
        )),
        "array:f64" => Value::Array(Array::F64(nums(&Json::as_f64)?)),
        "array:u8" | "array:u16" | "array:u32" | "array:u64" => {
            let xs: Vec<u64> = arr()?
                .iter()
                .map(|x| x.as_u64().ok_or_else(bad))
                .collect::<Result<_, _>>()?;
            Value::Array(match ty {
                "array:u8" => Array::U8(xs.iter().map(|&x| x as u8).collect()),
                "array:u16" => Array::U16(xs.iter().map(|&x| x as u16).collect()),
                "array:u32" => Array::U32(xs.iter().map(|&x| x as u32).collect()),
                _ => Array::U64(xs),
            })
        }
        "array:i8" | "array:i16" | "array:i32" | "array:i64" => {
            let xs: Vec<i64> = arr()?
                .iter()
                .map(|x| x.as_i64().ok_or_else(bad))
                .collect::<Result<_, _>>()?;
            Value::Array(match ty {
                "array:i8" => Array::I8(xs.iter().map(|&x| x as i8).collect()),
                "array:i16" => Array::I16(xs.iter().map(|&x| x as i16).collect()),
                "array:i32" => Array::I32(xs.iter().map(|&x| x as i32).collect()),
                _ => Array::I64(xs),
            })
        }
        _ => return Err(bad()),
    })
}

/// The layout of `header` (see the module docs).
fn layout(header: &GgufHeader, source: &str) -> Json {
    let mut metadata = Vec::new();
    let mut vocab = 0;
    for (k, v) in header.metadata() {
        if k == "tokenizer.ggml.tokens" {
            if let Value::Array(a) = v {
                vocab = a.len();
            }
            continue;
        }
        if let Some(j) = value_json(v) {
            metadata.push(json!([k, j]));
        }
    }
    let tensors: Vec<Json> = header
        .tensors()
        .iter()
        .map(|t| json!([t.name, t.ty.name(), t.dims]))
        .collect();
    json!({
        "source": source,
        "vocab": vocab,
        "metadata": metadata,
        "tensors": tensors,
    })
}

/// A layout as JSON with one line per metadata entry and per tensor (reviewable in a diff).
fn layout_text(j: &Json) -> String {
    let lines = |key: &str| -> String {
        j[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| format!("    {e}"))
                    .collect::<Vec<_>>()
                    .join(",\n")
            })
            .unwrap_or_default()
    };
    format!(
        "{{\n  \"source\": {},\n  \"vocab\": {},\n  \"metadata\": [\n{}\n  ],\n  \"tensors\": [\n{}\n  ]\n}}\n",
        j["source"],
        j["vocab"],
        lines("metadata"),
        lines("tensors")
    )
}

/// A header prefix from a layout: its metadata, tokens `<0>`, `<1>`, ..., its tensors declared.
fn header_from_layout(text: &str) -> Result<Vec<u8>, String> {
    let j: Json = serde_json::from_str(text).map_err(|e| format!("layout: {e}"))?;
    let vocab = j["vocab"]
        .as_u64()
        .ok_or("layout: no `vocab` (the number of tokens)")?;
    let mut w = GgufWriter::new();
    for entry in j["metadata"]
        .as_array()
        .ok_or("layout: no `metadata` list")?
    {
        let key = entry[0]
            .as_str()
            .ok_or("layout: a metadata entry has no key")?;
        w.add(key, json_value(key, &entry[1])?);
    }
    let tokens = (0..vocab).map(|i| format!("<{i}>")).collect();
    w.add("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    for t in j["tensors"].as_array().ok_or("layout: no `tensors` list")? {
        let name = t[0].as_str().ok_or("layout: a tensor has no name")?;
        let ty = t[1]
            .as_str()
            .and_then(|n| GgmlType::ALL.iter().copied().find(|ty| ty.name() == n))
            .ok_or_else(|| format!("layout: tensor `{name}` has no type kiln knows"))?;
        let dims: Vec<u64> = t[2]
            .as_array()
            .ok_or_else(|| format!("layout: tensor `{name}` has no dims"))?
            .iter()
            .map(|d| d.as_u64().ok_or_else(|| format!("layout: `{name}`'s dims")))
            .collect::<Result<_, _>>()?;
        w.declare_tensor(name, &dims, ty)
            .map_err(|e| e.to_string())?;
    }
    Ok(w.to_bytes())
}

/// An I/O error on `path`, as a message naming it.
fn io_err(path: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

pub fn run(args: &SynthArgs) -> Result<(), String> {
    // clap lets exactly one of `--header` and `--layout` through.
    let prefix = match (&args.header, &args.layout) {
        (Some(path), _) => std::fs::read(path).map_err(io_err(path))?,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(io_err(path))?;
            header_from_layout(&text)?
        }
        (None, None) => {
            return Err("give one of `--header PREFIX.gguf` or `--layout LAYOUT.json`".into());
        }
    };
    let header = match GgufHeader::parse_prefix(&prefix).map_err(|e| e.to_string())? {
        Parsed::Complete(h) => h,
        Parsed::NeedMoreBytes(n) => {
            return Err(format!("the header needs {n} bytes; make a longer prefix"));
        }
    };
    if let Some(out) = &args.layout_out {
        let name = args.header.as_deref().map_or_else(String::new, |h| {
            h.file_name()
                .unwrap_or(h.as_os_str())
                .to_string_lossy()
                .into_owned()
        });
        std::fs::write(out, layout_text(&layout(&header, &name))).map_err(io_err(out))?;
        eprintln!(
            "wrote {}: {} tensors",
            out.display(),
            header.tensors().len()
        );
        return Ok(());
    }
    let Some(out_path) = &args.out else {
        return Err("`--out OUT.gguf` is required".into());
    };
    let mut rng = SplitMix64::new(args.seed);
    let gain = args.gain;
    let data_start = header.data_offset() as usize;
    let end = header
        .tensors()
        .iter()
        .map(|t| t.offset + t.n_bytes)
        .max()
        .unwrap_or(header.data_offset()) as usize;
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(out_path).map_err(io_err(out_path))?);
    let write = |out: &mut std::io::BufWriter<std::fs::File>, b: &[u8]| {
        out.write_all(b).map_err(io_err(out_path))
    };
    write(&mut out, &prefix[..data_start])?;
    let mut tensors: Vec<_> = header.tensors().to_vec();
    tensors.sort_by_key(|t| t.offset);
    let mut at = data_start;
    for t in &tensors {
        let (start, len) = (t.offset as usize, t.n_bytes as usize);
        write(&mut out, &vec![0u8; start - at])?;
        let mut data = vec![0u8; len];
        fill(&t.name, t.ty, &mut data, &mut rng, gain).map_err(|e| format!("{}: {e}", t.name))?;
        write(&mut out, &data)?;
        at = start + len;
    }
    write(&mut out, &vec![0u8; end - at])?;
    out.flush().map_err(io_err(out_path))?;
    eprintln!(
        "wrote {}: {} tensors, {} bytes",
        out_path.display(),
        tensors.len(),
        end
    );
    Ok(())
}
