//! SentencePiece-style merging by score, as llama.cpp's `llm_tokenizer_spm_session`
//! (llama-cpp-sys-2 0.1.161, `src/llama-vocab.cpp`), which follows SentencePiece's BPE
//! encoder.
//!
//! The text (spaces already turned into `▁`) starts as one symbol per character in a linked
//! list. Every pair of neighbours whose concatenation is a token goes into a priority queue,
//! keyed by that token's score, ties going to the leftmost pair. The best pair is merged and
//! the new symbol's two neighbouring pairs are queued; entries made stale by earlier merges
//! are recognised when popped and dropped. Each merge costs O(log n), so a text of n
//! characters takes O(n log n), whatever it contains (BAD-INPUTS 20).
//!
//! Every merged symbol is a token by construction. A symbol left unmerged is one character:
//! its token if the vocabulary has one, else one byte token per UTF-8 byte. (llama.cpp's
//! recursive `resegment` also looks a symbol up in its merge history, which for a single
//! character is always empty, so no recursion is needed here.)

use super::Tokenizer;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt::Debug;

/// Index type of the per-text work arrays: u32 for texts under 4 GiB, halving their
/// memory; usize beyond.
pub(super) trait Idx: Copy + Ord + Debug {
    const NONE: Self;
    /// `v` must fit: callers pick the type from the text's length.
    fn new(v: usize) -> Self;
    fn get(self) -> usize;
}

impl Idx for u32 {
    const NONE: u32 = u32::MAX;
    fn new(v: usize) -> u32 {
        debug_assert!(v < u32::MAX as usize);
        v as u32
    }
    fn get(self) -> usize {
        self as usize
    }
}

impl Idx for usize {
    const NONE: usize = usize::MAX;
    fn new(v: usize) -> usize {
        v
    }
    fn get(self) -> usize {
        self
    }
}

/// A run of the text; `len` 0 once merged into its left neighbour.
#[derive(Clone, Copy, Debug)]
struct Symbol<I> {
    start: I,
    len: I,
    prev: I,
    next: I,
}

/// A candidate merge of `left` with its right neighbour into a token of `score`. `size` is
/// the bytes of both when queued: if they no longer add up to it, one of them has changed
/// since and the entry is stale.
#[derive(Clone, Copy, Debug)]
struct Bigram<I> {
    score: f32,
    left: I,
    size: I,
}

impl<I: Idx> Ord for Bigram<I> {
    /// Higher score first, then the leftmost pair (llama.cpp's `llm_bigram_spm::comparator`).
    /// Scores are never NaN (rejected at load), so comparing with `<` is a total order;
    /// unlike `total_cmp` it treats -0.0 and 0.0 as equal, as C++ does.
    fn cmp(&self, other: &Self) -> Ordering {
        if self.score < other.score {
            Ordering::Less
        } else if self.score > other.score {
            Ordering::Greater
        } else {
            other.left.cmp(&self.left)
        }
    }
}

impl<I: Idx> PartialOrd for Bigram<I> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<I: Idx> PartialEq for Bigram<I> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<I: Idx> Eq for Bigram<I> {}

/// Appends the tokens of `text` (spaces already escaped) to `out`.
pub(super) fn encode(tok: &Tokenizer, text: &str, out: &mut Vec<u32>) {
    match u32::try_from(text.len()) {
        Ok(n) if n < u32::MAX => Session::<u32>::new(tok, text).run(out),
        _ => Session::<usize>::new(tok, text).run(out),
    }
}

struct Session<'a, I> {
    tok: &'a Tokenizer,
    text: &'a str,
    symbols: Vec<Symbol<I>>,
    queue: BinaryHeap<Bigram<I>>,
}

impl<'a, I: Idx> Session<'a, I> {
    fn new(tok: &'a Tokenizer, text: &'a str) -> Self {
        let n = text.chars().count();
        let mut symbols = Vec::with_capacity(n);
        for (i, (start, c)) in text.char_indices().enumerate() {
            symbols.push(Symbol {
                start: I::new(start),
                len: I::new(c.len_utf8()),
                prev: if i == 0 { I::NONE } else { I::new(i - 1) },
                next: if i + 1 == n { I::NONE } else { I::new(i + 1) },
            });
        }
        Session { tok, text, symbols, queue: BinaryHeap::new() }
    }

    fn run(mut self, out: &mut Vec<u32>) {
        for i in 1..self.symbols.len() {
            self.try_add_bigram(I::new(i - 1));
        }
        while let Some(bigram) = self.queue.pop() {
            let left = bigram.left.get();
            let right = self.symbols[left].next;
            if self.symbols[left].len.get() == 0 || right == I::NONE {
                continue;
            }
            let right = right.get();
            let (l, r) = (self.symbols[left], self.symbols[right]);
            if l.len.get() + r.len.get() != bigram.size.get() {
                continue;
            }
            // Merge the right symbol into the left one and unlink it.
            self.symbols[left].len = I::new(l.len.get() + r.len.get());
            self.symbols[left].next = r.next;
            self.symbols[right].len = I::new(0);
            if r.next != I::NONE {
                self.symbols[r.next.get()].prev = I::new(left);
            }
            if l.prev != I::NONE {
                self.try_add_bigram(l.prev);
            }
            self.try_add_bigram(I::new(left));
        }
        self.emit(out);
    }

    /// Queues the merge of symbol `left` with its right neighbour, if that is a token.
    fn try_add_bigram(&mut self, left: I) {
        let l = self.symbols[left.get()];
        if l.next == I::NONE {
            return;
        }
        let r = self.symbols[l.next.get()];
        let size = l.len.get() + r.len.get();
        if size > self.tok.max_piece_len {
            return;
        }
        let start = l.start.get();
        if let Some(id) = self.tok.pieces.id(&self.text[start..start + size]) {
            self.queue.push(Bigram { score: self.tok.scores[id as usize], left, size: I::new(size) });
        }
    }

    /// Appends each remaining symbol's token, or its bytes' tokens.
    fn emit(&self, out: &mut Vec<u32>) {
        let mut i = if self.symbols.is_empty() { I::NONE } else { I::new(0) };
        while i != I::NONE {
            let s = self.symbols[i.get()];
            let piece = &self.text[s.start.get()..s.start.get() + s.len.get()];
            match self.tok.pieces.id(piece) {
                Some(id) => out.push(id),
                None => out.extend(piece.bytes().map(|b| self.tok.byte_tokens[b as usize])),
            }
            i = s.next;
        }
    }
}
