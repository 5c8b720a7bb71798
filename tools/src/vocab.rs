//! Tokenizer files → the GGUF vocabulary (`tokenizer.ggml.*`, llama.cpp's SentencePiece
//! dialect: `model = "llama"`, where scores decide merges).
//!
//! Sources, in llama.cpp's order of preference (its converter's `_set_vocab_sentencepiece`
//! reads `tokenizer.model` when present):
//! - `tokenizer.model`, the SentencePiece model: pieces, scores and types as they are;
//! - `tokenizer.json`, read with the `tokenizers` crate. Gemma's is a byte-fallback BPE whose
//!   merges are ordered by the ids of the pieces they make (checked on the real Gemma 3
//!   tokenizer: 514 906 merges, ids never decrease), so ranking pieces by id reproduces the
//!   merge order: a normal piece's score is `-id`. Added tokens marked special become
//!   control tokens, other added tokens user-defined ones (score -1000, as llama.cpp
//!   writes them), `<0xXX>` pieces byte tokens (score 0).
//!
//! Special ids come from `tokenizer_config.json` (token strings) or `config.json` (ids); the
//! chat template from `chat_template.jinja` or `tokenizer_config.json`.
//!
//! Gemma 4 files use llama.cpp's `gemma4` tokenizer instead (`tokenizer.ggml.model =
//! "gemma4"`, a BPE that reads `tokenizer.ggml.merges`; src/llama-vocab.cpp, llama-cpp-sys-2
//! 0.1.161), so for them the vocabulary always comes from `tokenizer.json` and carries its
//! merges; as upstream's converter does (`Gemma4Model.set_vocab`), the channel, tool-call
//! and tool-response delimiters are user-defined tokens (rendered in the output so a chat
//! parser can read them) and no space prefix is added.
use crate::config::Arch;
use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// llama.cpp's token types (`enum llama_token_type` in include/llama.h).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// Score of control and user-defined tokens, as llama.cpp's converter writes them.
const SPECIAL_SCORE: f32 = -1000.0;

/// Gemma 4 tokens written as user-defined rather than control, so that they are rendered
/// (upstream llama.cpp `conversion/gemma.py`, `Gemma4Model.set_vocab`, `visible_tokens`).
pub const GEMMA4_VISIBLE_TOKENS: &[&str] =
    &["<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>", "<|\"|>"];

/// More merges than any Gemma tokenizer has (Gemma 3: 514 906).
const MAX_MERGES: usize = 1 << 22;

/// The vocabulary and tokenizer settings for the GGUF.
#[derive(Clone, Debug, Default)]
pub struct Vocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    pub chat_template: Option<String>,
    /// BPE merges `"left right"` (Gemma 4 only), in rank order.
    pub merges: Option<Vec<String>>,
    /// Which file the pieces came from, for the summary.
    pub source: String,
}

