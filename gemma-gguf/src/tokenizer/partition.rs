//! Cutting special tokens out of a text before merging, with the result of llama.cpp's
//! `tokenizer_st_partition` (llama-cpp-sys-2 0.1.161, `src/llama-vocab.cpp`).
//!
//! llama.cpp takes the special tokens one at a time, longest first, and in every stretch of
//! text not yet claimed finds the token's occurrences left to right, each claimed occurrence
//! splitting its stretch. So a longer token wins over a shorter one anywhere in the text,
//! not only where both start at the same place.
//!
//! It searches each stretch for each token. We search the whole text once per token
//! ([`memchr::memmem`]) and remember, for every claimed byte, where its span ends. Because
//! tokens come longest first, every span claimed earlier is at least as long as the
//! occurrence at hand, so the occurrence overlaps one exactly when its first or last byte is
//! claimed; it is then skipped by jumping to that span's end, since no occurrence of the
//! same length starting before that end can fit in a free stretch. The cost is one pass over
//! the text per special token, and memory of one index per byte once a token has matched.
//!
//! Ties: llama.cpp orders tokens of equal length with `std::sort`, which leaves their order
//! unspecified; we take the lower id first. The order only matters when two special tokens
//! of the same length can overlap in a text (one ends with what the other starts with). In
//! Gemma 3's vocabulary none can: the runs of one whitespace character all differ in
//! length, and the tags (`<…>`, `[multimodal]`) have no bracket inside.

use super::spm::Idx;
use super::vocab::Pieces;
use super::TokenType;
use memchr::memmem::Finder;

/// The special tokens of one kind of search, in the order llama.cpp tries them.
#[derive(Clone, Debug)]
pub(super) struct Specials {
    /// (id, finder for its text), longest text first, then by id.
    tokens: Vec<(u32, Finder<'static>)>,
}

/// A piece of the partitioned text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fragment<'a> {
    /// Text to merge into tokens; never empty.
    Text(&'a str),
    /// A special token matched whole.
    Token(u32),
}

impl Specials {
    /// USER_DEFINED tokens, and with `parse_special` CONTROL and UNKNOWN tokens too (the
    /// tokens of llama.cpp's `cache_special_tokens`, filtered as `tokenizer_st_partition`
    /// filters them).
    pub(super) fn new(pieces: &Pieces, types: &[TokenType], parse_special: bool) -> Specials {
        let mut ids: Vec<u32> = (0..pieces.len() as u32)
            .filter(|&id| match types[id as usize] {
                TokenType::UserDefined => true,
                TokenType::Control | TokenType::Unknown => parse_special,
                _ => false,
            })
            .collect();
        // A stable sort: equal lengths keep id order.
        let text = |id: u32| pieces.get(id).unwrap_or_default();
        ids.sort_by_key(|&id| std::cmp::Reverse(text(id).len()));
        let tokens = ids.into_iter().map(|id| (id, Finder::new(text(id).as_bytes()).into_owned())).collect();
        Specials { tokens }
    }

    /// Calls `emit` with the special tokens of `text` and the text between them, in order.
    /// Empty text between two tokens is left out.
    pub(super) fn split<'a>(&self, text: &'a str, emit: impl FnMut(Fragment<'a>)) {
        match u32::try_from(text.len()) {
            Ok(n) if n < u32::MAX => self.split_with::<u32>(text, emit),
            _ => self.split_with::<usize>(text, emit),
        }
    }

    fn split_with<'a, I: Idx>(&self, text: &'a str, mut emit: impl FnMut(Fragment<'a>)) {
        let bytes = text.as_bytes();
        // For each claimed byte, the end of its span (0: not claimed; ends are ≥ 1).
        // Allocated at the first match.
        let mut span_end: Vec<I> = Vec::new();
        // (start, id) of every claimed span.
        let mut claims: Vec<(I, u32)> = Vec::new();
        for (id, finder) in &self.tokens {
            let len = finder.needle().len();
            let mut pos = 0;
            while let Some(found) = finder.find(&bytes[pos..]) {
                let start = pos + found;
                let end = start + len;
                if span_end.is_empty() {
                    span_end = vec![I::new(0); bytes.len()];
                }
                let overlap = [end - 1, start].into_iter().map(|i| span_end[i].get()).find(|&e| e != 0);
                match overlap {
                    Some(claimed_end) => pos = claimed_end,
                    None => {
                        span_end[start..end].fill(I::new(end));
                        claims.push((I::new(start), *id));
                        pos = end;
                    }
                }
            }
        }

        // Needles and text are valid UTF-8, so every match starts and ends on a character
        // boundary and the slices below cannot fail.
        claims.sort_unstable_by_key(|&(start, _)| start);
        let mut pos = 0;
        for (start, id) in claims {
            let start = start.get();
            if start > pos {
                emit(Fragment::Text(&text[pos..start]));
            }
            emit(Fragment::Token(id));
            pos = span_end[start].get();
        }
        if pos < text.len() {
            emit(Fragment::Text(&text[pos..]));
        }
    }
}
