//! Several sequences in one graph: continuous batching. Each step can carry a token of
//! every generating sequence and chunks of prompts, so requests join and leave between
//! steps while the weights are read once per step for all of them.
#![forbid(unsafe_code)]

use super::Session;
use crate::error::{Error, Result};

/// One sequence's part of a batch for [`Session::decode_seqs`].
#[derive(Debug, Clone, Copy)]
pub struct SeqTokens<'a> {
    pub seq: u16,
    /// Fed after what the sequence holds.
    pub tokens: &'a [u32],
}

impl Session<'_> {
    /// Keeps the first `n` tokens of sequence `seq` and forgets the rest, so a prompt that
    /// shares only its start with what the sequence holds can reuse that start. `false`
    /// (nothing changed) when `n` is not below what the sequence holds, or when the cache no
    /// longer holds everything the next token would attend to.
    pub fn truncate_seq(&mut self, seq: u16, n: u32) -> bool {
        match self.n_past.get(seq as usize) {
            Some(&past) if n < past && self.kv.truncate_seq(seq, n) => {
                self.n_past[seq as usize] = n;
                true
            }
            _ => false,
        }
    }

    /// Feeds each entry's tokens after what its sequence holds, all in one graph (at most
    /// n_ubatch tokens together, each sequence at most once). `logits` (cleared first) gets
    /// one row of `n_vocab` per entry, in order: the logits after the entry's last token.
    /// A token attends only to its own sequence's cells.
    pub fn decode_seqs(&mut self, batch: &[SeqTokens<'_>], logits: &mut Vec<f32>) -> Result<()> {
        logits.clear();
        let n_vocab = self.model.n_vocab();
        let total: usize = batch.iter().map(|e| e.tokens.len()).sum();
        if batch.is_empty() || total > self.opts.n_ubatch as usize {
            return Err(Error::OutOfRange {
                what: "tokens in a batch of sequences",
                value: total.to_string(),
                why: "give 1 to n_ubatch tokens",
            });
        }
        let mut seen = vec![false; self.n_past.len()];
        for e in batch {
            let Some(past) = self.n_past.get(e.seq as usize) else {
                return Err(Error::OutOfRange {
                    what: "sequence id",
                    value: e.seq.to_string(),
                    why: "the session has fewer sequences",
                });
            };
            if std::mem::replace(&mut seen[e.seq as usize], true) || e.tokens.is_empty() {
                return Err(Error::OutOfRange {
                    what: "sequence in a batch",
                    value: e.seq.to_string(),
                    why: "each sequence comes once, with at least one token",
                });
            }
            if let Some(&id) = e.tokens.iter().find(|&&t| t >= n_vocab) {
                return Err(Error::BadToken { id, n_vocab });
            }
            if *past as usize + e.tokens.len() > self.n_ctx() as usize {
                return Err(Error::ContextOverflow { n_past: *past, n_new: e.tokens.len(), n_ctx: self.n_ctx() });
            }
        }
        let (mut tokens, mut positions, mut seqs, mut out) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for e in batch {
            let past = self.n_past[e.seq as usize] as i32;
            tokens.extend_from_slice(e.tokens);
            positions.extend((0..e.tokens.len() as i32).map(|i| past + i));
            seqs.extend(std::iter::repeat_n(e.seq, e.tokens.len()));
            out.push(tokens.len() as i32 - 1);
        }
        self.run_ubatch(&tokens, &positions, &seqs, Some(&out), logits)?;
        for e in batch {
            self.n_past[e.seq as usize] += e.tokens.len() as u32;
        }
        Ok(())
    }
}