impl Vocab {
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Reads the tokenizer files of `dir`; `config_ids` are config.json's (bos, eos, pad).
    pub fn read(dir: &Path, config_ids: (Option<u32>, Option<u32>, Option<u32>), arch: Arch) -> Result<Self> {
        let spm = dir.join("tokenizer.model");
        let json = dir.join("tokenizer.json");
        let mut vocab = if arch == Arch::Gemma4 {
            if !json.is_file() {
                return Err(Error::NotACheckpoint {
                    dir: dir.to_owned(),
                    what: "no tokenizer.json (Gemma 4's GGUF tokenizer needs its BPE merges)".into(),
                });
            }
            gemma4_vocab(&json)?
        } else if spm.is_file() {
            from_sentencepiece(&spm)?
        } else if json.is_file() {
            from_tokenizer_json(&json)?
        } else {
            return Err(Error::NotACheckpoint {
                dir: dir.to_owned(),
                what: "no tokenizer.json or tokenizer.model".into(),
            });
        };
        let tc_path = dir.join("tokenizer_config.json");
        let tc: Option<Value> = if tc_path.is_file() {
            let text = std::fs::read_to_string(&tc_path).map_err(|e| Error::io(&tc_path, e))?;
            Some(
                serde_json::from_str(&text)
                    .map_err(|e| Error::BadTokenizer { path: tc_path.clone(), what: format!("not valid JSON: {e}") })?,
            )
        } else {
            None
        };
        let index: HashMap<&str, u32> = vocab.tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i as u32)).collect();
        let named = |key: &str| -> Option<u32> {
            let v = tc.as_ref()?.get(key)?;
            let s = v.as_str().or_else(|| v.get("content").and_then(|c| c.as_str()))?;
            index.get(s).copied()
        };
        let (bos, eos, pad) = (named("bos_token"), named("eos_token"), named("pad_token"));
        let unk = named("unk_token");
        vocab.bos = bos.or(config_ids.0).or(vocab.bos);
        vocab.eos = eos.or(config_ids.1).or(vocab.eos);
        vocab.pad = pad.or(config_ids.2).or(vocab.pad);
        vocab.unk = unk.or(vocab.unk);
        let flag = |key: &str, default: bool| {
            tc.as_ref().and_then(|t| t.get(key)).and_then(|v| v.as_bool()).unwrap_or(default)
        };
        // Gemma 4: always, as upstream's converter writes it.
        vocab.add_bos = arch == Arch::Gemma4 || flag("add_bos_token", true);
        vocab.add_eos = flag("add_eos_token", false);

        let jinja = dir.join("chat_template.jinja");
        vocab.chat_template = if jinja.is_file() {
            Some(std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?)
        } else {
            tc.as_ref().and_then(|t| t.get("chat_template")).and_then(template_of)
        };
        for (what, id) in [("bos", vocab.bos), ("eos", vocab.eos), ("unk", vocab.unk), ("pad", vocab.pad)] {
            if let Some(id) = id {
                if id as usize >= vocab.len() {
                    return Err(Error::BadTokenizer {
                        path: dir.to_owned(),
                        what: format!("{what} token id {id} is outside the vocabulary of {}", vocab.len()),
                    });
                }
            }
        }
        Ok(vocab)
    }
}

/// A chat template given as a string, or as a list of named templates (take "default").
fn template_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .or_else(|| list.first())
            .and_then(|t| t.get("template"))
            .and_then(|t| t.as_str())
            .map(str::to_owned),
        _ => None,
    }
}

fn is_byte_piece(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 6 && s.starts_with("<0x") && s.ends_with('>') && b[3].is_ascii_hexdigit() && b[4].is_ascii_hexdigit()
}

fn from_tokenizer_json(path: &Path) -> Result<Vocab> {
    use tokenizers::models::ModelWrapper;
    let bad = |what: String| Error::BadTokenizer { path: path.to_owned(), what };
    let tk = tokenizers::Tokenizer::from_file(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let (byte_fallback, unigram_scores): (bool, Option<Vec<f64>>) = match tk.get_model() {
        ModelWrapper::BPE(bpe) => (bpe.byte_fallback, None),
        ModelWrapper::Unigram(u) => (u.byte_fallback(), Some(u.iter().map(|(_, s)| *s).collect())),
        _ => {
            return Err(bad(
                "only BPE (byte-fallback) and Unigram tokenizers map to GGUF's SentencePiece vocabulary".into()
            ))
        }
    };
    let model_vocab = tk.get_vocab(false);
    let added = tk.get_added_tokens_decoder();
    let n = model_vocab.values().chain(added.keys()).map(|&id| id as usize + 1).max().unwrap_or(0);
    if n == 0 {
        return Err(bad("the vocabulary is empty".into()));
    }
    if n > 1 << 22 {
        return Err(bad(format!("{n} tokens is more than any Gemma has")));
    }
    let mut tokens: Vec<Option<String>> = vec![None; n];
    for (piece, &id) in &model_vocab {
        tokens[id as usize] = Some(piece.clone());
    }
    let mut types = vec![token_type::NORMAL; n];
    let mut scores = vec![0f32; n];
    for (i, piece) in tokens.iter().enumerate() {
        scores[i] = match &unigram_scores {
            Some(s) => s.get(i).copied().unwrap_or(0.0) as f32,
            None => -(i as f32),
        };
        if byte_fallback && piece.as_deref().is_some_and(is_byte_piece) {
            types[i] = token_type::BYTE;
            scores[i] = 0.0;
        }
    }
    for (&id, tok) in added.iter() {
        let i = id as usize;
        tokens[i] = Some(tok.content.clone());
        types[i] = if tok.special { token_type::CONTROL } else { token_type::USER_DEFINED };
        scores[i] = SPECIAL_SCORE;
    }
    let mut unk = None;
    if let ModelWrapper::BPE(bpe) = tk.get_model() {
        if let Some(u) = bpe.get_unk_token() {
            unk = model_vocab.get(u).or_else(|| added.iter().find(|(_, t)| &t.content == u).map(|(id, _)| id)).copied();
        }
    }
    if let Some(u) = unk {
        if types[u as usize] == token_type::NORMAL {
            types[u as usize] = token_type::UNKNOWN;
        }
    }
    let tokens = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.unwrap_or_else(|| {
                types[i] = token_type::UNUSED;
                scores[i] = SPECIAL_SCORE;
                format!("[PAD{i}]")
            })
        })
        .collect();

    // The `tokenizers` crate does not expose the normalizer's parts: read the JSON for a
    // `Prepend("▁")`, which is what SentencePiece's add_dummy_prefix becomes.
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let json: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let add_space_prefix = json.get("normalizer").is_some_and(has_prepend);

    Ok(Vocab { tokens, scores, types, unk, add_space_prefix, source: "tokenizer.json".into(), ..Vocab::default() })
}

