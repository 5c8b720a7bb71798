//! The tokenizers of Gemma GGUF files, rebuilt from the vocabulary in the file:
//! - `tokenizer.ggml.model = "llama"` (Gemma 1–3): llama.cpp's SentencePiece-style tokenizer,
//!   merging by score (`spm.rs`);
//! - `tokenizer.ggml.model = "gemma4"` (Gemma 4, as llama.cpp's converter writes it): BPE by
//!   the ranks of `tokenizer.ggml.merges` over raw UTF-8 (`bpe.rs`).
//!
//! [`TokenizerModel::from_gguf`] says which one a file asks for.
//!
//! The reference is llama.cpp's `src/llama-vocab.cpp` (the copy vendored in
//! `llama-cpp-sys-2` 0.1.161): `llm_tokenizer_spm_session`, `llm_tokenizer_bpe_session`,
//! `tokenizer_st_partition`, `impl::load`, `impl::tokenize`, `impl::token_to_piece` and
//! `impl::detokenize`. The tests compare a committed corpus with libllama itself and with
//! Hugging Face (`tests/tests/tokenizer.rs`, `tests/tests/tokenizer_gemma4.rs`).
//!
//! Encoding a text, as llama.cpp does it:
//! 1. **Special tokens are cut out first** (`partition.rs`). USER_DEFINED tokens (Gemma: runs
//!    of 2–31 spaces, of 1–31 newlines or tabs, some HTML tags, `<start_of_image>`; in Gemma 4
//!    also `<|channel>`, `<|tool_call>`, `<|"|>`, … which llama.cpp's converter types so) are
//!    always matched whole. CONTROL and UNKNOWN tokens (`<bos>`, `<start_of_turn>`, `<|turn>`,
//!    `<unk>`, …) only with [`Tokenizer::encode_with_special`], never by [`Tokenizer::encode`]:
//!    user text that contains `<start_of_turn>` is tokenized as the characters it is made of.
//!    Types are the file's, as llama.cpp corrects them by text (`quirks.rs`: `</s>` is control
//!    in Gemma 3 and normal in Gemma 4; `<turn|>`, `<|tool_response>` are control).
//! 2. **Each remaining piece of text** has its spaces replaced by `▁` (U+2581), then:
//!    - `"llama"`: a leading `▁` when `add_space_prefix` says so (false for Gemma 3) and the
//!      piece follows a special token or starts the text; characters merged pairwise, best
//!      score first; characters in no token fall back to byte tokens `<0xXX>`, else `<unk>`.
//!    - `"gemma4"`: cut into runs of newlines and runs of other characters; in each, merges
//!      applied lowest rank first; characters in no token fall back to `<0xXX>`, and a byte
//!      with no such token is dropped. No space prefix; `add_bos_token` is forced on, as
//!      llama.cpp forces it.
//!
//! Decoding ([`Tokenizer::token_bytes`], [`Tokenizer::decode`], [`Decoder`]) turns `▁` back into
//! spaces and byte tokens into their byte; text is assembled from bytes so that a character
//! split over two byte tokens comes out whole. For `"gemma4"`, [`Tokenizer::decode`] also
//! applies llama.cpp's `clean_spaces` (`" ?"` → `"?"`, …), as `llama_detokenize` does, while
//! the streaming [`Decoder`] gives each token's text unchanged, as llama.cpp's server streams
//! `token_to_piece`.
//!
//! Generation ends on llama.cpp's end-of-generation set ([`Tokenizer::is_end_of_generation`]):
//! EOS, EOT and the tokens llama.cpp recognises by text (`<eos>`, `<end_of_turn>`, `<turn|>`,
//! `<|tool_response>`, `</s>` unless Gemma 4's normal one, …).

mod bpe;
mod decode;
mod partition;
mod quirks;
mod spm;
mod vocab;

#[cfg(test)]
mod tests;

pub use decode::Decoder;

