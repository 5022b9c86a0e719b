//! Tokenizers built from GGUF metadata alone: SentencePiece-style (`tokenizer.ggml.model =
//! llama`, e.g. Gemma 3) and GPT-2 byte-level BPE (`gpt2`, e.g. SmolLM2, Qwen2.5, Llama 3).
//!
//! Behaviour follows llama.cpp's tokenizer, which the tests compare against id for id:
//! - special tokens (control, user-defined, unknown) are cut out of the text first, longest
//!   first; control and unknown tokens only when `parse_special` is true, user-defined ones
//!   always (as Hugging Face's tokenizers do);
//! - SPM text has spaces replaced by `▁`, a `▁` prepended only if `tokenizer.ggml.add_space_prefix`
//!   asks for it, and symbols that are not tokens spelled as `<0xXX>` byte tokens;
//! - BPE text is cut into words by the model's pre-tokenizer ([`PreTokenizer`]) and each word
//!   is merged by rank.
//!
//! Merging keeps symbols in a linked list with a priority queue of candidate pairs, so a long
//! word costs O(n log n), not O(n²).

mod bpe;
mod chat;
mod pretok;
mod special;
mod spm;

use std::collections::HashMap;

use crate::gguf::{GgufError, GgufFile, GgufHeader};

pub use chat::{ChatTemplate, Message};
pub use pretok::PreTokenizer;

/// What can go wrong building or using a tokenizer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// The GGUF metadata lacks a key or has one of the wrong type.
    #[error("tokenizer metadata: {0}")]
    Gguf(#[from] GgufError),
    /// A tokenizer model kiln does not implement.
    #[error(
        "tokenizer model `{model}` is not supported: kiln implements `llama` (SentencePiece) and \
         `gpt2` (byte-level BPE)"
    )]
    UnsupportedModel { model: String },
    /// A BPE pre-tokenizer kiln does not implement.
    #[error(
        "BPE pre-tokenizer `{pre}` is not supported: kiln implements gpt-2, smollm (also \
         starcoder, refact), llama-bpe and qwen2"
    )]
    UnsupportedPre { pre: String },
    /// The vocabulary contradicts itself.
    #[error("the tokenizer vocabulary is invalid: {detail}; the GGUF file is corrupt")]
    BadVocab { detail: String },
    /// The chat template is not one kiln recognizes.
    #[error("{0}")]
    ChatTemplate(String),
}

/// What a token is, from `tokenizer.ggml.token_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    fn from_id(id: i32) -> TokenType {
        match id {
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Normal,
        }
    }
}

#[derive(Debug)]
enum Model {
    Spm {
        scores: Vec<f32>,
        add_space_prefix: bool,
    },
    Bpe {
        bpe: Box<bpe::Bpe>,
        pre: PreTokenizer,
    },
}

/// A tokenizer: text to token ids and back.
#[derive(Debug)]
pub struct Tokenizer {
    model: Model,
    /// Token texts as stored in the vocabulary.
    texts: Vec<String>,
    types: Vec<TokenType>,
    vocab: HashMap<String, u32>,
    /// The bytes each token stands for (control tokens: their text).
    pieces: Vec<Box<[u8]>>,
    /// For SPM, the `<0xXX>` token of each byte.
    byte_token: [u32; 256],
    /// Control, user-defined and unknown tokens, to find them in text.
    specials: special::SpecialTrie,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    eog: Vec<u32>,
    chat_template: Option<String>,
}

/// Token texts that end generation (llama.cpp's list, for the models kiln runs and their kin).
/// Like llama.cpp, kiln treats these tokens as control tokens whatever their stored type: they
/// are hidden by `decode` and only parsed from text with `parse_special`.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "<|end_of_text|>",
    "<eos>",
    "</s>",
    // Fill-in-the-middle padding, repository and file separators.
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<reponame>",
    "<|file_sep|>",
];

