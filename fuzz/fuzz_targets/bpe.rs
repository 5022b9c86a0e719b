//! Any text through a byte-level BPE tokenizer (SmolLM2's, GPT-2 style).
#![no_main]

use std::sync::OnceLock;

use kiln::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

#[path = "text.rs"]
mod text;

static TOK: OnceLock<Tokenizer> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    text::check(
        text::tokenizer(&TOK, "SmolLM2-135M-Instruct.Q4_1.gguf"),
        data,
    );
});