use crate::gguf::GgufFile;
use crate::{Error, Result};
use vocab::{byte_tokens, optional, special_id, Vocab};

/// GGUF keys of the tokenizer, from the crate's one name table.
pub use crate::names::tokenizer as keys;

/// `tokenizer.ggml.model` of Gemma 1–3: SentencePiece-style merges by score.
pub const MODEL_LLAMA: &str = "llama";
/// `tokenizer.ggml.model` of Gemma 4 (llama.cpp's converter): BPE merges by rank.
pub const MODEL_GEMMA4: &str = "gemma4";

/// Which tokenizer a GGUF file asks for in `tokenizer.ggml.model`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerModel {
    /// `"llama"`: SentencePiece-style, merges by score (Gemma 1–3).
    Llama,
    /// `"gemma4"`: BPE with `tokenizer.ggml.merges`, pre-tokenizer `gemma4` (Gemma 4).
    Gemma4,
}

impl TokenizerModel {
    /// The model named by `tokenizer.ggml.model`; [`Error::TokenizerUnsupportedModel`] for
    /// any other value. llama.cpp ignores `tokenizer.ggml.pre` for `"gemma4"` (it forces the
    /// pre-tokenizer `gemma4`), and so do we.
    pub fn from_gguf(file: &GgufFile) -> Result<TokenizerModel> {
        match file.get_str(keys::MODEL)? {
            MODEL_LLAMA => Ok(TokenizerModel::Llama),
            MODEL_GEMMA4 => Ok(TokenizerModel::Gemma4),
            model => Err(Error::TokenizerUnsupportedModel { model: model.to_owned() }),
        }
    }

    /// The value of `tokenizer.ggml.model`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenizerModel::Llama => MODEL_LLAMA,
            TokenizerModel::Gemma4 => MODEL_GEMMA4,
        }
    }
}

/// Defaults llama.cpp uses when a key is absent (`llama_vocab::impl::load`, llama-cpp-sys-2
/// 0.1.161). For `"gemma4"` it has no default BOS, EOS or UNK: we require the first two.
mod defaults {
    pub const BOS_ID: u32 = 1;
    pub const EOS_ID: u32 = 2;
    pub const UNK_ID: u32 = 0;
    pub const ADD_BOS: bool = true;
    pub const ADD_EOS: bool = false;
    /// True for SPM; every Gemma file made by `convert_hf_to_gguf.py` says false.
    pub const ADD_SPACE_PREFIX: bool = true;
    /// False for BPE vocabularies (only decoding reads it there).
    pub const ADD_SPACE_PREFIX_BPE: bool = false;
}

/// The text of Gemma's end-of-turn token, found by text when the file has no
/// `tokenizer.ggml.eot_token_id` (as llama.cpp does).
pub const END_OF_TURN: &str = "<end_of_turn>";
/// The text of Gemma's start-of-turn token.
pub const START_OF_TURN: &str = "<start_of_turn>";
/// Gemma 4's start of a turn (it replaced `<start_of_turn>`, same id 105).
pub const TURN_START: &str = "<|turn>";
/// Gemma 4's end of a turn (it replaced `<end_of_turn>`, same id 106).
pub const TURN_END: &str = "<turn|>";

/// A token's type, as stored in `tokenizer.ggml.token_type` (llama.cpp's `llama_token_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    Undefined = 0,
    Normal = 1,
    /// `<unk>`: special, never parsed from user text.
    Unknown = 2,
    /// `<bos>`, `<start_of_turn>`…: only ever inserted by id or by the chat format.
    Control = 3,
    /// Matched whole wherever it occurs in text, before any merging.
    UserDefined = 4,
    Unused = 5,
    /// `<0xXX>`: one byte, for characters no other token covers.
    Byte = 6,
}

impl TokenType {
    fn from_i32(v: i32) -> Option<TokenType> {
        use TokenType::*;
        Some(match v {
            0 => Undefined,
            1 => Normal,
            2 => Unknown,
            3 => Control,
            4 => UserDefined,
            5 => Unused,
            6 => Byte,
            _ => return None,
        })
    }