fn opt<T>(r: Result<T, GgufError>) -> Result<Option<T>, GgufError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(GgufError::MissingKey { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.*` metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        Self::from_header(file.header())
    }

    /// Builds the tokenizer from a parsed header (e.g. one streamed with
    /// [`GgufHeader::parse_prefix`]).
    pub fn from_header(h: &GgufHeader) -> Result<Tokenizer, TokenizerError> {
        let model_name = h.get_str("tokenizer.ggml.model")?;
        let texts = h.get_array_str("tokenizer.ggml.tokens")?.to_vec();
        let n = texts.len();
        let bad = |detail: String| TokenizerError::BadVocab { detail };
        if n == 0 || n > u32::MAX as usize {
            return Err(bad(format!("{n} tokens")));
        }
        let mut types: Vec<TokenType> = match opt(h.get_array_i32("tokenizer.ggml.token_type"))? {
            Some(t) if t.len() == n => t.iter().map(|&t| TokenType::from_id(t)).collect(),
            Some(t) => return Err(bad(format!("{} token types for {n} tokens", t.len()))),
            None => vec![TokenType::Normal; n],
        };
        let mut vocab = HashMap::with_capacity(n);
        for (i, t) in texts.iter().enumerate() {
            // The first of duplicate texts wins.
            vocab.entry(t.clone()).or_insert(i as u32);
        }
        let id_key = |key: &str| -> Result<Option<u32>, TokenizerError> {
            match opt(h.get_u32(key))? {
                Some(id) if id as usize >= n => {
                    Err(bad(format!("{key} = {id}, but there are {n} tokens")))
                }
                v => Ok(v),
            }
        };
        let bos = id_key("tokenizer.ggml.bos_token_id")?;
        let eos = id_key("tokenizer.ggml.eos_token_id")?;
        let unk = id_key("tokenizer.ggml.unknown_token_id")?;

        let (model, add_bos_default, byte_token, pieces) = match model_name {
            "llama" => {
                let scores = match opt(h.get_array_f32("tokenizer.ggml.scores"))? {
                    Some(s) if s.len() == n => s.to_vec(),
                    Some(s) => return Err(bad(format!("{} scores for {n} tokens", s.len()))),
                    None => vec![0.0; n],
                };
                let add_space_prefix =
                    opt(h.get_bool("tokenizer.ggml.add_space_prefix"))?.unwrap_or(true);
                let fallback = unk.unwrap_or(0);
                let mut byte_token = [fallback; 256];
                for (b, slot) in byte_token.iter_mut().enumerate() {
                    if let Some(&id) = vocab.get(&format!("<0x{b:02X}>")) {
                        *slot = id;
                    }
                }
                let pieces = texts
                    .iter()
                    .zip(&types)
                    .map(|(t, ty)| spm_piece(t, *ty))
                    .collect();
                (
                    Model::Spm {
                        scores,
                        add_space_prefix,
                    },
                    true,
                    byte_token,
                    pieces,
                )
            }
            "gpt2" => {
                let pre_name = opt(h.get_str("tokenizer.ggml.pre"))?.unwrap_or("default");
                let pre = PreTokenizer::from_name(pre_name).ok_or_else(|| {
                    TokenizerError::UnsupportedPre {
                        pre: pre_name.into(),
                    }
                })?;
                let chars = bpe::byte_chars();
                // Bytes whose char is not a token (SmolLM2 lacks a few control bytes) are
                // dropped when they occur, as llama.cpp does.
                let mut byte_token = [bpe::NO_TOKEN; 256];
                for (b, slot) in byte_token.iter_mut().enumerate() {
                    if let Some(&id) = vocab.get(&chars[b].to_string()) {
                        *slot = id;
                    }
                }
                let merges = opt(h.get_array_str("tokenizer.ggml.merges"))?.unwrap_or(&[]);
                let bpe = bpe::Bpe::new(merges, &vocab, byte_token);
                let mut char_byte = HashMap::with_capacity(256);
                for (b, c) in chars.iter().enumerate() {
                    char_byte.insert(*c, b as u8);
                }
                let pieces = texts
                    .iter()
                    .zip(&types)
                    .map(|(t, ty)| bpe_piece(t, *ty, &char_byte))
                    .collect();
                (
                    Model::Bpe {
                        bpe: Box::new(bpe),
                        pre,
                    },
                    pre.ignores_merges(),
                    byte_token,
                    pieces,
                )
            }
            other => {
                return Err(TokenizerError::UnsupportedModel {
                    model: other.into(),
                });
            }
        };
        let add_bos = opt(h.get_bool("tokenizer.ggml.add_bos_token"))?.unwrap_or(add_bos_default);
        let add_eos = opt(h.get_bool("tokenizer.ggml.add_eos_token"))?.unwrap_or(false);
        if add_bos && bos.is_none() {
            return Err(bad(
                "add_bos_token is set but there is no bos_token_id".into()
            ));
        }
        if add_eos && eos.is_none() {
            return Err(bad(
                "add_eos_token is set but there is no eos_token_id".into()
            ));
        }

        let mut eog: Vec<u32> = Vec::new();
        for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            eog.extend(id_key(key)?);
        }
        eog.extend(eos);
        for id in EOG_TEXTS.iter().filter_map(|t| vocab.get(*t).copied()) {
            eog.push(id);
            if matches!(
                types[id as usize],
                TokenType::Normal | TokenType::UserDefined
            ) {
                types[id as usize] = TokenType::Control;
            }
        }
        eog.sort_unstable();
        eog.dedup();

        let specials = special::SpecialTrie::new((0..n).filter_map(|i| {
            let special = matches!(
                types[i],
                TokenType::Control | TokenType::UserDefined | TokenType::Unknown
            );
            (special && !texts[i].is_empty()).then(|| (i as u32, texts[i].as_bytes()))
        }));

        let chat_template = opt(h.get_str("tokenizer.chat_template"))?.map(str::to_string);
        Ok(Tokenizer {
            model,
            texts,
            types,
            vocab,
            pieces,
            byte_token,
            specials,
            bos,
            eos,
            add_bos,
            add_eos,
            eog,
            chat_template,
        })
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.texts.len()
    }

    /// Beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// Whether `encode(.., add_special = true, ..)` prepends BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Tokens that end generation: EOS, end-of-turn tokens (`<|im_end|>`, `<end_of_turn>`, ...),
    /// and fill-in-the-middle separators. Sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// Whether `id` ends generation.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// The token's text as stored in the vocabulary (`▁` and byte-level chars included).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize).map(String::as_str)
    }

    /// The token of this vocabulary text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.get(text).copied()
    }

    /// What kind of token `id` is.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// The bytes the token stands for; control tokens give their text. Empty for ids outside the
    /// vocabulary.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize).map_or(&[], |p| p)
    }

    /// The model's chat template text, if it has one.
    pub fn chat_template_text(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The chat format for this model, from `tokenizer.chat_template` or, for files without one,
    /// from the turn tokens in the vocabulary.
    pub fn chat_template(&self) -> Result<ChatTemplate, TokenizerError> {
        ChatTemplate::detect(self.chat_template.as_deref(), |t| {
            self.vocab.contains_key(t)
        })
    }

    /// Whether decoding shows this token (control, unknown and unused tokens are hidden).
    fn shown(&self, id: u32) -> bool {
        matches!(
            self.types.get(id as usize),
            Some(TokenType::Normal | TokenType::UserDefined | TokenType::Byte)
        )
    }

    /// Text to token ids. `add_special` adds BOS/EOS where the metadata asks for them;
    /// `parse_special` turns control-token text such as `<|im_start|>` into its token.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        let mut prev_special = true;
        for frag in self.partition(text, parse_special) {
            match frag {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(t) => {
                    self.encode_text(t, prev_special, &mut out);
                    prev_special = false;
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    fn encode_text(&self, text: &str, prev_special: bool, out: &mut Vec<u32>) {
        match &self.model {
            Model::Spm {
                scores,
                add_space_prefix,
            } => {
                let mut s = String::with_capacity(text.len() + 3);
                if *add_space_prefix && prev_special {
                    s.push('▁');
                }
                for c in text.chars() {
                    s.push(if c == ' ' { '▁' } else { c });
                }
                spm::encode(&s, &self.vocab, scores, &self.byte_token, out);
            }
            Model::Bpe { bpe, pre } => {
                let whole_words = pre.ignores_merges();
                pre.split(text, |word| {
                    if whole_words && let Some(id) = self.bpe_whole_word(bpe, word) {
                        out.push(id);
                        return;
                    }
                    bpe.encode_word(word.as_bytes(), out);
                });
            }
        }
    }

    fn bpe_whole_word(&self, bpe: &bpe::Bpe, word: &str) -> Option<u32> {
        let mut s = String::with_capacity(word.len() * 2);
        for &b in word.as_bytes() {
            let id = bpe.byte_token[usize::from(b)];
            s.push_str(self.texts.get(id as usize)?);
        }
        self.vocab.get(&s).copied()
    }

    /// Cuts special tokens out of `text`, as llama.cpp does: each special token in turn, longest
    /// first, takes its non-overlapping occurrences, left to right, in the text not yet taken.
    fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        let bytes = text.as_bytes();
        // Every occurrence of every special token that applies.
        let mut found: Vec<(usize, u32, usize)> = Vec::new();
        for pos in 0..bytes.len() {
            self.specials.prefixes_of(&bytes[pos..], |id| {
                let user_defined = self.types[id as usize] == TokenType::UserDefined;
                if parse_special || user_defined {
                    // Sorts longest first, then by id, then left to right.
                    found.push((usize::MAX - self.texts[id as usize].len(), id, pos));
                }
            });
        }
        if found.is_empty() {
            return if text.is_empty() {
                Vec::new()
            } else {
                vec![Fragment::Text(text)]
            };
        }
        found.sort_unstable();
        let mut taken = vec![false; bytes.len()];
        let mut starts: Vec<(usize, u32)> = Vec::new();
        for (_, id, pos) in found {
            let end = pos + self.texts[id as usize].len();
            if taken[pos..end].iter().any(|&t| t) {
                continue;
            }
            taken[pos..end].fill(true);
            starts.push((pos, id));
        }
        starts.sort_unstable();
        let mut frags = Vec::with_capacity(2 * starts.len() + 1);
        let mut at = 0;
        for (pos, id) in starts {
            if pos > at {
                frags.push(Fragment::Text(&text[at..pos]));
            }
            frags.push(Fragment::Token(id));
            at = pos + self.texts[id as usize].len();
        }
        if at < text.len() {
            frags.push(Fragment::Text(&text[at..]));
        }
        frags
    }

    /// Token ids to text. Control, unknown and unused tokens are left out; bytes that are not
    /// valid UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids)).into_owned()
    }

    /// Token ids to raw bytes, as [`Tokenizer::decode`] without the UTF-8 repair.
    pub fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        for &id in ids {
            if self.shown(id) {
                out.extend_from_slice(self.token_bytes(id));
            }
        }
        out
    }

    /// A decoder that turns ids into text as they arrive.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder {
            tok: self,
            pending: Vec::new(),
        }
    }
}

enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

fn spm_piece(text: &str, ty: TokenType) -> Box<[u8]> {
    match ty {
        TokenType::Byte => {
            let hex = text.strip_prefix("<0x").and_then(|s| s.strip_suffix('>'));
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(b) => Box::new([b]),
                None => text.as_bytes().into(),
            }
        }
        TokenType::Normal => text.replace('▁', " ").into_bytes().into(),
        _ => text.as_bytes().into(),
    }
}

fn bpe_piece(text: &str, ty: TokenType, char_byte: &HashMap<char, u8>) -> Box<[u8]> {
    if ty != TokenType::Normal {
        return text.as_bytes().into();
    }
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match char_byte.get(&c) {
            Some(&b) => out.push(b),
            // Not a byte-level char: keep it as it is.
            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out.into()
}

/// Decodes ids one at a time into valid UTF-8, holding back a multi-byte char split across
/// tokens until its last byte arrives.
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    pending: Vec<u8>,
}

impl StreamDecoder<'_> {
    /// Adds a token; returns the text it completes (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        if self.tok.shown(id) {
            self.pending.extend_from_slice(self.tok.token_bytes(id));
        }
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(
                        std::str::from_utf8(&self.pending[..valid]).expect("checked prefix"),
                    );
                    match e.error_len() {
                        // An incomplete char at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // Bytes that can never be UTF-8.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: whatever is held back comes out, an incomplete char as U+FFFD.
    pub fn finish(self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }
}
