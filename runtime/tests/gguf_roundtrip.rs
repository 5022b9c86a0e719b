//! GgufWriter -> GgufFile round trips of every value type and of tensors.

use kiln::gguf::{Array, GgmlType, GgufFile, GgufHeader, GgufWriter, Parsed, Value};

fn every_value() -> Vec<(&'static str, Value)> {
    vec![
        ("t.u8", Value::U8(200)),
        ("t.i8", Value::I8(-100)),
        ("t.u16", Value::U16(60000)),
        ("t.i16", Value::I16(-30000)),
        ("t.u32", Value::U32(4_000_000_000)),
        ("t.i32", Value::I32(-2_000_000_000)),
        ("t.f32", Value::F32(-1.5e-7)),
        ("t.bool", Value::Bool(true)),
        ("t.string", Value::String("héllo ▁ 🦙".into())),
        ("t.u64", Value::U64(u64::MAX - 1)),
        ("t.i64", Value::I64(i64::MIN + 1)),
        ("t.f64", Value::F64(std::f64::consts::PI)),
        ("a.u8", Value::Array(Array::U8(vec![0, 1, 255]))),
        ("a.i8", Value::Array(Array::I8(vec![-128, 127]))),
        ("a.u16", Value::Array(Array::U16(vec![1, 65535]))),
        ("a.i16", Value::Array(Array::I16(vec![-1, 2]))),
        ("a.u32", Value::Array(Array::U32(vec![7, 8, 9]))),
        ("a.i32", Value::Array(Array::I32(vec![-7, 8]))),
        (
            "a.f32",
            Value::Array(Array::F32(vec![0.5, -0.25, f32::MAX])),
        ),
        ("a.bool", Value::Array(Array::Bool(vec![true, false, true]))),
        (
            "a.string",
            Value::Array(Array::String(vec!["".into(), "a b".into(), "日本".into()])),
        ),
        ("a.u64", Value::Array(Array::U64(vec![u64::MAX]))),
        ("a.i64", Value::Array(Array::I64(vec![i64::MIN]))),
        ("a.f64", Value::Array(Array::F64(vec![1e300]))),
        ("a.empty", Value::Array(Array::F32(vec![]))),
        (
            "a.nested",
            Value::Array(Array::Array(vec![
                Array::U32(vec![1, 2]),
                Array::String(vec!["x".into()]),
                Array::Array(vec![Array::Bool(vec![false])]),
            ])),
        ),
    ]
}

/// Tensors written by [`sample`]: name, dims, type, data.
type Tensors = Vec<(&'static str, Vec<u64>, GgmlType, Vec<u8>)>;

fn sample(alignment: Option<u32>) -> (GgufWriter, Tensors) {
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::String("llama".into()));
    if let Some(a) = alignment {
        w.add("general.alignment", Value::U32(a));
    }
    for (k, v) in every_value() {
        w.add(k, v);
    }
    let tensors = vec![
        (
            "f32",
            vec![3, 2],
            GgmlType::F32,
            (0..24).map(|i| i as u8).collect::<Vec<u8>>(),
        ),
        ("q4_0", vec![64], GgmlType::Q4_0, vec![0xab; 36]),
        (
            "q6_k",
            vec![256, 1, 2],
            GgmlType::Q6_K,
            (0..420).map(|i| (i * 7) as u8).collect(),
        ),
        ("f16", vec![5], GgmlType::F16, vec![1; 10]),
    ];
    for (name, dims, ty, data) in &tensors {
        w.add_tensor(name, dims, *ty, data).unwrap();
    }
    (w, tensors)
}

#[test]
fn every_value_type_round_trips() {
    let (w, _) = sample(None);
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert_eq!(f.header().version(), 3);
    for (k, v) in every_value() {
        assert_eq!(f.value(k), Some(&v), "key {k}");
    }
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.get_u32("t.u32").unwrap(), 4_000_000_000);
    assert_eq!(
        f.get_u32("t.u16").unwrap(),
        60000,
        "smaller unsigned types widen"
    );
    assert_eq!(f.get_f32("t.f32").unwrap(), -1.5e-7);
    assert!(f.get_bool("t.bool").unwrap());
    assert_eq!(f.get_str("t.string").unwrap(), "héllo ▁ 🦙");
    assert_eq!(f.get_array_str("a.string").unwrap()[2], "日本");
    assert_eq!(f.get_array_f32("a.f32").unwrap(), &[0.5, -0.25, f32::MAX]);
    assert_eq!(f.get_array_i32("a.i32").unwrap(), &[-7, 8]);
    assert_eq!(f.header().metadata().len(), every_value().len() + 1);
}

