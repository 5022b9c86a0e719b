//! Shared helpers for tests that need files outside the repository.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `models/<rel>` if it exists. If not: panics with the command that installs it, unless
/// `KILN_SKIP_MODEL_TESTS=1`, in which case it says loudly that the test is skipped.
pub fn model_file(rel: &str, install: &str) -> Option<PathBuf> {
    let path = repo_root().join("models").join(rel);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("KILN_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
        eprintln!(
            "\n!!!!! SKIPPED: {} is missing and KILN_SKIP_MODEL_TESTS=1; this test checked \
             nothing. Install it with `{install}`. !!!!!\n",
            path.display()
        );
        return None;
    }
    panic!(
        "{} is missing: run `{install}` (or set KILN_SKIP_MODEL_TESTS=1 to skip loudly)",
        path.display()
    );
}

/// The model files the tests use, by fixture name.
pub const MODELS: &[(&str, &str)] = &[
    ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("gemma3", "gemma-3-270m-q4_k_m.gguf"),
    ("qwen2", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
];

/// Installs the real models.
pub const INSTALL_MODELS: &str = "scripts/install-models.sh all";

/// A fixture JSON from `runtime/tests/fixtures`.
pub fn fixture(rel: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
