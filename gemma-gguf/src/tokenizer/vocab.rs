//! Reading the vocabulary and the special-token keys out of a GGUF file, with the checks
//! `Tokenizer::from_gguf` promises.

use super::TokenType;
use crate::gguf::GgufFile;
use crate::{Error, Result};
use std::collections::HashMap;

/// The vocabulary arrays, checked.
pub(super) struct Vocab {
    pub(super) pieces: Vec<String>,
    pub(super) scores: Vec<f32>,
    pub(super) types: Vec<TokenType>,
    pub(super) piece_to_id: HashMap<String, u32>,
}

impl Vocab {
    pub(super) fn new(tokens: &[String], scores: &[f32], types: &[i32]) -> Result<Vocab> {
        let bad = |id: usize, piece: &str, why: String| Error::TokenizerBadToken { id, piece: piece.to_owned(), why };
        let mut pieces = Vec::with_capacity(tokens.len());
        let mut token_types = Vec::with_capacity(tokens.len());
        let mut piece_to_id = HashMap::with_capacity(tokens.len());
        for (id, ((token, &score), &ty)) in tokens.iter().zip(scores).zip(types).enumerate() {
            // Ids are i32 in llama.cpp; GGUF arrays hold at most 2^30 elements.
            let id32 = u32::try_from(id).map_err(|_| bad(id, token, "id beyond u32".into()))?;
            // llama.cpp renames an empty token instead of failing (`impl::load`).
            let piece = match token.is_empty() {
                true => format!("[EMPTY_{id}]"),
                false => token.clone(),
            };
            if score.is_nan() {
                return Err(bad(id, token, "score is NaN".into()));
            }
            let ty = TokenType::from_i32(ty).ok_or_else(|| bad(id, token, format!("token type {ty} is not 0..=6")))?;
            if ty == TokenType::Byte && byte_of_piece(&piece).is_none() {
                return Err(bad(id, token, "a BYTE token must be spelled <0xXX>".into()));
            }
            if let Some(first) = piece_to_id.insert(piece.clone(), id32) {
                return Err(bad(id, token, format!("same text as token {first}")));
            }
            pieces.push(piece);
            token_types.push(ty);
        }
        Ok(Vocab { pieces, scores: scores.to_vec(), types: token_types, piece_to_id })
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
pub(super) fn byte_tokens(piece_to_id: &HashMap<String, u32>, unk: u32) -> [u32; 256] {
    std::array::from_fn(|b| {
        let b = b as u8;
        let hex = format!("<0x{b:02X}>");
        let single = (b < 0x80).then(|| char::from(b).to_string());
        piece_to_id.get(&hex).or_else(|| single.and_then(|s| piece_to_id.get(&s))).copied().unwrap_or(unk)
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
