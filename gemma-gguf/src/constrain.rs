//! Constrained sampling: a JSON Schema, a Lark grammar or a regular expression compiled to a
//! token mask over the model's vocabulary, applied to the logits before every sample.
//!
//! The engine is the `llguidance` crate (1.9, the one llama.cpp and mistral.rs use); this
//! module only builds its token trie from our [`Tokenizer`] and drives its `Matcher`:
//!
//! - **Vocabulary.** Every token is given the bytes it adds to decoded text
//!   ([`Tokenizer::token_bytes`]): `▁` becomes a space, a byte-fallback token `<0xXX>` its one
//!   byte (so a character spread over several byte tokens is matched byte by byte, and several
//!   tokens may spell the same bytes), CONTROL and UNKNOWN tokens their name behind
//!   llguidance's special-token marker byte 0xFF (never matched by text), UNUSED tokens
//!   nothing (never allowed). The mask is exact: a token is allowed iff its bytes can extend
//!   the output within the constraint.
//! - **A step.** [`Constraint::sample`] computes the mask, sets every other logit to −∞ (any
//!   sampler then draws among allowed tokens only: greedy, temperature, top-k/p, min-p), and
//!   samples. The end-of-generation tokens (`<eos>`, `<end_of_turn>`) are allowed exactly when
//!   the output so far is complete. [`Constraint::accept`] advances the matcher; when nothing
//!   can follow (a JSON object's closing brace), it reports [`Progress::Complete`] and the
//!   caller stops as if the model had ended its turn.
//! - **Limits.** Constraints come from users (CLI flags, request bodies): [`ConstraintLimits`]
//!   caps the source size and JSON nesting before compiling, and sets llguidance's own limits
//!   explicitly (lexer fuel, lexer states, grammar size, Earley items per step), so that a
//!   huge, deeply nested, recursive or invalid constraint ends in a [`ConstraintError`] within
//!   bounded time and memory.
//!
//! JSON output is compact and fixed in layout (`{"a": 1, "b": [2, 3]}`: `", "` and `": "`, no
//! other whitespace; llguidance's `x-guidance` options), so that a small model cannot spend
//! its token budget on whitespace. Grammars use llguidance's Lark dialect (`start: …`, rules,
//! `/regex/` terminals, `{m,n}` repetition as in GBNF, `%json { schema }` inside a rule).
#![forbid(unsafe_code)]

use crate::error::Result;
use crate::sampler::Sampler;
use crate::tokenizer::Tokenizer;
use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::toktrie::{ApproximateTokEnv, SimpleVob, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};
use std::sync::Arc;

/// What the output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum ConstraintSpec {
    /// A JSON Schema (draft 2020-12 keywords as llguidance implements them: types, `properties`,
    /// `required`, `additionalProperties`, `items`, `enum`, `const`, `anyOf`, `allOf`, `$ref`,
    /// `minimum`/`maximum`, `minLength`/`maxLength`, `pattern`, `format`, `minItems`/`maxItems`).
    JsonSchema(Value),
    /// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`).
    JsonObject,
    /// A grammar in llguidance's Lark dialect.
    Lark(String),
    /// A regular expression (Rust `regex` syntax) the whole output must match.
    Regex(String),
}

impl ConstraintSpec {
    /// A JSON Schema from text (a CLI flag's value or a file's contents).
    pub fn json_schema_str(text: &str) -> Result<ConstraintSpec, ConstraintError> {
        let schema = serde_json::from_str(text)
            .map_err(|e| ConstraintError::Invalid { kind: "JSON schema", message: format!("not JSON: {e}") })?;
        Ok(ConstraintSpec::JsonSchema(schema))
    }

    /// A JSON Schema given as `FILE|JSON` (the CLI's `--json-schema`): text that starts with
    /// `{` is the schema itself, anything else a path to read it from.
    pub fn json_schema_arg(arg: &str) -> Result<ConstraintSpec, ConstraintError> {
        if arg.trim_start().starts_with('{') {
            return Self::json_schema_str(arg);
        }
        Self::json_schema_str(&read_source(std::path::Path::new(arg), "JSON schema")?)
    }

    /// A Lark grammar read from a file (the CLI's `--grammar`).
    pub fn lark_file(path: &std::path::Path) -> Result<ConstraintSpec, ConstraintError> {
        Ok(ConstraintSpec::Lark(read_source(path, "grammar")?))
    }

    /// What kind of constraint it is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            ConstraintSpec::JsonSchema(_) | ConstraintSpec::JsonObject => "JSON schema",
            ConstraintSpec::Lark(_) => "grammar",
            ConstraintSpec::Regex(_) => "regex",
        }
    }
}

