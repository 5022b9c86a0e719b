//! `kiln synth`: writes a model with the metadata and tensor layout of a real GGUF but seeded
//! random weights (valid blocks with small scales). Only the real file's header is read, so a
//! few MB of header stand in for hundreds of MB of weights where the weights cannot travel (a
//! lent benchmark machine); speed does not depend on weight values, text quality does.
//!
//! `kiln synth --header PREFIX_OF_REAL.gguf --out OUT.gguf [--seed S]`
//! (`head -c 8M real.gguf > prefix` makes a prefix; the header must fit in it.)

use std::io::Write as _;

use half::f16;
use kiln::gguf::{GgmlType, GgufHeader, Parsed};

use crate::args::Args;

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Overwrites the f16 field at `o` with a small positive scale.
fn scale(buf: &mut [u8], o: usize, rng: &mut SplitMix, size: f32) {
    let v = f16::from_f32(size * (0.5 + rng.unit()));
    buf[o..o + 2].copy_from_slice(&v.to_le_bytes());
}

fn fill(ty: GgmlType, data: &mut [u8], rng: &mut SplitMix) -> Result<(), String> {
    for b in data.iter_mut() {
        *b = rng.next() as u8;
    }
    let block = ty.type_size() as usize;
    match ty {
        GgmlType::F32 => {
            for c in data.chunks_exact_mut(4) {
                c.copy_from_slice(&(1.0 + 0.1 * (rng.unit() - 0.5)).to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for c in data.chunks_exact_mut(2) {
                c.copy_from_slice(&f16::from_f32(0.02 * (rng.unit() - 0.5)).to_le_bytes());
            }
        }
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => {
            for b in data.chunks_exact_mut(block) {
                scale(b, 0, rng, 0.003);
            }
        }
        GgmlType::Q4_1 | GgmlType::Q4_K => {
            for b in data.chunks_exact_mut(block) {
                scale(b, 0, rng, 0.003);
                scale(b, 2, rng, 0.003);
            }
        }
        GgmlType::Q6_K => {
            for b in data.chunks_exact_mut(block) {
                scale(b, 208, rng, 0.0003);
            }
        }
        other => return Err(format!("no synthetic blocks for {other:?}")),
    }
    Ok(())
}

pub fn run(args: &Args) -> Result<(), String> {
    let header_path = args.required("header")?;
    let out_path = args.required("out")?;
    let mut rng = SplitMix(args.parse_or("seed", 1u64)?);
    let prefix = std::fs::read(&header_path).map_err(|e| format!("{header_path}: {e}"))?;
    let header = match GgufHeader::parse_prefix(&prefix).map_err(|e| e.to_string())? {
        Parsed::Complete(h) => h,
        Parsed::NeedMoreBytes(n) => {
            return Err(format!("the header needs {n} bytes; make a longer prefix"));
        }
    };
    let data_start = header.data_offset() as usize;
    let end = header
        .tensors()
        .iter()
        .map(|t| t.offset + t.n_bytes)
        .max()
        .unwrap_or(header.data_offset()) as usize;
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&out_path).map_err(|e| format!("{out_path}: {e}"))?,
    );
    let write = |out: &mut std::io::BufWriter<std::fs::File>, b: &[u8]| {
        out.write_all(b).map_err(|e| format!("{out_path}: {e}"))
    };
    write(&mut out, &prefix[..data_start])?;
    let mut tensors: Vec<_> = header.tensors().to_vec();
    tensors.sort_by_key(|t| t.offset);
    let mut at = data_start;
    for t in &tensors {
        let (start, len) = (t.offset as usize, t.n_bytes as usize);
        write(&mut out, &vec![0u8; start - at])?;
        let mut data = vec![0u8; len];
        fill(t.ty, &mut data, &mut rng).map_err(|e| format!("{}: {e}", t.name))?;
        write(&mut out, &data)?;
        at = start + len;
    }
    write(&mut out, &vec![0u8; end - at])?;
    out.flush().map_err(|e| format!("{out_path}: {e}"))?;
    eprintln!("wrote {out_path}: {} tensors, {} bytes", tensors.len(), end);
    Ok(())
}
