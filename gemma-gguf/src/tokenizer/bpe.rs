//! Gemma 4's tokenizer: BPE merges by rank over raw UTF-8, as llama.cpp's
//! `llm_tokenizer_bpe_session` with `LLAMA_VOCAB_PRE_TYPE_GEMMA4` (llama-cpp-sys-2 0.1.161,
//! `src/llama-vocab.cpp`; the split is `unicode_regex_split_custom_newlines` in
//! `src/unicode.cpp`).
//!
//! A stretch of text between special tokens, its spaces already turned into `▁`, is cut into
//! *words*: runs of newlines and runs of anything else (the pre-tokenizer regex
//! `[^\n]+|[\n]+`). There is no GPT-2 byte-to-unicode mapping: symbols are UTF-8 characters.
//! In each word:
//! 1. A run of newlines that is itself a token stays one symbol (llama.cpp's "fix for gemma 4",
//!    PR 21343); any other word starts as one symbol per character.
//! 2. Every pair of neighbours named by a merge in `tokenizer.ggml.merges` is queued by the
//!    merge's rank (its index in the list), ties to the leftmost pair. The best pair is
//!    merged and the new symbol's two neighbouring pairs are queued; entries made stale by
//!    earlier merges are dropped when popped. O(n log n) per word, whatever the text.
//! 3. Each remaining symbol is its token; a character that is no token becomes the tokens
//!    `<0xXX>` of its bytes, and a byte without such a token is dropped, as llama.cpp drops it.
//!
//! Merges are checked at load (each names two tokens whose concatenation is a token, as
//! Hugging Face `tokenizers` requires of its `merges`), so the loop works on token ids:
//! every merged symbol is a token, and a pair is looked up by its two ids.

use super::spm::Idx;
use super::vocab::Pieces;
use super::SPACE_MARK;
use crate::{Error, Result};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// No token: a character outside the vocabulary.
const NO_ID: u32 = u32::MAX;

/// The merge table and the byte-fallback tokens of a BPE vocabulary.
#[derive(Clone, Debug)]
pub(super) struct Merges {
    /// (left id, right id) packed as `left << 32 | right` → (rank, id of the merged token).
    ranks: HashMap<u64, (u32, u32)>,
    /// The token `<0xXX>` for each byte (upper-case hex, as llama.cpp spells the lookup).
    bytes: [Option<u32>; 256],
}

fn pair(left: u32, right: u32) -> u64 {
    u64::from(left) << 32 | u64::from(right)
}

impl Merges {
    /// Reads `tokenizer.ggml.merges`: `"left right"`, split at the first space after the
    /// first byte (llama.cpp's `word.find(' ', 1)`). When a pair occurs twice the first rank
    /// counts (llama.cpp's `bpe_ranks.emplace`).
    pub(super) fn new(merges: &[String], pieces: &Pieces) -> Result<Merges> {
        let mut ranks = HashMap::with_capacity(merges.len());
        for (rank, merge) in merges.iter().enumerate() {
            let bad = |why: String| Error::TokenizerBadMerge { index: rank, merge: merge.clone(), why };
            let rank32 = u32::try_from(rank).map_err(|_| bad("more than 2^32 merges".into()))?;
            let space = merge.as_bytes().iter().skip(1).position(|&b| b == b' ').map(|p| p + 1);
            let Some(space) = space else {
                return Err(bad("no space separates two tokens".into()));
            };
            // A space is one byte, so both sides are whole characters.
            let (left, right) = (&merge[..space], &merge[space + 1..]);
            let id = |text: &str| pieces.id(text).ok_or_else(|| bad(format!("{text:?} is not a token")));
            let (l, r) = (id(left)?, id(right)?);
            let merged = id(&[left, right].concat())?;
            ranks.entry(pair(l, r)).or_insert((rank32, merged));
        }
        let bytes = std::array::from_fn(|b| pieces.id(&format!("<0x{b:02X}>")));
        Ok(Merges { ranks, bytes })
    }

