//! Byte-level BPE (GPT-2 style): bytes map to printable chars, words merge by rank.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// GPT-2's byte to char table: printable Latin-1 bytes map to themselves, the other 68 bytes to
/// U+0100 upwards in byte order, so every byte is a visible char in the vocabulary.
pub(crate) fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff);
        table[usize::from(b)] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next).expect("U+0100..U+0143 are chars");
            next += 1;
            c
        };
    }
    table
}

/// Marks a byte whose char is not in the vocabulary.
pub(crate) const NO_TOKEN: u32 = u32::MAX;

/// Merge ranks by token pair, and the tokens every byte starts as.
#[derive(Debug)]
pub(crate) struct Bpe {
    /// `(left << 32 | right)` -> `(rank, merged token)`.
    merges: HashMap<u64, (u32, u32)>,
    /// The token of each byte's char, or [`NO_TOKEN`].
    pub(crate) byte_token: [u32; 256],
}

fn pair(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

impl Bpe {
    /// `merges` are `"left right"` strings in rank order; pairs whose parts or result are not
    /// tokens can never apply and are dropped.
    pub(crate) fn new(
        merges: &[String],
        vocab: &HashMap<String, u32>,
        byte_token: [u32; 256],
    ) -> Bpe {
        let mut map = HashMap::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let Some((a, b)) = m.split_once(' ') else {
                continue;
            };
            let (Some(&ia), Some(&ib), Some(&ir)) =
                (vocab.get(a), vocab.get(b), vocab.get(&format!("{a}{b}")))
            else {
                continue;
            };
            // The first (lowest) rank of a pair wins, as in a rank lookup by string.
            map.entry(pair(ia, ib)).or_insert((rank as u32, ir));
        }
        Bpe {
            merges: map,
            byte_token,
        }
    }

    /// Appends the tokens of one pre-tokenized word (raw bytes).
    pub(crate) fn encode_word(&self, word: &[u8], out: &mut Vec<u32>) {
        if word.len() == 1 {
            out.extend(Some(self.byte_token[usize::from(word[0])]).filter(|&t| t != NO_TOKEN));
            return;
        }
        // A doubly linked list of symbols over the word; merged-away symbols are marked dead.
        const NONE: usize = usize::MAX;
        struct Sym {
            id: u32,
            prev: usize,
            next: usize,
            alive: bool,
        }
        let n = word.len();
        let mut syms: Vec<Sym> = word
            .iter()
            .enumerate()
            .map(|(i, &b)| Sym {
                id: self.byte_token[usize::from(b)],
                prev: if i == 0 { NONE } else { i - 1 },
                next: if i + 1 == n { NONE } else { i + 1 },
                alive: true,
            })
            .collect();
        // Lowest rank first; among equal ranks, the leftmost pair.
        let mut heap = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<_>, syms: &[Sym], l: usize, r: usize| {
            if l == NONE || r == NONE {
                return;
            }
            if let Some(&(rank, id)) = self.merges.get(&pair(syms[l].id, syms[r].id)) {
                heap.push(Reverse((rank, l, r, syms[l].id, syms[r].id, id)));
            }
        };
        for i in 1..n {
            push(&mut heap, &syms, i - 1, i);
        }
        while let Some(Reverse((_, l, r, lid, rid, id))) = heap.pop() {
            // Skip pairs whose symbols changed since they were queued.
            let stale = !syms[l].alive
                || !syms[r].alive
                || syms[l].next != r
                || syms[l].id != lid
                || syms[r].id != rid;
            if stale {
                continue;
            }
            syms[l].id = id;
            syms[r].alive = false;
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
            // A byte without a token never merges (no pair has it) and is dropped here.
            if syms[i].id != NO_TOKEN {
                out.push(syms[i].id);
            }
            i = syms[i].next;
        }
    }
}