#[test]
fn getters_name_the_key_in_errors() {
    let (w, _) = sample(None);
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let e = f.get_u32("no.such.key").unwrap_err().to_string();
    assert!(e.contains("no.such.key") && e.contains("missing"), "{e}");
    let e = f.get_str("t.u32").unwrap_err().to_string();
    assert!(
        e.contains("t.u32") && e.contains("u32") && e.contains("string"),
        "{e}"
    );
    let e = f.get_u32("t.i32").unwrap_err().to_string();
    assert!(e.contains("t.i32") && e.contains("-2000000000"), "{e}");
    let e = f.get_array_f32("a.string").unwrap_err().to_string();
    assert!(e.contains("array of string"), "{e}");
}

#[test]
fn tensors_round_trip_with_default_and_custom_alignment() {
    for alignment in [None, Some(64), Some(1)] {
        let (w, tensors) = sample(alignment);
        let bytes = w.to_bytes();
        let f = GgufFile::from_bytes(bytes.clone()).unwrap();
        let a = u64::from(alignment.unwrap_or(32));
        assert_eq!(u64::from(f.header().alignment()), a);
        assert_eq!(f.header().data_offset() % a, 0);
        assert_eq!(f.tensors().len(), tensors.len());
        for ((name, dims, ty, data), info) in tensors.iter().zip(f.tensors()) {
            assert_eq!(&info.name, name);
            assert_eq!(&info.dims, dims);
            assert_eq!(info.ty, *ty);
            assert_eq!(info.n_bytes, data.len() as u64);
            assert_eq!(info.offset % a, 0, "{name} aligned");
            assert_eq!(f.tensor_data(info), &data[..], "{name} data");
            assert_eq!(f.tensor(name), Some(info));
        }
        assert_eq!(f.tensor("q6_k").unwrap().n_elements(), 512);
        assert!(f.tensor("absent").is_none());
        // The streaming parser sees the same header from the prefix alone.
        let prefix = &bytes[..f.header().data_offset() as usize];
        match GgufHeader::parse_prefix(prefix).unwrap() {
            Parsed::Complete(h) => assert_eq!(h.tensors(), f.tensors()),
            Parsed::NeedMoreBytes(n) => panic!("header is complete, but it asked for {n} bytes"),
        }
    }
}

#[test]
fn version_2_files_parse() {
    let (w, _) = sample(None);
    let mut bytes = w.to_bytes();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.header().version(), 2);
    assert_eq!(f.tensors().len(), 4);
}

#[test]
fn writer_rejects_data_of_the_wrong_size() {
    let mut w = GgufWriter::new();
    let e = w
        .add_tensor("t", &[32], GgmlType::Q8_0, &[0; 33])
        .unwrap_err()
        .to_string();
    assert!(e.contains("33") && e.contains("34"), "{e}");
    let e = w
        .add_tensor("t", &[33], GgmlType::Q8_0, &[0; 34])
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a whole number"), "{e}");
}

#[test]
fn file_open_maps_the_same_bytes() {
    let (w, tensors) = sample(None);
    let path = std::env::temp_dir().join(format!("kiln-gguf-rt-{}.gguf", std::process::id()));
    w.write(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(f.tensor_data(f.tensor("f32").unwrap()), &tensors[0].3[..]);
    let e = GgufFile::open(&path).unwrap_err().to_string();
    assert!(e.contains("kiln-gguf-rt"), "{e}");
}

#[test]
fn type_table_matches_ggml() {
    // Sizes from ggml's type traits (block size, bytes per block).
    let expect = [
        (GgmlType::F32, 0, 1, 4),
        (GgmlType::F16, 1, 1, 2),
        (GgmlType::Q4_0, 2, 32, 18),
        (GgmlType::Q4_1, 3, 32, 20),
        (GgmlType::Q5_0, 6, 32, 22),
        (GgmlType::Q8_0, 8, 32, 34),
        (GgmlType::Q4_K, 12, 256, 144),
        (GgmlType::Q6_K, 14, 256, 210),
        (GgmlType::BF16, 30, 1, 2),
    ];
    for (ty, id, block, size) in expect {
        assert_eq!(GgmlType::from_id(id), Some(ty));
        assert_eq!((ty.block_size(), ty.type_size()), (block, size), "{ty}");
    }
    assert_eq!(GgmlType::from_id(4), None, "removed Q4_2");
    assert_eq!(GgmlType::Q4_K.row_bytes(512).unwrap(), 288);
    assert!(GgmlType::Q4_K.row_bytes(640).is_err());
    let supported: Vec<_> = GgmlType::ALL.iter().filter(|t| t.is_supported()).collect();
    assert_eq!(supported.len(), 8);
}