    /// Number of distinct merges.
    pub(super) fn len(&self) -> usize {
        self.ranks.len()
    }
}

/// Appends the tokens of one stretch of text (no special tokens in it) to `out`.
pub(super) fn encode(merges: &Merges, pieces: &Pieces, text: &str, out: &mut Vec<u32>) {
    let escaped: String = text.chars().map(|c| if c == ' ' { SPACE_MARK } else { c }).collect();
    let mut session_u32 = None;
    let mut session_usize = None;
    for word in words(&escaped) {
        // One session per index width, reused across words for its buffers.
        match u32::try_from(word.len()) {
            Ok(n) if n < u32::MAX => {
                session_u32.get_or_insert_with(Session::<u32>::default).run(merges, pieces, word, out)
            }
            _ => session_usize.get_or_insert_with(Session::<usize>::default).run(merges, pieces, word, out),
        }
    }
}

/// Runs of `\n` and runs of anything else, in order.
fn words(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut start = 0;
    std::iter::from_fn(move || {
        let first = *bytes.get(start)?;
        let newline = first == b'\n';
        // '\n' is one byte and never inside a multi-byte character: cuts fall on boundaries.
        let len = bytes[start..].iter().position(|&b| (b == b'\n') != newline).unwrap_or(bytes.len() - start);
        let word = &text[start..start + len];
        start += len;
        Some(word)
    })
}

/// A run of the word; `len` 0 once merged into its left neighbour.
#[derive(Clone, Copy, Debug)]
struct Symbol<I> {
    start: I,
    len: I,
    prev: I,
    next: I,
    /// The token this run is, or [`NO_ID`].
    id: u32,
}

/// A queued merge of `left` and `right`, whose ids were `ids` when queued: if either symbol
/// has changed since, the entry is stale.
#[derive(Clone, Copy, Debug)]
struct Bigram<I> {
    rank: u32,
    left: I,
    right: I,
    ids: (u32, u32),
    merged: u32,
}