    /// Whether llama.cpp keeps the token's text out of plain decoding (`token_to_piece`
    /// with `special = false` renders CONTROL and UNKNOWN tokens as nothing).
    pub fn is_special(self) -> bool {
        matches!(self, TokenType::Control | TokenType::Unknown)
    }
}

/// A Gemma tokenizer built from a GGUF vocabulary: SentencePiece-style (`"llama"`) or BPE
/// (`"gemma4"`), see the module doc.
#[derive(Clone)]
pub struct Tokenizer {
    /// Token texts and the index from text to id; an empty text is renamed `[EMPTY_<id>]`
    /// as llama.cpp does.
    pieces: vocab::Pieces,
    scores: Vec<f32>,
    types: Vec<TokenType>,
    /// Longest piece in bytes: no merge can produce a longer token.
    max_piece_len: usize,
    /// The token for each byte value, for characters no token covers.
    byte_tokens: [u32; 256],
    /// Special tokens matched in text before merging, longest first (see [`partition`]).
    user_defined: partition::Specials,
    /// Those plus CONTROL and UNKNOWN tokens, for [`Tokenizer::encode_with_special`].
    all_special: partition::Specials,
    /// `"gemma4"`: the merge table (`None` for `"llama"`).
    merges: Option<bpe::Merges>,
    model: TokenizerModel,
    bos: u32,
    eos: u32,
    eot: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    /// End-of-generation ids, sorted (llama.cpp's `special_eog_ids`).
    eog: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    /// llama.cpp's `clean_spaces` when detokenizing: on for BPE vocabularies.
    clean_spaces: bool,
}

impl Tokenizer {
    /// Builds the tokenizer from a GGUF file's `tokenizer.*` keys.
    ///
    /// Fails with the offending key, token or merge when `tokenizer.ggml.model` is neither
    /// `"llama"` nor `"gemma4"`, when `tokens`, `scores` (f32) and `token_type` (i32) are
    /// missing, mistyped or of different lengths, when a special token id is outside the
    /// vocabulary, and when a token is duplicated, has a NaN score, an unknown type, or is a
    /// BYTE token not spelled `<0xXX>`. `"gemma4"` also needs `merges` (strings, each two
    /// tokens whose concatenation is a token) and `bos_token_id`, `eos_token_id`. Absent
    /// optional keys take llama.cpp's defaults (for `"llama"`: BOS 1, EOS 2, UNK 0, add BOS,
    /// add a space prefix).
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer> {
        let model = TokenizerModel::from_gguf(file)?;
        let tokens = file.get_str_array(keys::TOKENS)?;
        let scores = file.get_f32_array(keys::SCORES)?;
        let types = file.get_i32_array(keys::TOKEN_TYPE)?;
        let n_tokens = tokens.len();
        for (key, len) in [(keys::SCORES, scores.len()), (keys::TOKEN_TYPE, types.len())] {
            if len != n_tokens {
                return Err(Error::TokenizerArrayLength { key, len, n_tokens });
            }
        }
        let mut vocab = Vocab::new(tokens, scores, types)?;
        let merges = match model {
            TokenizerModel::Llama => None,
            TokenizerModel::Gemma4 => Some(bpe::Merges::new(file.get_str_array(keys::MERGES)?, &vocab.pieces)?),
        };

        let id = |key, default| special_id(file, key, default, n_tokens);
        // llama.cpp's defaults are for "llama" only; "gemma4" has none.
        let llama = model == TokenizerModel::Llama;
        let bos = required_id(file, keys::BOS_ID, llama.then_some(defaults::BOS_ID), n_tokens)?;
        let eos = required_id(file, keys::EOS_ID, llama.then_some(defaults::EOS_ID), n_tokens)?;
        quirks::apply(&vocab.pieces, &mut vocab.types, eos);
        let unk = id(keys::UNK_ID, llama.then_some(defaults::UNK_ID))?;
        let pad = id(keys::PAD_ID, None)?;
        let eot_key = id(keys::EOT_ID, None)?;
        let eot = eot_key.or_else(|| vocab.pieces.id(END_OF_TURN)).or_else(|| vocab.pieces.id(TURN_END));
        let flag = |key, default| optional(file.get_bool(key), default);
        let (add_space_prefix, clean_spaces) = match model {
            TokenizerModel::Llama => (flag(keys::ADD_SPACE_PREFIX, defaults::ADD_SPACE_PREFIX)?, false),
            TokenizerModel::Gemma4 => (flag(keys::ADD_SPACE_PREFIX, defaults::ADD_SPACE_PREFIX_BPE)?, true),
        };
        // llama.cpp forces add_bos on for Gemma 4 (PR 21500); the key is still type-checked.
        let add_bos = flag(keys::ADD_BOS, defaults::ADD_BOS)? || model == TokenizerModel::Gemma4;

        Ok(Tokenizer {
            byte_tokens: byte_tokens(&vocab.pieces, unk.unwrap_or(0)),
            user_defined: partition::Specials::new(&vocab.pieces, &vocab.types, false),
            all_special: partition::Specials::new(&vocab.pieces, &vocab.types, true),
            max_piece_len: vocab.pieces.iter().map(str::len).max().unwrap_or(0),
            eog: quirks::end_of_generation(&vocab.pieces, eos, eot_key),
            pieces: vocab.pieces,
            scores: vocab.scores,
            types: vocab.types,
            merges,
            model,
            bos,
            eos,
            eot,
            unk,
            pad,
            add_bos,
            add_eos: flag(keys::ADD_EOS, defaults::ADD_EOS)?,
            add_space_prefix,
            clean_spaces,
        })
    }