/// Reads a constraint file, refusing one above [`ConstraintLimits::default`]'s source cap
/// before reading it whole.
fn read_source(path: &std::path::Path, kind: &'static str) -> Result<String, ConstraintError> {
    let max = ConstraintLimits::default().max_source_bytes;
    let io = |e: std::io::Error| ConstraintError::Read { path: path.display().to_string(), message: e.to_string() };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > max as u64 {
        return Err(ConstraintError::TooLarge { kind, len: usize::try_from(len).unwrap_or(usize::MAX), max });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    String::from_utf8(bytes).map_err(|e| ConstraintError::Read {
        path: path.display().to_string(),
        message: format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to()),
    })
}

/// Why a constraint could not be compiled or followed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConstraintError {
    /// The source is larger than [`ConstraintLimits::max_source_bytes`].
    #[error("the {kind} is {len} bytes; at most {max} are accepted")]
    TooLarge { kind: &'static str, len: usize, max: usize },
    /// A constraint file that cannot be read.
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    /// A JSON schema nested deeper than [`ConstraintLimits::max_json_depth`].
    #[error("the JSON schema is nested more than {max} levels deep")]
    TooDeep { max: usize },
    /// The source does not compile: a syntax error, an unsupported keyword, an unsatisfiable
    /// schema, or one of llguidance's limits hit while compiling.
    #[error("invalid {kind}: {message}")]
    Invalid { kind: &'static str, message: String },
    /// The matcher failed while generating (a per-step limit, or no token can continue).
    #[error("constrained sampling failed: {message}")]
    Step { message: String },
}

/// Caps on what a constraint may cost. [`Default`] is sized for request bodies of up to a
/// few hundred KiB on a small machine; every field is explicit so none is left to a library
/// default that may change.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstraintLimits {
    /// Source text (schema JSON, grammar, regex) above this is refused before compiling.
    pub max_source_bytes: usize,
    /// JSON schemas nested deeper than this (objects and arrays) are refused before compiling.
    pub max_json_depth: usize,
    /// llguidance: fuel for building the lexer (≈ 50 000 per ms).
    pub initial_lexer_fuel: u64,
    /// llguidance: lexer fuel for one token mask (≈ 14 000 per ms).
    pub step_lexer_fuel: u64,
    /// llguidance: Earley items created for one token mask (≈ 20 000 per ms).
    pub step_max_items: usize,
    /// llguidance: Earley items in one row (the grammar's branching).
    pub max_items_in_row: usize,
    /// llguidance: lexer states (1–2 kB each): the memory bound.
    pub max_lexer_states: usize,
    /// llguidance: symbols in the grammar's productions.
    pub max_grammar_size: usize,
}

impl Default for ConstraintLimits {
    fn default() -> Self {
        // llguidance 1.9.1's defaults (api.rs, `ParserLimits`) for the fuel and items; fewer
        // lexer states (50 000 ≈ 100 MB at most instead of 250 000) and a smaller grammar
        // (200 000 symbols instead of 500 000) for a 2-core, few-GB machine.
        Self {
            max_source_bytes: 256 * 1024,
            max_json_depth: 64,
            initial_lexer_fuel: 1_000_000,
            step_lexer_fuel: 200_000,
            step_max_items: 50_000,
            max_items_in_row: 2000,
            max_lexer_states: 50_000,
            max_grammar_size: 200_000,
        }
    }
}

impl ConstraintLimits {
    fn parser_limits(&self) -> ParserLimits {
        ParserLimits {
            max_items_in_row: self.max_items_in_row,
            initial_lexer_fuel: self.initial_lexer_fuel,
            step_lexer_fuel: self.step_lexer_fuel,
            step_max_items: self.step_max_items,
            max_lexer_states: self.max_lexer_states,
            max_grammar_size: self.max_grammar_size,
            precompute_large_lexemes: true,
            // Errors go back to users (a 400's message): not the whole grammar and parser state.
            verbose_errors: false,
        }
    }
}

/// The layout of generated JSON: compact, one space after `,` and `:`, nothing else.
fn json_layout() -> Value {
    json!({ "whitespace_flexible": false, "item_separator": ", ", "key_separator": ": " })
}

/// Compiles constraints for one vocabulary. Built once per model (the trie of 262 144 tokens
/// takes a moment), shared by every request (`Send + Sync`).
pub struct ConstraintEngine {
    factory: ParserFactory,
    limits: ConstraintLimits,
    /// The tokenizer's end-of-generation tokens, allowed together when the output is complete.
    end_tokens: Vec<u32>,
}

impl std::fmt::Debug for ConstraintEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConstraintEngine").field("limits", &self.limits).field("end_tokens", &self.end_tokens).finish()
    }
}