impl<I: Idx> Ord for Bigram<I> {
    /// The max-heap's top is the lowest rank, then the leftmost pair (llama.cpp's
    /// `llm_bigram_bpe::comparator`).
    fn cmp(&self, other: &Self) -> Ordering {
        other.rank.cmp(&self.rank).then_with(|| other.left.cmp(&self.left))
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

struct Session<I> {
    symbols: Vec<Symbol<I>>,
    queue: BinaryHeap<Bigram<I>>,
}

impl<I> Default for Session<I> {
    fn default() -> Self {
        Session { symbols: Vec::new(), queue: BinaryHeap::new() }
    }
}

impl<I: Idx> Session<I> {
    fn run(&mut self, merges: &Merges, pieces: &Pieces, word: &str, out: &mut Vec<u32>) {
        self.symbols.clear();
        self.queue.clear();
        let whole_newlines = word.bytes().all(|b| b == b'\n').then(|| pieces.id(word)).flatten();
        match whole_newlines {
            Some(id) => self.symbols.push(Symbol {
                start: I::new(0),
                len: I::new(word.len()),
                prev: I::NONE,
                next: I::NONE,
                id,
            }),
            None => self.split_chars(pieces, word),
        }
        for i in 1..self.symbols.len() {
            self.try_add_bigram(merges, I::new(i - 1));
        }
        while let Some(b) = self.queue.pop() {
            let (left, right) = (b.left.get(), b.right.get());
            let (l, r) = (self.symbols[left], self.symbols[right]);
            if l.len.get() == 0 || r.len.get() == 0 || (l.id, r.id) != b.ids {
                continue;
            }
            // Merge the right symbol into the left one and unlink it.
            self.symbols[left].len = I::new(l.len.get() + r.len.get());
            self.symbols[left].id = b.merged;
            self.symbols[left].next = r.next;
            self.symbols[right].len = I::new(0);
            if r.next != I::NONE {
                self.symbols[r.next.get()].prev = b.left;
            }
            if l.prev != I::NONE {
                self.try_add_bigram(merges, l.prev);
            }
            self.try_add_bigram(merges, b.left);
        }
        self.emit(merges, word, out);
    }

    fn split_chars(&mut self, pieces: &Pieces, word: &str) {
        let n = word.chars().count();
        let mut buf = [0u8; 4];
        for (i, (start, c)) in word.char_indices().enumerate() {
            self.symbols.push(Symbol {
                start: I::new(start),
                len: I::new(c.len_utf8()),
                prev: if i == 0 { I::NONE } else { I::new(i - 1) },
                next: if i + 1 == n { I::NONE } else { I::new(i + 1) },
                id: pieces.id(c.encode_utf8(&mut buf)).unwrap_or(NO_ID),
            });
        }
    }

    /// Queues the merge of symbol `left` with its right neighbour, if a merge names them.
    fn try_add_bigram(&mut self, merges: &Merges, left: I) {
        let l = self.symbols[left.get()];
        if l.next == I::NONE || l.id == NO_ID {
            return;
        }
        let r = self.symbols[l.next.get()];
        if r.id == NO_ID {
            return;
        }
        if let Some(&(rank, merged)) = merges.ranks.get(&pair(l.id, r.id)) {
            self.queue.push(Bigram { rank, left, right: l.next, ids: (l.id, r.id), merged });
        }
    }

    /// Appends each remaining symbol's token, or its bytes' tokens.
    fn emit(&self, merges: &Merges, word: &str, out: &mut Vec<u32>) {
        let mut i = if self.symbols.is_empty() { I::NONE } else { I::new(0) };
        while i != I::NONE {
            let s = self.symbols[i.get()];
            match s.id {
                NO_ID => {
                    let text = &word.as_bytes()[s.start.get()..s.start.get() + s.len.get()];
                    out.extend(text.iter().filter_map(|&b| merges.bytes[b as usize]));
                }
                id => out.push(id),
            }
            i = s.next;
        }
    }
}

/// llama.cpp's `clean_spaces` passes over detokenized bytes (`llama_vocab::impl::detokenize`),
/// which BPE vocabularies such as Gemma 4's turn on, in three passes each over the last's
/// output: drop a space before `?`, `!`, `.` or `,`; turn ` ' ` into `'`; drop the space
/// before `'s`, `'m`, `'re`, `'ve` (not `'t`, `'d`, `'ll`). The first byte always stays.
pub(super) fn clean_spaces(text: &mut Vec<u8>) {
    let t = std::mem::take(text);
    let mut pass1 = Vec::with_capacity(t.len());
    for (i, &x) in t.iter().enumerate() {
        if i > 0 && t[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            pass1.pop();
        }
        pass1.push(x);
    }

    let t = pass1;
    let mut pass2 = Vec::with_capacity(t.len());
    pass2.extend(t.first());
    // llama.cpp overwrites the space it skips after ` '` with NUL, so that byte no longer
    // counts as a space before the next apostrophe.
    let (mut i, mut prev_blanked) = (1, false);
    while i < t.len() {
        let x = t[i];
        let prev_space = !prev_blanked && t[i - 1] == b' ';
        if x == b'\'' && prev_space && t.get(i + 1) == Some(&b' ') {
            pass2.pop();
            pass2.push(x);
            (i, prev_blanked) = (i + 2, true);
        } else {
            pass2.push(x);
            (i, prev_blanked) = (i + 1, false);
        }
    }

    let t = pass2;
    let mut pass3 = Vec::with_capacity(t.len());
    for (i, &x) in t.iter().enumerate() {
        if i > 0 && t[i - 1] == b' ' && x == b'\'' {
            // " 's", " 'm", " 're", " 've" (llama.cpp keeps the space of " 't", " 'd", " 'll").
            let drop = matches!((t.get(i + 1), t.get(i + 2)), (Some(b's' | b'm'), _) | (Some(b'r' | b'v'), Some(b'e')));
            if drop {
                pass3.pop();
            }
        }
        pass3.push(x);
    }
    *text = pass3;
}
