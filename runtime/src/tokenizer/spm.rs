//! SentencePiece-style merging by score, as llama.cpp's SPM tokenizer does it: start from UTF-8
//! chars, repeatedly merge the adjacent pair whose concatenation is the highest-scoring token,
//! and spell symbols that are not tokens as `<0xXX>` byte tokens.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

#[derive(PartialEq)]
struct Candidate {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        // Highest score first; among equal scores, the leftmost pair.
        self.score
            .total_cmp(&other.score)
            .then_with(|| Reverse(self.left).cmp(&Reverse(other.left)))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Appends the tokens of `text` (spaces already replaced by `▁`).
pub(crate) fn encode(
    text: &str,
    vocab: &HashMap<String, u32>,
    scores: &[f32],
    byte_token: &[u32; 256],
    out: &mut Vec<u32>,
) {
    const NONE: usize = usize::MAX;
    struct Sym {
        start: usize,
        len: usize,
        prev: usize,
        next: usize,
    }
    let mut syms: Vec<Sym> = Vec::new();
    for (i, c) in text.char_indices() {
        let k = syms.len();
        syms.push(Sym {
            start: i,
            len: c.len_utf8(),
            prev: k.wrapping_sub(1),
            next: k + 1,
        });
    }
    let Some(last) = syms.last_mut() else { return };
    last.next = NONE;
    if let Some(first) = syms.first_mut() {
        first.prev = NONE;
    }

    let mut heap = BinaryHeap::new();
    let push = |heap: &mut BinaryHeap<Candidate>, syms: &[Sym], l: usize, r: usize| {
        if l == NONE || r == NONE {
            return;
        }
        let (s, len) = (syms[l].start, syms[l].len + syms[r].len);
        if let Some(&id) = vocab.get(&text[s..s + len]) {
            let score = scores.get(id as usize).copied().unwrap_or(0.0);
            heap.push(Candidate {
                score,
                left: l,
                right: r,
                len,
            });
        }
    };
    for i in 1..syms.len() {
        push(&mut heap, &syms, i - 1, i);
    }
    while let Some(c) = heap.pop() {
        let (l, r) = (c.left, c.right);
        // Lengths only grow, so a pair whose lengths no longer add up is stale.
        if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != c.len {
            continue;
        }
        syms[l].len = c.len;
        syms[r].len = 0;
        let next = syms[r].next;
        syms[l].next = next;
        if next != NONE {
            syms[next].prev = l;
        }
        let prev = syms[l].prev;
        push(&mut heap, &syms, prev, l);
        push(&mut heap, &syms, l, next);
    }
    let mut i = 0;
    while i != NONE {
        let piece = &text[syms[i].start..syms[i].start + syms[i].len];
        match vocab.get(piece) {
            Some(&id) => out.push(id),
            None => out.extend(piece.bytes().map(|b| byte_token[usize::from(b)])),
        }
        i = syms[i].next;
    }
}
