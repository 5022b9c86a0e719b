//! The real models parse, and kiln reads what Python's `gguf` package reads
//! (fixtures from scripts/gguf_fixture.py).

mod common;

use kiln::gguf::{Array, GgufFile, Value};
use serde_json::Value as Json;

fn check_model(name: &str, file: &str) {
    let Some(path) = common::model_file(file, common::INSTALL_MODELS) else {
        return;
    };
    let f = GgufFile::open(&path).unwrap();
    let fx = common::fixture(&format!("gguf/{name}.json"));
    let h = f.header();
    assert_eq!(u64::from(h.version()), fx["version"].as_u64().unwrap());
    assert_eq!(u64::from(h.alignment()), fx["alignment"].as_u64().unwrap());
    assert_eq!(h.data_offset(), fx["data_offset"].as_u64().unwrap());
    assert_eq!(f.bytes().len() as u64, fx["file_size"].as_u64().unwrap());

    let tensors = fx["tensors"].as_array().unwrap();
    assert_eq!(f.tensors().len(), tensors.len());
    for (t, e) in f.tensors().iter().zip(tensors) {
        assert_eq!(t.name, e["name"].as_str().unwrap());
        let dims: Vec<u64> = e["dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(t.dims, dims, "{}", t.name);
        assert_eq!(t.ty as u64, e["type"].as_u64().unwrap(), "{}", t.name);
        assert_eq!(t.offset, e["offset"].as_u64().unwrap(), "{}", t.name);
        assert_eq!(t.n_bytes, e["n_bytes"].as_u64().unwrap(), "{}", t.name);
        assert!(t.ty.is_supported(), "{} is {}", t.name, t.ty);
        assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes);
    }

    let meta = fx["metadata"].as_object().unwrap();
    assert_eq!(h.metadata().len(), meta.len());
    for (key, e) in meta {
        let v = f.value(key).unwrap_or_else(|| panic!("{key} missing"));
        if e["type"] == "array" {
            let Value::Array(a) = v else {
                panic!("{key} is {v:?}")
            };
            assert_eq!(a.len() as u64, e["len"].as_u64().unwrap(), "{key}");
            assert_eq!(a.elem_type().name(), e["elem"].as_str().unwrap(), "{key}");
            let (first, last) = (&e["first"], &e["last"]);
            let n = a.len();
            match a {
                Array::String(s) => {
                    assert_eq!(Json::from(s[..n.min(3)].to_vec()), *first, "{key}");
                    assert_eq!(
                        Json::from(s[n.saturating_sub(3)..].to_vec()),
                        *last,
                        "{key}"
                    );
                }
                Array::F32(x) => {
                    let j: Vec<f64> = first
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_f64().unwrap())
                        .collect();
                    let mine: Vec<f64> = x[..n.min(3)].iter().map(|&v| f64::from(v)).collect();
                    assert_eq!(mine, j, "{key}");
                }
                Array::I32(x) => {
                    assert_eq!(
                        Json::from(x[n.saturating_sub(3)..].to_vec()),
                        *last,
                        "{key}"
                    );
                }
                other => panic!("{key}: unexpected array {other:?}"),
            }
        } else {
            assert_eq!(v.ty().name(), e["type"].as_str().unwrap(), "{key}");
            let mine = match v {
                Value::String(s) => Json::from(s.clone()),
                Value::Bool(b) => Json::from(*b),
                Value::F32(x) => Json::from(f64::from(*x)),
                other => Json::from(other.as_i128().unwrap() as i64),
            };
            assert_eq!(mine, e["value"], "{key}");
        }
    }
}

#[test]
fn smollm2_matches_gguf_py() {
    check_model("smollm2", common::MODELS[0].1);
}

#[test]
fn gemma3_matches_gguf_py() {
    check_model("gemma3", common::MODELS[1].1);
}

#[test]
fn qwen2_matches_gguf_py() {
    check_model("qwen2", common::MODELS[2].1);
}
