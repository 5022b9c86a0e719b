//! The `kiln` binary: clear errors and a non-zero exit for bad files; JSON output.

use std::process::Command;

fn kiln(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("run kiln")
}

fn models() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

#[test]
fn missing_truncated_and_foreign_files_fail_clearly() {
    let out = kiln(&["generate", "--model", "/nonexistent.gguf", "--prompt", "hi"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");

    let dir = std::env::temp_dir().join(format!("kiln-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let foreign = dir.join("foreign.gguf");
    std::fs::write(&foreign, b"this is not a GGUF file at all").unwrap();
    let out = kiln(&[
        "tokenize",
        "--model",
        foreign.to_str().unwrap(),
        "--text",
        "hi",
    ]);
    assert!(!out.status.success());
    assert!(!out.stderr.is_empty());

    let real = models().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if real.exists() {
        let bytes = std::fs::read(&real).unwrap();
        let truncated = dir.join("truncated.gguf");
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let out = kiln(&[
            "generate",
            "--model",
            truncated.to_str().unwrap(),
            "--prompt",
            "hi",
            "--backend",
            "cpu",
        ]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.to_lowercase().contains("truncated"), "{err}");
    }
    std::fs::remove_dir_all(&dir).ok();

    let out = kiln(&["generate", "--prompt", "hi"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--model"));
}

#[test]
fn tokenize_and_generate_json() {
    let real = models().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !real.exists() {
        assert!(
            std::env::var("KILN_SKIP_MODEL_TESTS").is_ok_and(|v| v == "1"),
            "{} is missing: run scripts/install-models.sh",
            real.display()
        );
        eprintln!("SKIPPED: no model and KILN_SKIP_MODEL_TESTS=1");
        return;
    }
    let model = real.to_str().unwrap();
    let out = kiln(&[
        "tokenize",
        "--model",
        model,
        "--text",
        "Hello world",
        "--json",
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // llama.cpp's ids for this text (runtime/tests/fixtures/tokenizer/smollm2.json).
    assert_eq!(v["ids"], serde_json::json!([19556, 905]));

    let out = kiln(&[
        "generate",
        "--model",
        model,
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "4",
        "--backend",
        "cpu",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "backend",
        "adapter",
        "prompt_tokens",
        "tokens",
        "text",
        "ttft_ms",
        "prefill_tok_s",
        "decode_tok_s",
        "peak_rss_mb",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["backend"], "cpu");
    assert_eq!(v["tokens"].as_array().unwrap().len(), 4);
    // llama.cpp's greedy continuation starts with " Paris" (id 7042).
    assert_eq!(v["tokens"][0], 7042);
}
