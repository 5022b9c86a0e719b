//! Shared by the tokenizer targets: the tokenizer of a real model's header (installed by
//! `scripts/install-models.sh`), loaded once.

use std::sync::OnceLock;

use kiln::gguf::GgufFile;
use kiln::tokenizer::Tokenizer;

/// The tokenizer of `models/<file>`.
pub fn tokenizer(cell: &'static OnceLock<Tokenizer>, file: &str) -> &'static Tokenizer {
    cell.get_or_init(|| {
        let path = format!("{}/../models/{file}", env!("CARGO_MANIFEST_DIR"));
        let gguf = GgufFile::open(&path)
            .unwrap_or_else(|e| panic!("{path}: {e} (run scripts/install-models.sh all)"));
        Tokenizer::from_gguf(&gguf).expect("the model's tokenizer")
    })
}

/// Any bytes as text through `tok`: encoding, with and without special tokens, must give ids in
/// the vocabulary, and decoding them must not fail.
pub fn check(tok: &Tokenizer, data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for (add, parse) in [(false, false), (true, true)] {
        let ids = tok.encode(&text, add, parse);
        assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
        let _ = tok.decode(&ids);
    }
}
