//! Reading the vocabulary and the special-token keys out of a GGUF file, with the checks
//! `Tokenizer::from_gguf` promises.

use super::TokenType;
use crate::gguf::GgufFile;
use crate::{Error, Result};
use hashbrown::HashTable;
use std::hash::{BuildHasher, RandomState};

/// The vocabulary arrays, checked.
pub(super) struct Vocab {
    pub(super) pieces: Pieces,
    pub(super) scores: Vec<f32>,
    pub(super) types: Vec<TokenType>,
}

/// The token texts, all in one buffer, and the index from text to id.
///
/// Gemma 3 has 262 144 tokens of 9 bytes on average. As one `String` per token plus a
/// `HashMap<String, u32>` of copies (llama.cpp's layout: `id_to_token` and `token_to_id`) they
/// cost about 33 MB of heap, mostly allocator headers and pointers; here they cost about 8 MB:
/// the text (2.4 MB), one end offset per token (1 MB) and a table of ids hashed by their text
/// (4 bytes and a control byte per slot, 2.6 MB).
#[derive(Clone)]
pub(super) struct Pieces {
    text: String,
    /// `ends[id]`: where token `id`'s text ends in `text`; it starts where `id - 1`'s ends.
    ends: Vec<u32>,
    index: HashTable<u32>,
    hasher: RandomState,
}

impl Pieces {
    /// Adds the next token; its id is the number of tokens before it. Returns the id of a
    /// token with the same text instead, if there is one (nothing is added then).
    fn push(&mut self, piece: &str) -> std::result::Result<u32, u32> {
        let id = self.ends.len() as u32;
        let hash = self.hasher.hash_one(piece);
        let (text, ends, hasher) = (&self.text, &self.ends, &self.hasher);
        let at = |id: u32| slice(text, ends, id);
        match self.index.entry(hash, |&other| at(other) == piece, |&other| hasher.hash_one(at(other))) {
            hashbrown::hash_table::Entry::Occupied(first) => Err(*first.get()),
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(id);
                self.text.push_str(piece);
                self.ends.push(self.text.len() as u32);
                Ok(id)
            }
        }
    }

    /// Number of tokens.
    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Token `id`'s text.
    pub(super) fn get(&self, id: u32) -> Option<&str> {
        ((id as usize) < self.ends.len()).then(|| slice(&self.text, &self.ends, id))
    }

    /// The id of the token spelled `piece`.
    pub(super) fn id(&self, piece: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(piece);
        self.index.find(hash, |&id| slice(&self.text, &self.ends, id) == piece).copied()
    }

    /// Each token's text, in id order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.ends.len() as u32).map(|id| slice(&self.text, &self.ends, id))
    }
}

/// Token `id`'s text; `id` must be below `ends.len()`.
fn slice<'a>(text: &'a str, ends: &[u32], id: u32) -> &'a str {
    let start = match id {
        0 => 0,
        _ => ends[id as usize - 1] as usize,
    };
    &text[start..ends[id as usize] as usize]
}

impl Vocab {
    pub(super) fn new(tokens: &[String], scores: &[f32], types: &[i32]) -> Result<Vocab> {
        let bad = |id: usize, piece: &str, why: String| Error::TokenizerBadToken { id, piece: piece.to_owned(), why };
        let mut pieces = Pieces {
            text: String::with_capacity(tokens.iter().map(String::len).sum()),
            ends: Vec::with_capacity(tokens.len()),
            index: HashTable::with_capacity(tokens.len()),
            hasher: RandomState::new(),
        };
        let mut token_types = Vec::with_capacity(tokens.len());
        for (id, ((token, &score), &ty)) in tokens.iter().zip(scores).zip(types).enumerate() {
            // Ids are i32 in llama.cpp; GGUF arrays hold at most 2^30 elements.
            let id32 = u32::try_from(id).map_err(|_| bad(id, token, "id beyond u32".into()))?;
            // llama.cpp renames an empty token instead of failing (`impl::load`).
            let renamed;
            let piece = match token.is_empty() {
                true => {
                    renamed = format!("[EMPTY_{id}]");
                    renamed.as_str()
                }
                false => token.as_str(),
            };
            if score.is_nan() {
                return Err(bad(id, token, "score is NaN".into()));
            }
            let ty = TokenType::from_i32(ty).ok_or_else(|| bad(id, token, format!("token type {ty} is not 0..=6")))?;
            if ty == TokenType::Byte && byte_of_piece(piece).is_none() {
                return Err(bad(id, token, "a BYTE token must be spelled <0xXX>".into()));
            }
            if u32::try_from(pieces.text.len() + piece.len()).is_err() {
                return Err(bad(id, token, "the token texts add up to more than 4 GiB".into()));
            }
            if let Err(first) = pieces.push(piece) {
                return Err(bad(id, token, format!("same text as token {first}")));
            }
            debug_assert_eq!(pieces.len(), id32 as usize + 1);
            token_types.push(ty);
        }
        Ok(Vocab { pieces, scores: scores.to_vec(), types: token_types })
    }
}

/// The byte a `<0xXX>` piece stands for.
pub(super) fn byte_of_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    match hex.len() {
        2 => u8::from_str_radix(hex, 16).ok(),
        _ => None,
    }
}

/// Byte fallback, as llama.cpp's `byte_to_token`: the token `<0xXX>` (upper-case hex), else
/// the byte itself as a one-character token, else `unk` (where llama.cpp would throw).
pub(super) fn byte_tokens(pieces: &Pieces, unk: u32) -> [u32; 256] {
    std::array::from_fn(|b| {
        let b = b as u8;
        let hex = format!("<0x{b:02X}>");
        let single = (b < 0x80).then(|| char::from(b).to_string());
        pieces.id(&hex).or_else(|| single.and_then(|s| pieces.id(&s))).unwrap_or(unk)
    })
}

/// A special token id: the key's value (which must be a token id), else `default` when that
/// is a token id (llama.cpp disables an out-of-range default), else `None`.
pub(super) fn special_id(
    file: &GgufFile,
    key: &'static str,
    default: Option<u32>,
    n_tokens: usize,
) -> Result<Option<u32>> {
    let in_range = |id: u32| (id as usize) < n_tokens;
    match optional(file.get_u32(key).map(Some), None)? {
        Some(id) if in_range(id) => Ok(Some(id)),
        Some(id) => Err(Error::TokenizerSpecialId { key, id: id.into(), n_tokens }),
        None => Ok(default.filter(|&id| in_range(id))),
    }
}

/// The value of an optional key: `default` when it is absent, an error when it has the
/// wrong type.
pub(super) fn optional<T>(value: std::result::Result<T, crate::gguf::GgufError>, default: T) -> Result<T> {
    match value {
        Ok(v) => Ok(v),
        Err(crate::gguf::GgufError::MissingKey { .. }) => Ok(default),
        Err(e) => Err(e.into()),
    }
}