/// `tokenizer.json` for llama.cpp's `gemma4` tokenizer: pieces, types, and the merges.
fn gemma4_vocab(path: &Path) -> Result<Vocab> {
    let mut v = from_tokenizer_json(path)?;
    let bad = |what: String| Error::BadTokenizer { path: path.to_owned(), what };
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let json: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let model = json.get("model").ok_or_else(|| bad("no `model`".into()))?;
    if model.get("type").and_then(|t| t.as_str()) != Some("BPE") {
        return Err(bad("Gemma 4 needs a BPE `model` (llama.cpp's gemma4 tokenizer is BPE)".into()));
    }
    let merges = model.get("merges").and_then(|m| m.as_array()).ok_or_else(|| bad("`model.merges`: missing".into()))?;
    if merges.len() > MAX_MERGES {
        return Err(bad(format!("{} merges is more than any Gemma has", merges.len())));
    }
    v.merges = Some(
        merges
            .iter()
            .enumerate()
            .map(|(i, m)| {
                merge_string(m).ok_or_else(|| bad(format!("merge {i}: expected \"a b\" or [\"a\", \"b\"], found {m}")))
            })
            .collect::<Result<_>>()?,
    );
    for (tok, ty) in v.tokens.iter().zip(v.types.iter_mut()) {
        if GEMMA4_VISIBLE_TOKENS.contains(&tok.as_str()) {
            *ty = token_type::USER_DEFINED;
        }
    }
    v.add_space_prefix = false;
    Ok(v)
}

/// One merge in GGUF's form, `"left right"`. The pair form (transformers ≥ 4.45) may hold
/// spaces inside a piece: they become U+0120, as gguf-py's `SpecialVocab` writes them, since
/// llama.cpp splits at the first space after the first byte.
fn merge_string(m: &Value) -> Option<String> {
    match m {
        Value::String(s) if s.get(1..).is_some_and(|rest| rest.contains(' ')) => Some(s.clone()),
        Value::Array(pair) if pair.len() == 2 => {
            let part = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(|s| s.replace(' ', "\u{120}"));
            Some(format!("{} {}", part(&pair[0])?, part(&pair[1])?))
        }
        _ => None,
    }
}

fn has_prepend(v: &Value) -> bool {
    match v {
        Value::Object(o) => o.get("type").and_then(|t| t.as_str()) == Some("Prepend") || o.values().any(has_prepend),
        Value::Array(a) => a.iter().any(has_prepend),
        _ => false,
    }
}