    /// Tokenizes user text. Control tokens are never recognised in it: `"<bos>"` becomes
    /// the tokens of the characters `<`, `bos`, `>`; the chat format inserts control tokens
    /// by id ([`token_id`](Self::token_id), [`bos`](Self::bos), …). USER_DEFINED tokens are
    /// matched, as llama.cpp does.
    ///
    /// `add_special` is llama.cpp's flag of that name: when true, BOS is prepended if the
    /// vocabulary's `add_bos_token` says so (true for Gemma) and EOS appended if
    /// `add_eos_token` does (false for Gemma).
    pub fn encode(&self, text: &str, add_special: bool) -> Vec<u32> {
        self.encode_impl(text, add_special, &self.user_defined)
    }

    /// Like [`encode`](Self::encode), but CONTROL and UNKNOWN tokens written in `text` are
    /// recognised too (llama.cpp's `parse_special = true`). For text the program writes
    /// itself, such as a chat template — never for user text. It searches for each of the
    /// vocabulary's special tokens in turn (6 400 for Gemma 3), so it is meant for short
    /// text.
    pub fn encode_with_special(&self, text: &str, add_special: bool) -> Vec<u32> {
        self.encode_impl(text, add_special, &self.all_special)
    }

    fn encode_impl(&self, text: &str, add_special: bool, specials: &partition::Specials) -> Vec<u32> {
        let mut out = Vec::new();
        if add_special && self.add_bos {
            out.push(self.bos);
        }
        // llama.cpp adds the space prefix to text at the start or right after a special token.
        let mut prev_special = true;
        let mut escaped = String::new();
        specials.split(text, |fragment| match fragment {
            partition::Fragment::Token(id) => {
                out.push(id);
                prev_special = true;
            }
            partition::Fragment::Text(piece) => {
                match &self.merges {
                    Some(merges) => bpe::encode(merges, &self.pieces, piece, &mut out),
                    None => {
                        escaped.clear();
                        if self.add_space_prefix && prev_special {
                            escaped.push(SPACE_MARK);
                        }
                        escaped.extend(piece.chars().map(|c| if c == ' ' { SPACE_MARK } else { c }));
                        spm::encode(self, &escaped, &mut out);
                    }
                }
                prev_special = false;
            }
        });
        if add_special && self.add_eos {
            out.push(self.eos);
        }
        out
    }

