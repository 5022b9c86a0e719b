//! Any text through a SentencePiece tokenizer (Gemma 3's).
#![no_main]

use std::sync::OnceLock;

use kiln::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

#[path = "text.rs"]
mod text;

static TOK: OnceLock<Tokenizer> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    text::check(text::tokenizer(&TOK, "gemma-3-270m-q4_k_m.gguf"), data);
});
