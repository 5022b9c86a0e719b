//! kiln's tokenizers against llama.cpp's own tokenizer test cases (vocab-only GGUFs with
//! `.inp`/`.out` files, fetched by scripts/fetch_llama_vocab.sh into models/vocab/).

mod common;

use kiln::gguf::GgufFile;
use kiln::tokenizer::Tokenizer;

const FETCH: &str = "scripts/fetch_llama_vocab.sh";

/// Parses llama.cpp's test format: inputs separated by `\n__ggml_vocab_test__\n` (the file ends
/// with one), and one line of space-separated ids per input.
fn read_cases(inp: &str, out: &str) -> Vec<(String, Vec<u32>)> {
    const SEP: &str = "\n__ggml_vocab_test__\n";
    let mut inputs: Vec<&str> = inp.split(SEP).collect();
    if inputs.last() == Some(&"") {
        inputs.pop();
    }
    let outputs: Vec<&str> = out.lines().collect();
    assert_eq!(
        inputs.len(),
        outputs.len(),
        "inputs and outputs differ in number"
    );
    inputs
        .into_iter()
        .zip(outputs)
        .map(|(i, o)| {
            let ids = o.split_whitespace().map(|t| t.parse().unwrap()).collect();
            (i.to_string(), ids)
        })
        .collect()
}

fn check(vocab: &str) {
    let rel = format!("vocab/ggml-vocab-{vocab}.gguf");
    let Some(path) = common::model_file(&rel, FETCH) else {
        return;
    };
    let inp = std::fs::read_to_string(path.with_extension("gguf.inp")).unwrap();
    let out = std::fs::read_to_string(path.with_extension("gguf.out")).unwrap();
    let cases = read_cases(&inp, &out);
    assert!(cases.len() > 20, "{vocab}: only {} cases", cases.len());
    let tok = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let mut failures = Vec::new();
    for (text, want) in &cases {
        // llama.cpp's test: add_special = false, parse_special = false.
        let got = tok.encode(text, false, false);
        if &got != want {
            failures.push(format!("{text:?}\n  kiln  {got:?}\n  llama {want:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{vocab}: {} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn llama_spm() {
    check("llama-spm");
}

#[test]
fn phi_3_spm() {
    check("phi-3");
}

#[test]
fn llama_bpe() {
    check("llama-bpe");
}

#[test]
fn qwen2() {
    check("qwen2");
}

#[test]
fn gpt_2() {
    check("gpt-2");
}

#[test]
fn starcoder() {
    check("starcoder");
}

#[test]
fn refact() {
    check("refact");
}

#[test]
fn case_format_is_parsed() {
    let cases = read_cases(
        "a\n__ggml_vocab_test__\n\n__ggml_vocab_test__\n",
        " 1 2\n\n",
    );
    assert_eq!(
        cases,
        [("a".to_string(), vec![1, 2]), (String::new(), vec![])]
    );
}
