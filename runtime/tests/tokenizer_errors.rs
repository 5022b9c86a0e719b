//! Tokenizers from bad or unsupported metadata give clear errors; a tiny hand-made BPE
//! vocabulary tokenizes as worked out by hand.

use kiln::gguf::{Array, GgufFile, GgufWriter, Value};
use kiln::tokenizer::{Tokenizer, TokenizerError};

fn strs(v: &[&str]) -> Value {
    Value::Array(Array::String(v.iter().map(|s| s.to_string()).collect()))
}

/// A GPT-2 style vocabulary: the 256 byte chars, then merges `h e`, `he l`, `hel l`, `l o`.
fn tiny_bpe(extra: &[(&str, Value)]) -> Result<Tokenizer, TokenizerError> {
    // GPT-2's byte chars: printable bytes are themselves, the rest U+0100.. in byte order.
    let mut tokens: Vec<String> = Vec::new();
    let mut next = 256;
    for b in 0..=255u8 {
        let c = if matches!(b, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff) {
            char::from(b)
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap()
        };
        tokens.push(c.to_string());
    }
    // Ids 256..=260.
    tokens.extend(["he", "hel", "hell", "lo", "<|end|>"].map(String::from));
    let mut types = vec![1i32; tokens.len()];
    *types.last_mut().unwrap() = 3;
    let mut w = GgufWriter::new();
    w.add("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.add("tokenizer.ggml.pre", Value::String("gpt-2".into()));
    w.add("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    w.add("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    w.add(
        "tokenizer.ggml.merges",
        strs(&["h e", "he l", "hel l", "l o"]),
    );
    w.add("tokenizer.ggml.eos_token_id", Value::U32(260));
    for (k, v) in extra {
        w.add(k, v.clone());
    }
    let f = GgufFile::from_bytes(w.to_bytes()).map_err(TokenizerError::Gguf)?;
    Tokenizer::from_gguf(&f)
}

#[test]
fn tiny_bpe_merges_by_rank() {
    let tok = tiny_bpe(&[]).unwrap();
    // "hello": h e -> he (rank 0), he l -> hel (1), hel l -> hell (2); "o" stays.
    // "lo" (rank 3) would need the second l, which "hell" took first.
    let ids = tok.encode("hello", false, false);
    assert_eq!(ids, [258, u32::from(b'o')]);
    assert_eq!(tok.decode(&ids), "hello");
    // " lo": the space (byte 0x20, char U+0120, token 32) is its own symbol, then l o -> lo.
    let ids = tok.encode(" lo", false, false);
    assert_eq!(ids.len(), 2);
    assert_eq!(ids, [32, 259]);
    assert_eq!(tok.encode("<|end|>", false, true), [260]);
    assert_eq!(tok.encode("<|end|>", false, false).len(), 7);
    assert_eq!(tok.eos(), Some(260));
    assert_eq!(tok.decode(&[260]), "", "control tokens are hidden");
    assert_eq!(tok.token_bytes(260), b"<|end|>");
    assert_eq!(tok.eog_ids(), [260]);
}

#[test]
fn bad_metadata_is_an_error() {
    let cases: Vec<(Vec<(&str, Value)>, &str)> = vec![
        (
            vec![("tokenizer.ggml.bos_token_id", Value::U32(1 << 20))],
            "bos_token_id",
        ),
        (
            vec![("tokenizer.ggml.add_bos_token", Value::Bool(true))],
            "no bos_token_id",
        ),
        (
            vec![("tokenizer.ggml.bos_token_id", Value::String("x".into()))],
            "bos_token_id",
        ),
    ];
    for (extra, needle) in cases {
        let e = tiny_bpe(&extra).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
}

fn with_keys(keys: &[(&str, Value)]) -> String {
    let mut w = GgufWriter::new();
    for (k, v) in keys {
        w.add(k, v.clone());
    }
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    Tokenizer::from_gguf(&f).unwrap_err().to_string()
}

#[test]
fn unsupported_or_missing_tokenizers_are_named() {
    let e = with_keys(&[]);
    assert!(
        e.contains("tokenizer.ggml.model") && e.contains("missing"),
        "{e}"
    );
    let e = with_keys(&[
        ("tokenizer.ggml.model", Value::String("rwkv".into())),
        ("tokenizer.ggml.tokens", strs(&["a"])),
    ]);
    assert!(e.contains("`rwkv` is not supported"), "{e}");
    let e = with_keys(&[
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("tekken".into())),
        ("tokenizer.ggml.tokens", strs(&["a"])),
    ]);
    assert!(e.contains("`tekken` is not supported"), "{e}");
    let e = with_keys(&[
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", strs(&["a", "b"])),
        ("tokenizer.ggml.scores", Value::Array(Array::F32(vec![0.0]))),
    ]);
    assert!(e.contains("1 scores for 2 tokens"), "{e}");
}

/// A vocabulary with one token that is not UTF-8 loads (llama.cpp loads such files): that
/// token reads as U+FFFD and the others tokenize as before.
#[test]
fn a_token_that_is_not_utf8_loads() {
    let mut w = GgufWriter::new();
    let mut tokens: Vec<String> = (0..=255u8).map(|b| format!("<{b:02x}>")).collect();
    tokens.extend(["he", "\u{1}BROKEN\u{1}"].map(String::from));
    w.add("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.add("tokenizer.ggml.pre", Value::String("gpt-2".into()));
    w.add("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    w.add("tokenizer.ggml.merges", strs(&[]));
    let mut bytes = w.to_bytes();
    // Make the marked token invalid UTF-8 in place (same length).
    let mark = "\u{1}BROKEN\u{1}".as_bytes();
    let at = bytes.windows(mark.len()).position(|w| w == mark).unwrap();
    bytes[at] = 0xff;
    let f = GgufFile::from_bytes(bytes).expect("the file loads");
    let tokens = f.header().get_array_str("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens[257], "\u{fffd}BROKEN\u{1}");
    Tokenizer::from_gguf(&f).expect("the tokenizer loads");
}
