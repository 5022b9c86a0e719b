//! Pre-tokenizers of byte-level BPE models: the regexes that cut text into words before merging,
//! written as small state machines over chars (no regex engine).
//!
//! Character classes follow llama.cpp's: `\p{L}` and `\p{N}` are Unicode general categories,
//! `\s` is Unicode White_Space, and unassigned code points belong to no class.

use unicode_general_category::{GeneralCategory as Gc, get_general_category};

/// Which pre-tokenizer a BPE model uses (`tokenizer.ggml.pre`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    Gpt2,
    /// SmolLM2, StarCoder, Refact: every `\p{N}` on its own, then GPT-2's regex.
    Smollm,
    /// Llama 3: case-insensitive contractions, `[^\r\n\p{L}\p{N}]?\p{L}+`, digits in groups of
    /// up to 3, punctuation runs with trailing newlines, newline runs, then whitespace.
    Llama3,
    /// Qwen2: Llama 3's regex with every digit on its own.
    Qwen2,
}

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` name, if kiln implements it.
    pub fn from_name(name: &str) -> Option<PreTokenizer> {
        Some(match name {
            "gpt-2" | "phi-2" | "roberta-bpe" => PreTokenizer::Gpt2,
            "smollm" | "starcoder" | "refact" => PreTokenizer::Smollm,
            "llama3" | "llama-v3" | "llama-bpe" => PreTokenizer::Llama3,
            "qwen2" | "deepseek-r1-qwen" => PreTokenizer::Qwen2,
            _ => return None,
        })
    }

    /// Llama 3 takes a whole word from the vocabulary before trying merges.
    pub(crate) fn ignores_merges(self) -> bool {
        self == PreTokenizer::Llama3
    }

    /// Cuts `text` into words, calling `word` on each in order.
    pub fn split<'t>(self, text: &'t str, mut word: impl FnMut(&'t str)) {
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let mut emit = |lo: usize, hi: usize| {
            let start = chars[lo].0;
            let end = chars.get(hi).map_or(text.len(), |c| c.0);
            word(&text[start..end]);
        };
        let cs: Vec<char> = chars.iter().map(|c| c.1).collect();
        match self {
            PreTokenizer::Gpt2 => gpt2(&cs, 0, &mut emit),
            PreTokenizer::Llama3 => llama3(&cs, 0, 3, &mut emit),
            PreTokenizer::Qwen2 => llama3(&cs, 0, 1, &mut emit),
            PreTokenizer::Smollm => {
                // First pass: every number char is a piece of its own; the rest are split by GPT-2.
                let mut start = 0;
                for i in 0..cs.len() {
                    if class(cs[i]).number {
                        if start < i {
                            gpt2(&cs[start..i], start, &mut emit);
                        }
                        emit(i, i + 1);
                        start = i + 1;
                    }
                }
                if start < cs.len() {
                    gpt2(&cs[start..], start, &mut emit);
                }
            }
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Class {
    letter: bool,
    number: bool,
    space: bool,
    /// False for unassigned code points and past the end of the piece.
    defined: bool,
}

fn is_space(c: char) -> bool {
    matches!(
        c,
        '\u{9}'..='\u{d}'
            | ' '
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

fn class(c: char) -> Class {
    let gc = get_general_category(c);
    Class {
        letter: matches!(
            gc,
            Gc::UppercaseLetter
                | Gc::LowercaseLetter
                | Gc::TitlecaseLetter
                | Gc::ModifierLetter
                | Gc::OtherLetter
        ),
        number: matches!(gc, Gc::DecimalNumber | Gc::LetterNumber | Gc::OtherNumber),
        space: is_space(c),
        defined: gc != Gc::Unassigned,
    }
}

/// A piece of text being split: chars plus their classes, with "nothing" past the end.
struct Piece<'a> {
    cs: &'a [char],
}

impl Piece<'_> {
    fn at(&self, i: usize) -> Option<char> {
        self.cs.get(i).copied()
    }
    fn class(&self, i: usize) -> Class {
        self.at(i).map(class).unwrap_or_default()
    }
    fn is_other(&self, i: usize) -> bool {
        let c = self.class(i);
        !(c.space || c.letter || c.number) && c.defined
    }
    /// Length of a contraction (`'s`, `'re`, ...) at `i`, or 0.
    fn contraction(&self, i: usize, fold_case: bool) -> usize {
        if self.at(i) != Some('\'') {
            return 0;
        }
        let lower = |c: Option<char>| c.map(|c| if fold_case { c.to_ascii_lowercase() } else { c });
        match (lower(self.at(i + 1)), lower(self.at(i + 2))) {
            (Some('s' | 't' | 'm' | 'd'), _) => 2,
            (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => 3,
            _ => 0,
        }
    }
    fn spaces_from(&self, i: usize) -> usize {
        self.cs[i..].iter().take_while(|&&c| is_space(c)).count()
    }
}

/// GPT-2's regex over `cs`; `base` is the index of `cs[0]` in the whole text.
fn gpt2(cs: &[char], base: usize, emit: &mut impl FnMut(usize, usize)) {
    let p = Piece { cs };
    let n = cs.len();
    let mut pos = 0;
    while pos < n {
        let start = pos;
        let c = cs[pos];
        let k = p.contraction(pos, false);
        if k > 0 {
            pos += k;
        } else {
            // ` ?X+` where X is letters, numbers or "other": the optional space joins the run.
            let q = pos + usize::from(c == ' ');
            let cq = p.class(q);
            if cq.letter {
                pos = q + cs[q..].iter().take_while(|&&c| class(c).letter).count();
            } else if cq.number {
                pos = q + cs[q..].iter().take_while(|&&c| class(c).number).count();
            } else if p.is_other(q) {
                pos = q;
                while p.is_other(pos) {
                    pos += 1;
                }
            } else {
                let w = p.spaces_from(pos);
                pos += if w > 1 && pos + w < n {
                    // `\s+(?!\S)`: leave the last space to start the next word.
                    w - 1
                } else {
                    w.max(1)
                };
            }
        }
        emit(base + start, base + pos);
    }
}

/// Llama 3's regex over `cs` with numbers in groups of up to `digits`.
fn llama3(cs: &[char], base: usize, digits: usize, emit: &mut impl FnMut(usize, usize)) {
    let p = Piece { cs };
    let n = cs.len();
    let mut pos = 0;
    while pos < n {
        let start = pos;
        let c = cs[pos];
        let cl = class(c);
        let k = p.contraction(pos, true);
        // ` ?[^\s\p{L}\p{N}]`: the char after an optional space is "other"; llama.cpp asks the
        // first char (not the one after the space) to be assigned.
        let starts_other = {
            let cq = p.class(pos + usize::from(c == ' '));
            !(cq.space || cq.letter || cq.number) && cl.defined
        };
        if k > 0 {
            pos += k;
        } else if !(c == '\r' || c == '\n' || cl.number) && (cl.letter || p.class(pos + 1).letter) {
            // `[^\r\n\p{L}\p{N}]?\p{L}+`
            pos += 1;
            while p.class(pos).letter {
                pos += 1;
            }
        } else if cl.number {
            // `\p{N}{1,digits}`
            while pos < n && pos - start < digits && p.class(pos).number {
                pos += 1;
            }
        } else if starts_other {
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            pos += usize::from(c == ' ');
            while p.is_other(pos) {
                pos += 1;
            }
            while matches!(p.at(pos), Some('\r' | '\n')) {
                pos += 1;
            }
        } else {
            let w = p.spaces_from(pos);
            let last_newline = (pos..pos + w).rev().find(|&i| matches!(cs[i], '\r' | '\n'));
            pos = if let Some(i) = last_newline {
                // `\s*[\r\n]+`
                i + 1
            } else if w > 1 && pos + w < n {
                // `\s+(?!\S)`
                pos + w - 1
            } else {
                // `\s+`, or a char no rule takes
                pos + w.max(1)
            };
        }
        emit(base + start, base + pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: PreTokenizer, text: &str) -> Vec<&str> {
        let mut v = Vec::new();
        pre.split(text, |w| v.push(w));
        v
    }

    #[test]
    fn gpt2_words() {
        assert_eq!(
            words(PreTokenizer::Gpt2, "Hello  world's 123!!\n"),
            ["Hello", " ", " world", "'s", " 123", "!!", "\n"]
        );
    }

    #[test]
    fn digit_rules() {
        assert_eq!(words(PreTokenizer::Llama3, "1234567"), ["123", "456", "7"]);
        assert_eq!(words(PreTokenizer::Qwen2, "123"), ["1", "2", "3"]);
        assert_eq!(words(PreTokenizer::Smollm, "a 12"), ["a", " ", "1", "2"]);
    }

    #[test]
    fn llama3_newlines_and_prefix() {
        assert_eq!(
            words(PreTokenizer::Llama3, "x\n\n  y.\n z"),
            ["x", "\n\n", " ", " y", ".\n", " z"]
        );
    }
}
