//! From tokens back to text, as llama.cpp's `token_to_piece` and `llama_detokenize`
//! (llama-cpp-sys-2 0.1.161, `src/llama-vocab.cpp`).
//!
//! A token's bytes: a NORMAL token's text with `▁` turned back into spaces, a BYTE token's one
//! byte, a CONTROL, UNKNOWN or USER_DEFINED token's text as it is, nothing for UNUSED and
//! UNDEFINED ones. Text is assembled from bytes: one character may be spread over several
//! byte tokens (`<0xF0><0x9F><0x98><0x80>` is 😀), so a token on its own need not be valid
//! UTF-8. [`Decoder`] holds such a partial character back until it completes.

use super::{TokenType, Tokenizer, SPACE_MARK};
use std::borrow::Cow;

/// Every byte value, to lend a BYTE token's one byte as a slice.
static BYTES: [u8; 256] = {
    let mut all = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        all[i] = i as u8;
        i += 1;
    }
    all
};

impl Tokenizer {
    /// The bytes a token stands for (llama.cpp's `token_to_piece` with `special = true`):
    /// `▁` → space, `<0xXX>` → that byte, control tokens as their text. Empty for an id
    /// outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Cow<'_, [u8]> {
        let (Some(piece), Some(ty)) = (self.piece(id), self.token_type(id)) else {
            return Cow::Borrowed(&[]);
        };
        match ty {
            TokenType::Control | TokenType::Unknown | TokenType::UserDefined => Cow::Borrowed(piece.as_bytes()),
            TokenType::Normal if piece.contains(SPACE_MARK) => Cow::Owned(piece.replace(SPACE_MARK, " ").into_bytes()),
            TokenType::Normal => Cow::Borrowed(piece.as_bytes()),
            TokenType::Byte => {
                // Checked at load: a BYTE token is spelled <0xXX>.
                let b = super::vocab::byte_of_piece(piece).map_or(0, usize::from);
                Cow::Borrowed(&BYTES[b..b + 1])
            }
            TokenType::Unused | TokenType::Undefined => Cow::Borrowed(&[]),
        }
    }

    /// The bytes a token contributes to decoded text: [`token_bytes`](Self::token_bytes),
    /// but nothing for CONTROL and UNKNOWN tokens, and without one leading space for the
    /// first token when the vocabulary adds a space prefix.
    fn text_bytes(&self, id: u32, first: bool) -> Cow<'_, [u8]> {
        if self.token_type(id).is_some_and(TokenType::is_special) {
            return Cow::Borrowed(&[]);
        }
        let bytes = self.token_bytes(id);
        match bytes.strip_prefix(b" ") {
            Some(rest) if first && self.add_space_prefix => Cow::Owned(rest.to_vec()),
            _ => bytes,
        }
    }

    /// The text of `ids`, as llama.cpp's `llama_detokenize` with `remove_special = false`
    /// and `unparse_special = false`: control tokens (`<bos>`, `<end_of_turn>`) leave no
    /// text; for a `"gemma4"` vocabulary, llama.cpp's `clean_spaces` runs on the bytes
    /// (`"a ."` → `"a."`). Byte sequences that are not UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            bytes.extend_from_slice(&self.text_bytes(id, i == 0));
        }
        if self.clean_spaces {
            super::bpe::clean_spaces(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A streaming decoder: feed it tokens as they are generated.
    pub fn decoder(&self) -> Decoder<'_> {
        Decoder { tok: self, pending: Vec::new(), first: true }
    }
}

/// Decodes one token at a time and only ever returns complete UTF-8 text: the bytes of a
/// character split across tokens are held back until the character is complete
/// (BAD-INPUTS 22). The text of all [`push`](Self::push) calls followed by
/// [`finish`](Self::finish) equals [`Tokenizer::decode`] of all the tokens, except that for a
/// `"gemma4"` vocabulary it is the tokens' text without `clean_spaces` (what llama.cpp's
/// server streams, one `token_to_piece` at a time).
#[derive(Clone, Debug)]
pub struct Decoder<'t> {
    tok: &'t Tokenizer,
    /// Bytes of an incomplete character (at most 3).
    pending: Vec<u8>,
    first: bool,
}

impl Decoder<'_> {
    /// Adds a token; returns the text it completes, possibly empty. Bytes that can no
    /// longer become valid UTF-8 come out as U+FFFD, as in [`Tokenizer::decode`].
    pub fn push(&mut self, id: u32) -> String {
        let bytes = self.tok.text_bytes(id, self.first);
        self.first = false;
        self.pending.extend_from_slice(&bytes);
        let mut out = String::new();
        let mut rest = &self.pending[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    out.push_str(valid);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // Checked by from_utf8 just above.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        self.pending.drain(..self.pending.len() - keep);
        out
    }

    /// Whether bytes of an unfinished character are being held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Ends the stream: a character left incomplete comes out as U+FFFD.
    pub fn finish(self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }
}
