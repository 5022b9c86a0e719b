//! Any bytes through the GGUF reader (whole and streamed), the model config and the tokenizer
//! constructor: each must return Ok or Err, never panic, abort or allocate without bound.
#![no_main]

use kiln::gguf::{GgufFile, GgufHeader};
use kiln::model::Config;
use kiln::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = GgufHeader::parse_prefix(data);
    if let Ok(file) = GgufFile::from_bytes(data.to_vec()) {
        let _ = Config::from_gguf(&file);
        if let Ok(tok) = Tokenizer::from_gguf(&file) {
            let ids = tok.encode("Hello, world! 123", true, true);
            let _ = tok.decode(&ids);
        }
    }
});
