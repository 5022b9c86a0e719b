//! Token choice on the GPU: the chosen id lands in a token buffer, where the next step's
//! embedding reads it, so a decode step reads back only 4 bytes.

use crate::error::Result;
use crate::gpu::{KernelKey, Recorder, View};
use crate::ops::need;

pub fn argmax_key() -> KernelKey {
    KernelKey::new("argmax").uint("WG_SIZE", 256)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    slot: u32,
}

/// `tokens[slot] = argmax(logits[0..n])`, the lowest index on ties.
pub fn argmax(
    rec: &mut Recorder,
    logits: View<'_>,
    tokens: View<'_>,
    n: u32,
    slot: u32,
) -> Result<()> {
    need("argmax", "logits", &logits, u64::from(n) * 4)?;
    need("argmax", "tokens", &tokens, (u64::from(slot) + 1) * 4)?;
    let kernel = rec.gpu().kernel(&argmax_key())?;
    rec.dispatch(&kernel, [1, 1, 1], &Params { n, slot }, &[logits, tokens])
}
