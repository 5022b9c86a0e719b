//! A byte trie of special-token texts, to find every special token that starts at a position
//! without testing each of them (Gemma 3 has over 6,000, most starting with `<`).

#[derive(Debug, Default)]
struct Node {
    /// Children by next byte, sorted by byte.
    children: Vec<(u8, u32)>,
    /// The token whose text ends here (the lowest id, if several share a text).
    token: Option<u32>,
}

#[derive(Debug)]
pub(crate) struct SpecialTrie {
    nodes: Vec<Node>,
}

impl SpecialTrie {
    /// Builds the trie from `(id, text)` pairs given in increasing id order.
    pub(crate) fn new<'a>(tokens: impl IntoIterator<Item = (u32, &'a [u8])>) -> SpecialTrie {
        let mut nodes = vec![Node::default()];
        for (id, text) in tokens {
            let mut at = 0usize;
            for &b in text {
                at = match nodes[at].children.binary_search_by_key(&b, |c| c.0) {
                    Ok(i) => nodes[at].children[i].1 as usize,
                    Err(i) => {
                        let next = nodes.len();
                        nodes[at].children.insert(i, (b, next as u32));
                        nodes.push(Node::default());
                        next
                    }
                };
            }
            nodes[at].token.get_or_insert(id);
        }
        SpecialTrie { nodes }
    }

    /// Calls `found` with every token whose text starts `text` (shortest first).
    pub(crate) fn prefixes_of(&self, text: &[u8], mut found: impl FnMut(u32)) {
        let mut at = 0usize;
        for &b in text {
            match self.nodes[at].children.binary_search_by_key(&b, |c| c.0) {
                Ok(i) => at = self.nodes[at].children[i].1 as usize,
                Err(_) => return,
            }
            if let Some(id) = self.nodes[at].token {
                found(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_all_prefixes_and_keeps_the_lowest_id() {
        let t = SpecialTrie::new([(1, &b"<a>"[..]), (2, b"<a>b"), (3, b"<b>"), (4, b"<a>")]);
        let mut v = Vec::new();
        t.prefixes_of(b"<a>bc", |id| v.push(id));
        assert_eq!(v, [1, 2]);
        v.clear();
        t.prefixes_of(b"<c>", |id| v.push(id));
        assert!(v.is_empty());
    }
}
