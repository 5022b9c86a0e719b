//! Hostile and damaged GGUF input must give errors, never panics or huge allocations.

use kiln::gguf::{GgmlType, GgufError, GgufFile, GgufHeader, GgufWriter, Parsed, Value};

/// A small valid file: three keys and two tensors.
fn small_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::String("llama".into()));
    w.add(
        "k",
        Value::Array(kiln::gguf::Array::String(vec!["ab".into(), "c".into()])),
    );
    w.add("n", Value::U32(7));
    w.add_tensor("a", &[4], GgmlType::F32, &[1; 16]).unwrap();
    w.add_tensor("b", &[32, 2], GgmlType::Q8_0, &[2; 68])
        .unwrap();
    w.to_bytes()
}

/// A header built by hand: magic, version, counts, then `rest`.
fn raw(version: u32, n_tensors: u64, n_kv: u64, rest: &[u8]) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend_from_slice(&version.to_le_bytes());
    v.extend_from_slice(&n_tensors.to_le_bytes());
    v.extend_from_slice(&n_kv.to_le_bytes());
    v.extend_from_slice(rest);
    v
}

fn s(text: &str) -> Vec<u8> {
    let mut v = (text.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(text.as_bytes());
    v
}

/// One tensor info: name, dims, type id, relative offset.
fn tensor(name: &str, dims: &[u64], ty: u32, offset: u64) -> Vec<u8> {
    let mut v = s(name);
    v.extend_from_slice(&(dims.len() as u32).to_le_bytes());
    for d in dims {
        v.extend_from_slice(&d.to_le_bytes());
    }
    v.extend_from_slice(&ty.to_le_bytes());
    v.extend_from_slice(&offset.to_le_bytes());
    v
}

fn err(bytes: Vec<u8>) -> String {
    match GgufFile::from_bytes(bytes) {
        Ok(_) => panic!("hostile input was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_truncation_is_an_error_and_the_prefix_parser_asks_for_more() {
    let file = small_file();
    let full = GgufFile::from_bytes(file.clone()).unwrap();
    let header_len = full.header().data_offset() as usize;
    // Bytes past the last tensor are padding: cutting them leaves a valid file.
    let data_end = full
        .tensors()
        .iter()
        .map(|t| t.offset + t.n_bytes)
        .max()
        .unwrap() as usize;
    for n in 0..data_end {
        let e = GgufFile::from_bytes(file[..n].to_vec()).unwrap_err();
        assert!(
            matches!(
                e,
                GgufError::Truncated { .. } | GgufError::TensorOutOfRange { .. }
            ),
            "prefix {n}: {e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("truncated") && msg.contains("install-models.sh"),
            "{msg}"
        );
        match GgufHeader::parse_prefix(&file[..n]).unwrap() {
            Parsed::NeedMoreBytes(need) => {
                assert!(n < header_len, "prefix {n} holds the header");
                assert!(
                    need as usize > n && need as usize <= header_len,
                    "prefix {n}: {need}"
                );
            }
            Parsed::Complete(h) => {
                assert!(n >= header_len - 32, "prefix {n} cannot hold the header");
                // The tensors do not fit the prefix: the length check says so.
                assert!(h.check_file_len(n as u64).is_err());
            }
        }
    }
}

#[test]
fn streaming_parse_converges() {
    let file = small_file();
    let mut have = 1;
    let header = loop {
        match GgufHeader::parse_prefix(&file[..have]).unwrap() {
            Parsed::Complete(h) => break h,
            Parsed::NeedMoreBytes(n) => have = (n as usize).max(have * 2).min(file.len()),
        }
    };
    header.check_file_len(file.len() as u64).unwrap();
    assert_eq!(header.tensors().len(), 2);
}

#[test]
fn bad_magic_version_and_endianness() {
    let e = err(b"GGML\x03\0\0\0".to_vec());
    assert!(e.contains("not a GGUF file"), "{e}");
    let e = err(raw(1, 0, 0, &[]));
    assert!(e.contains("version 1"), "{e}");
    let e = err(raw(99, 0, 0, &[]));
    assert!(e.contains("version 99"), "{e}");
    let e = err(raw(3u32.swap_bytes(), 0, 0, &[]));
    assert!(e.contains("big-endian"), "{e}");
}

#[test]
fn huge_counts_and_lengths_are_bounded_by_the_file() {
    // 2^60 keys, 2^60 tensors: neither may allocate.
    let e = err(raw(3, 0, 1 << 60, &[]));
    assert!(e.contains("truncated"), "{e}");
    let e = err(raw(3, u64::MAX, 0, &[]));
    assert!(e.contains("truncated"), "{e}");
    // A key string of length 2^63.
    let e = err(raw(3, 0, 1, &(1u64 << 63).to_le_bytes()));
    assert!(e.contains("truncated"), "{e}");
    // An array of 2^62 strings.
    let mut kv = s("arr");
    kv.extend_from_slice(&9u32.to_le_bytes());
    kv.extend_from_slice(&8u32.to_le_bytes());
    kv.extend_from_slice(&(1u64 << 62).to_le_bytes());
    let e = err(raw(3, 0, 1, &kv));
    assert!(e.contains("truncated") && e.contains("arr"), "{e}");
    // A string value of length u64::MAX.
    let mut kv = s("str");
    kv.extend_from_slice(&8u32.to_le_bytes());
    kv.extend_from_slice(&u64::MAX.to_le_bytes());
    let e = err(raw(3, 0, 1, &kv));
    assert!(e.contains("truncated") && e.contains("str"), "{e}");
}

#[test]
fn deep_nesting_is_rejected() {
    let mut kv = s("deep");
    kv.extend_from_slice(&9u32.to_le_bytes());
    for _ in 0..20 {
        kv.extend_from_slice(&9u32.to_le_bytes()); // array of arrays
        kv.extend_from_slice(&1u64.to_le_bytes()); // one element
    }
    kv.extend_from_slice(&[0; 64]);
    let e = err(raw(3, 0, 1, &kv));
    assert!(
        e.contains("deep") && e.contains("nests arrays deeper"),
        "{e}"
    );
}

#[test]
fn bad_values_are_rejected() {
    let mut kv = s("t");
    kv.extend_from_slice(&13u32.to_le_bytes());
    let e = err(raw(3, 0, 1, &kv));
    assert!(
        e.contains("`t`") && e.contains("unknown value type id 13"),
        "{e}"
    );

    let mut kv = s("b");
    kv.extend_from_slice(&7u32.to_le_bytes());
    kv.push(2);
    let e = err(raw(3, 0, 1, &kv));
    assert!(e.contains("bool byte 2"), "{e}");

    // A string value that is not UTF-8 loads with U+FFFD in place of the bad bytes, as
    // llama.cpp loads it (a vocabulary with one broken token); a key must be UTF-8.
    let mut kv = s("u");
    kv.extend_from_slice(&8u32.to_le_bytes());
    kv.extend_from_slice(&1u64.to_le_bytes());
    kv.push(0xff);
    let f = GgufFile::from_bytes(raw(3, 0, 1, &kv)).expect("a broken string value loads");
    assert_eq!(f.header().get_str("u").unwrap(), "\u{fffd}");
    let mut kv = 1u64.to_le_bytes().to_vec();
    kv.push(0xff);
    kv.extend_from_slice(&4u32.to_le_bytes());
    kv.extend_from_slice(&1u32.to_le_bytes());
    let e = err(raw(3, 0, 1, &kv));
    assert!(e.contains("UTF-8"), "{e}");

    let mut kvs = Vec::new();
    for _ in 0..2 {
        kvs.extend(s("dup"));
        kvs.extend_from_slice(&4u32.to_le_bytes());
        kvs.extend_from_slice(&1u32.to_le_bytes());
    }
    let e = err(raw(3, 0, 2, &kvs));
    assert!(e.contains("`dup` appears twice"), "{e}");
}

fn alignment_kv(ty: u32, value: &[u8]) -> Vec<u8> {
    let mut kv = s("general.alignment");
    kv.extend_from_slice(&ty.to_le_bytes());
    kv.extend_from_slice(value);
    kv
}

#[test]
fn bad_alignment_is_rejected() {
    for kv in [
        alignment_kv(4, &0u32.to_le_bytes()),
        alignment_kv(4, &24u32.to_le_bytes()),
        alignment_kv(10, &32u64.to_le_bytes()),
    ] {
        let e = err(raw(3, 0, 1, &kv));
        assert!(e.contains("general.alignment"), "{e}");
    }
}

#[test]
fn bad_tensors_are_rejected() {
    let pad = [0u8; 64];
    let with = |infos: &[Vec<u8>]| {
        let mut rest: Vec<u8> = infos.concat();
        rest.extend_from_slice(&pad);
        raw(3, infos.len() as u64, 0, &rest)
    };
    let e = err(with(&[tensor("w", &[4], 77, 0)]));
    assert!(
        e.contains("`w`") && e.contains("unknown ggml type id 77"),
        "{e}"
    );
    let e = err(with(&[tensor("w", &[1 << 40, 1 << 40], 0, 0)]));
    assert!(e.contains("`w`") && e.contains("overflows"), "{e}");
    let e = err(with(&[tensor("w", &[1, 1, 1, 1, 1], 0, 0)]));
    assert!(e.contains("5 dimensions"), "{e}");
    let e = err(with(&[tensor("w", &[33], GgmlType::Q8_0 as u32, 0)]));
    assert!(e.contains("`w`") && e.contains("whole number"), "{e}");
    let e = err(with(&[tensor("w", &[4], 0, 8)]));
    assert!(e.contains("not a multiple of the alignment"), "{e}");
    let e = err(with(&[tensor("w", &[4], 0, 0), tensor("w", &[4], 0, 32)]));
    assert!(e.contains("`w` appears twice"), "{e}");
    let e = err(with(&[tensor("w", &[1024], 0, 0)]));
    assert!(
        e.contains("`w` occupies bytes") && e.contains("truncated"),
        "{e}"
    );
    let e = err(with(&[tensor("w", &[4], 0, u64::MAX - 31)]));
    assert!(e.contains("overflows"), "{e}");
}

#[test]
fn random_corruption_never_panics() {
    // Flip bytes of a valid file at many positions; every outcome must be Ok or Err.
    let file = small_file();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..5000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut bytes = file.clone();
        let at = (state % bytes.len() as u64) as usize;
        bytes[at] ^= (state >> 32) as u8 | 1;
        let _ = GgufFile::from_bytes(bytes.clone());
        let _ = GgufHeader::parse_prefix(&bytes);
    }
}