impl ConstraintEngine {
    /// An engine over `tok`'s vocabulary with the default limits.
    pub fn new(tok: &Tokenizer) -> Result<ConstraintEngine> {
        Self::with_limits(tok, ConstraintLimits::default())
    }

    /// An engine over `tok`'s vocabulary.
    pub fn with_limits(tok: &Tokenizer, limits: ConstraintLimits) -> Result<ConstraintEngine> {
        let n = tok.vocab_size();
        let words: Vec<Vec<u8>> = (0..n as u32).map(|id| token_word(tok, id)).collect();
        let end_tokens: Vec<u32> = [Some(tok.eos()), tok.end_of_turn()].into_iter().flatten().collect();
        let info = TokRxInfo {
            vocab_size: n as u32,
            tok_eos: tok.eos(),
            tok_bos: Some(tok.bos()),
            tok_pad: tok.pad(),
            tok_unk: tok.unk(),
            tok_end_of_turn: tok.end_of_turn(),
        };
        // The tokenizer checked at load that every special id is inside the vocabulary.
        let trie = TokTrie::from(&info, &words).with_eos_tokens(&end_tokens);
        // Our tokenizer is not offered to llguidance: only forced-token shortcuts would use it,
        // and they are not used here (every token is sampled under the mask).
        let env: llguidance::toktrie::TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| ConstraintError::Invalid { kind: "vocabulary", message: e.to_string() })?;
        factory.quiet();
        *factory.limits_mut() = limits.parser_limits();
        Ok(ConstraintEngine { factory, limits, end_tokens })
    }

    pub fn limits(&self) -> &ConstraintLimits {
        &self.limits
    }

    /// Checks `spec` against the limits and compiles it; the error says what was wrong.
    pub fn compile(&self, spec: &ConstraintSpec) -> Result<Constraint, ConstraintError> {
        let kind = spec.kind();
        let max = self.limits.max_source_bytes;
        let grammar = match spec {
            ConstraintSpec::JsonSchema(schema) => {
                let len = serde_json::to_string(schema).map_or(usize::MAX, |s| s.len());
                if len > max {
                    return Err(ConstraintError::TooLarge { kind, len, max });
                }
                check_depth(schema, self.limits.max_json_depth)?;
                TopLevelGrammar::from_json_schema(with_layout(schema)?)
            }
            ConstraintSpec::JsonObject => TopLevelGrammar::from_json_schema(with_layout(&json!({"type": "object"}))?),
            ConstraintSpec::Lark(text) | ConstraintSpec::Regex(text) if text.len() > max => {
                return Err(ConstraintError::TooLarge { kind, len: text.len(), max });
            }
            ConstraintSpec::Lark(text) => TopLevelGrammar::from_lark(text.clone()),
            ConstraintSpec::Regex(rx) => TopLevelGrammar::from_regex(rx),
        };
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| ConstraintError::Invalid { kind, message: e.to_string() })?;
        let mut matcher = Matcher::new(Ok(parser));
        if let Some(message) = matcher.get_error() {
            return Err(ConstraintError::Invalid { kind, message: clean(message) });
        }
        // A constraint that admits no output at all (`{"$ref": "#"}`, `start: start`) compiles;
        // its first mask is empty. Say so now, not at the first token.
        match matcher.compute_mask() {
            Ok(m) if !m.is_zero() => {}
            Ok(_) => return Err(ConstraintError::Invalid { kind, message: "no output can match it".into() }),
            Err(e) => {
                return Err(ConstraintError::Invalid {
                    kind,
                    message: format!("no output can match it ({})", clean(e)),
                })
            }
        }
        Ok(Constraint { matcher, end_tokens: self.end_tokens.clone(), mask: SimpleVob::new(), tokens: 0 })
    }
}

/// A token's bytes as the trie needs them (see the module doc).
fn token_word(tok: &Tokenizer, id: u32) -> Vec<u8> {
    match tok.token_type(id) {
        Some(ty) if ty.is_special() => {
            let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
            w.extend_from_slice(tok.piece(id).unwrap_or_default().as_bytes());
            w
        }
        _ => tok.token_bytes(id).into_owned(),
    }
}

/// The schema with the compact layout added (a schema's own `x-guidance` is kept). `true` is
/// any JSON value; `false` matches nothing and is refused.
fn with_layout(schema: &Value) -> Result<Value, ConstraintError> {
    let mut schema = match schema {
        Value::Bool(true) => json!({}),
        Value::Object(_) => schema.clone(),
        _ => {
            return Err(ConstraintError::Invalid {
                kind: "JSON schema",
                message: "a schema is an object (or `true`)".into(),
            })
        }
    };
    if let Some(obj) = schema.as_object_mut() {
        obj.entry("x-guidance").or_insert_with(json_layout);
    }
    Ok(schema)
}