/// SentencePiece `ModelProto` (sentencepiece_model.proto): field 1 = repeated pieces
/// {1: piece (string), 2: score (float), 3: type (enum: 1 normal, 2 unknown, 3 control,
/// 4 user defined, 5 unused, 6 byte)}; field 3 = normalizer spec {3: add_dummy_prefix}.
/// SentencePiece's type numbers are llama.cpp's token types.
fn from_sentencepiece(path: &Path) -> Result<Vocab> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |what: &str| Error::BadTokenizer { path: path.to_owned(), what: format!("tokenizer.model: {what}") };
    let mut v = Vocab { add_space_prefix: true, source: "tokenizer.model".into(), ..Vocab::default() };
    let mut r = Proto { b: &bytes, pos: 0 };
    while let Some((field, wire)) = r.key().ok_or_else(|| bad("truncated field key"))? {
        match (field, wire) {
            (1, 2) => {
                let msg = r.bytes().ok_or_else(|| bad("truncated piece"))?;
                let (mut piece, mut score, mut ty) = (None, 0f32, token_type::NORMAL);
                let mut p = Proto { b: msg, pos: 0 };
                while let Some((f, w)) = p.key().ok_or_else(|| bad("truncated piece field"))? {
                    match (f, w) {
                        (1, 2) => {
                            let s = p.bytes().ok_or_else(|| bad("truncated piece text"))?;
                            piece = Some(String::from_utf8(s.to_vec()).map_err(|_| bad("piece is not UTF-8"))?);
                        }
                        (2, 5) => score = f32::from_le_bytes(p.fixed4().ok_or_else(|| bad("truncated score"))?),
                        (3, 0) => ty = p.varint().ok_or_else(|| bad("truncated type"))? as i32,
                        (_, w) => p.skip(w).ok_or_else(|| bad("malformed piece"))?,
                    }
                }
                let piece = piece.ok_or_else(|| bad("a piece without text"))?;
                if ty == token_type::UNKNOWN {
                    v.unk = Some(v.tokens.len() as u32);
                }
                v.tokens.push(piece);
                v.scores.push(score);
                v.types.push(ty.clamp(1, 6));
            }
            (3, 2) => {
                let msg = r.bytes().ok_or_else(|| bad("truncated normalizer spec"))?;
                let mut p = Proto { b: msg, pos: 0 };
                while let Some((f, w)) = p.key().ok_or_else(|| bad("truncated normalizer field"))? {
                    match (f, w) {
                        (3, 0) => v.add_space_prefix = p.varint().ok_or_else(|| bad("truncated flag"))? != 0,
                        (_, w) => p.skip(w).ok_or_else(|| bad("malformed normalizer spec"))?,
                    }
                }
            }
            (_, w) => r.skip(w).ok_or_else(|| bad("malformed field"))?,
        }
        if v.tokens.len() > 1 << 22 {
            return Err(bad("more pieces than any Gemma has"));
        }
    }
    if v.tokens.is_empty() {
        return Err(bad("no pieces"));
    }
    Ok(v)
}

/// A minimal protobuf wire-format reader: every read is bounds-checked (`None` = truncated).
struct Proto<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Proto<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut x = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.pos)?;
            self.pos += 1;
            x |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Some(x);
            }
        }
        None
    }

    /// `Some(None)` at the end, `None` if truncated.
    fn key(&mut self) -> Option<Option<(u64, u8)>> {
        if self.pos >= self.b.len() {
            return Some(None);
        }
        let k = self.varint()?;
        Some(Some((k >> 3, (k & 7) as u8)))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn fixed4(&mut self) -> Option<[u8; 4]> {
        let s = self.b.get(self.pos..self.pos + 4)?;
        self.pos += 4;
        s.try_into().ok()
    }

    fn skip(&mut self, wire: u8) -> Option<()> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => {
                self.b.get(self.pos..self.pos + 8)?;
                self.pos += 8;
                Some(())
            }
            2 => self.bytes().map(|_| ()),
            5 => self.fixed4().map(|_| ()),
            _ => None,
        }
    }
}