    /// The id of the token spelled exactly `piece` (`"<start_of_turn>"`, `"▁the"`), of any type.
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.pieces.id(piece)
    }

    /// The token's text as stored in the vocabulary (`▁` for spaces, `<0x0A>` for bytes).
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id)
    }

    /// The token's type as llama.cpp uses it: the file's, except for the few tokens llama.cpp
    /// retypes by their text (Gemma 3's `</s>` becomes a control token; see `quirks.rs`).
    /// `None` for an id outside the vocabulary.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// The token's score (higher merges first).
    pub fn score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    /// Number of tokens in the vocabulary; every id is below it.
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// Beginning of sequence (`<bos>`, id 2 in Gemma).
    pub fn bos(&self) -> u32 {
        self.bos
    }

    /// End of sequence (`<eos>`, id 1 in Gemma).
    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// End of turn: `tokenizer.ggml.eot_token_id`, else the token `<end_of_turn>` (106 in
    /// Gemma 1–3), else `<turn|>` (106 in Gemma 4), else `None`.
    pub fn end_of_turn(&self) -> Option<u32> {
        self.eot
    }

    /// The token `<start_of_turn>` (105 in Gemma 1–3), else `<|turn>` (Gemma 4), if the
    /// vocabulary has either.
    pub fn start_of_turn(&self) -> Option<u32> {
        self.token_id(START_OF_TURN).or_else(|| self.token_id(TURN_START))
    }

    /// Whether generation stops at this token: llama.cpp's `llama_vocab_is_eog` (EOS, the
    /// file's EOT, and the end-of-generation tokens llama.cpp finds by text; see `quirks.rs`).
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// Every end-of-generation id, sorted.
    pub fn end_of_generation_ids(&self) -> &[u32] {
        &self.eog
    }

    /// The tokenizer `tokenizer.ggml.model` asked for.
    pub fn model(&self) -> TokenizerModel {
        self.model
    }

    /// Number of merges (`"gemma4"`; 0 for `"llama"`).
    pub fn n_merges(&self) -> usize {
        self.merges.as_ref().map_or(0, bpe::Merges::len)
    }

    pub fn unk(&self) -> Option<u32> {
        self.unk
    }

    pub fn pad(&self) -> Option<u32> {
        self.pad
    }

    /// Whether `encode(text, true)` starts with BOS (`tokenizer.ggml.add_bos_token`).
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// `tokenizer.ggml.add_space_prefix` (false for Gemma 3).
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }
}

/// A special id the tokenizer cannot do without (BOS, EOS): the key's value, else the
/// default; with no default the key must be there, and its absence is the error.
fn required_id(file: &GgufFile, key: &'static str, default: Option<u32>, n_tokens: usize) -> Result<u32> {
    match default {
        Some(default) => special_id(file, key, Some(default), n_tokens)?.ok_or(Error::TokenizerSpecialId {
            key,
            id: default.into(),
            n_tokens,
        }),
        None => {
            let id = file.get_u32(key)?;
            special_id(file, key, None, n_tokens)?.ok_or(Error::TokenizerSpecialId { key, id: id.into(), n_tokens })
        }
    }
}

/// A summary: the vocabulary itself is 262 144 tokens in Gemma 3.
impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("model", &self.model)
            .field("vocab_size", &self.vocab_size())
            .field("n_merges", &self.n_merges())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("eot", &self.eot)
            .field("unk", &self.unk)
            .field("pad", &self.pad)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .field("add_space_prefix", &self.add_space_prefix)
            .field("eog", &self.eog)
            .finish_non_exhaustive()
    }
}

/// SentencePiece's stand-in for a space, U+2581 LOWER ONE EIGHTH BLOCK.
pub const SPACE_MARK: char = '\u{2581}';