/// A JSON Schema as a `%json { … }` item of a Lark grammar (tool-call envelopes around
/// arguments), in the compact layout, checked against the default depth limit.
pub fn lark_json(schema: &Value) -> Result<String, ConstraintError> {
    check_depth(schema, ConstraintLimits::default().max_json_depth)?;
    Ok(format!("%json {}", with_layout(schema)?))
}

/// Refuses values nested deeper than `max` (iteratively: no recursion on user input).
fn check_depth(v: &Value, max: usize) -> Result<(), ConstraintError> {
    let mut stack = vec![(v, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        if depth > max {
            return Err(ConstraintError::TooDeep { max });
        }
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, depth + 1))),
            Value::Object(o) => stack.extend(o.values().map(|x| (x, depth + 1))),
            _ => {}
        }
    }
    Ok(())
}

/// Where the output stands after a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More may (or must) follow.
    Open,
    /// The output is complete and nothing can follow: stop generating.
    Complete,
}

/// One generation's constraint: the matcher state and the last mask.
pub struct Constraint {
    matcher: Matcher,
    end_tokens: Vec<u32>,
    /// The mask of the last [`Constraint::sample`].
    mask: SimpleVob,
    /// Tokens accepted so far.
    tokens: usize,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint").field("tokens", &self.tokens).field("stopped", &self.matcher.is_stopped()).finish()
    }
}

impl Constraint {
    /// Computes the mask of allowed tokens and sets every other entry of `logits` to −∞
    /// (entries beyond the vocabulary too). An end-of-generation token is allowed when the
    /// output is complete. Fails when the matcher hits a per-step limit or allows nothing.
    pub fn apply(&mut self, logits: &mut [f32]) -> Result<(), ConstraintError> {
        self.mask = self.matcher.compute_mask_or_eos().map_err(step_error)?;
        if self.end_tokens.iter().any(|&t| self.mask.is_allowed(t)) {
            self.end_tokens.iter().for_each(|&t| self.mask.allow_token(t));
        }
        if self.mask.is_zero() {
            return Err(ConstraintError::Step { message: "no token can continue the output".into() });
        }
        let n = self.mask.len().min(logits.len());
        let (inside, beyond) = logits.split_at_mut(n);
        beyond.fill(f32::NEG_INFINITY);
        // 32 tokens per word: whole words are kept or cleared at once, which is most of them.
        for (chunk, &bits) in inside.chunks_mut(32).zip(self.mask.as_slice()) {
            match bits {
                u32::MAX => {}
                0 => chunk.fill(f32::NEG_INFINITY),
                _ => {
                    for (i, l) in chunk.iter_mut().enumerate() {
                        if bits & (1 << i) == 0 {
                            *l = f32::NEG_INFINITY;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the last mask allows `token`.
    pub fn allows(&self, token: u32) -> bool {
        token < self.mask.len() as u32 && self.mask.is_allowed(token)
    }

    /// [`apply`](Self::apply), then `sampler` on the masked logits. The sampler's answer is
    /// checked against the mask: where every allowed logit is NaN (the sampler then has
    /// nothing to choose from) the lowest allowed id is taken. Does not [`accept`](Self::accept).
    pub fn sample(&mut self, sampler: &mut Sampler, logits: &mut [f32]) -> Result<u32> {
        self.apply(logits)?;
        let t = sampler.sample(logits)?;
        if self.allows(t) {
            return Ok(t);
        }
        Ok(self.mask.first_bit_set().unwrap_or_default() as u32)
    }

    /// Advances past a generated token (not an end-of-generation one).
    pub fn accept(&mut self, token: u32) -> Result<Progress, ConstraintError> {
        self.matcher.consume_token(token).map_err(step_error)?;
        self.tokens += 1;
        Ok(if self.matcher.is_stopped() { Progress::Complete } else { Progress::Open })
    }

    /// Whether the output so far is a complete match (an end-of-generation token would be
    /// allowed now).
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_stopped() || self.matcher.is_accepting().unwrap_or(false)
    }
}

fn step_error(e: impl std::fmt::Display) -> ConstraintError {
    ConstraintError::Step { message: clean(e) }
}

/// llguidance's message without the marker it appends when verbose errors are off.
fn clean(e: impl std::fmt::Display) -> String {
    let m = e.to_string();
    m.trim_end().trim_end_matches("<non-verbose/>").trim_end().to_string()
}

#[cfg(test)]
mod tests;
