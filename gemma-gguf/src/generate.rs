//! The streaming generation loop: prompt → logits → sampler → token → text, until a stop.
#![forbid(unsafe_code)]

use crate::constrain::{Constraint, Progress};
use crate::error::{Error, Result};
use crate::sampler::Sampler;
use crate::session::{Outputs, Session};
use std::time::{Duration, Instant};

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-generation token (`<eos>`, `<end_of_turn>`); it is not
    /// fed to the cache. Under a [`Constraint`] that is complete, the model's end-of-turn token
    /// (else `<eos>`) is forced: generation stops with it, unsampled.
    EndOfGeneration(u32),
    /// The token budget was reached.
    MaxTokens,
    /// The context is full: nothing more fits in the KV cache (no shifting is done).
    ContextFull,
    /// The caller's callback asked to stop.
    Cancelled,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::EndOfGeneration(_) => f.write_str("end of generation"),
            StopReason::MaxTokens => f.write_str("token limit reached"),
            StopReason::ContextFull => f.write_str("context full"),
            StopReason::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// What a call to [`generate`] produced and how long it took.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Generated tokens (the stop token excluded).
    pub tokens: Vec<u32>,
    pub stop: StopReason,
    pub prompt_tokens: usize,
    pub prompt_time: Duration,
    pub generation_time: Duration,
}

impl Generated {
    /// Prompt processing speed, tokens per second.
    pub fn prompt_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_time.as_secs_f64().max(1e-9)
    }

    /// Generation speed, tokens per second (each generated token is one decode step).
    pub fn generation_tps(&self) -> f64 {
        self.tokens.len() as f64 / self.generation_time.as_secs_f64().max(1e-9)
    }
}

/// Feeds `prompt` (at least one token) after what the session holds and generates up to `max_tokens` tokens, calling `on_text` with each piece of
/// complete UTF-8 text as it becomes available. `on_text` returns `false` to stop.
pub fn generate(
    session: &mut Session<'_>,
    sampler: &mut Sampler,
    prompt: &[u32],
    max_tokens: usize,
    on_text: impl FnMut(&str) -> bool,
) -> Result<Generated> {
    generate_observed(session, sampler, prompt, max_tokens, |_, _| {}, on_text)
}

/// [`generate`], calling `on_step` with each step's logits (over the vocabulary) and the token
/// sampled from them, before that token's text reaches `on_text`.
pub fn generate_observed(
    session: &mut Session<'_>,
    sampler: &mut Sampler,
    prompt: &[u32],
    max_tokens: usize,
    on_step: impl FnMut(&[f32], u32),
    on_text: impl FnMut(&str) -> bool,
) -> Result<Generated> {
    generate_constrained(session, sampler, None, prompt, max_tokens, on_step, on_text)
}

/// A part of a prompt fed to [`generate_chunks`].
#[derive(Debug, Clone, Copy)]
pub enum PromptChunk<'a> {
    Tokens(&'a [u32]),
    /// Rows of input embeddings (an image's), fed in one batch; `causal` false: the rows
    /// attend to each other both ways (see [`Session::decode_embd`]).
    Embd {
        rows: &'a [f32],
        causal: bool,
    },
}

/// [`generate_observed`] under an optional [`Constraint`]: each step's logits are masked to
/// the tokens it allows (what `on_step` sees), and generation stops as soon as the output is
/// complete. A constraint that fails mid-way (a per-step limit) is an error.
pub fn generate_constrained(
    session: &mut Session<'_>,
    sampler: &mut Sampler,
    constraint: Option<&mut Constraint>,
    prompt: &[u32],
    max_tokens: usize,
    on_step: impl FnMut(&[f32], u32),
    on_text: impl FnMut(&str) -> bool,
) -> Result<Generated> {
    generate_chunks(session, sampler, constraint, &[PromptChunk::Tokens(prompt)], max_tokens, on_step, on_text)
}

/// [`generate_constrained`] for a prompt of tokens and embeddings (images), fed in order;
/// the last chunk must be tokens (its last token's logits start generation).
pub fn generate_chunks(
    session: &mut Session<'_>,
    sampler: &mut Sampler,
    mut constraint: Option<&mut Constraint>,
    prompt: &[PromptChunk<'_>],
    max_tokens: usize,
    mut on_step: impl FnMut(&[f32], u32),
    mut on_text: impl FnMut(&str) -> bool,
) -> Result<Generated> {
    if !matches!(prompt.last(), Some(PromptChunk::Tokens(t)) if !t.is_empty()) {
        return Err(Error::OutOfRange {
            what: "prompt",
            value: "no tokens at its end".into(),
            why: "a prompt must end with at least one token",
        });
    }
    let tokenizer = session.model().tokenizer();
    let start = Instant::now();
    // One logits buffer for the whole generation: no allocation per token.
    let mut logits = Vec::with_capacity(session.model().n_vocab() as usize);
    let mut prompt_tokens = 0;
    for chunk in prompt {
        match *chunk {
            PromptChunk::Tokens(ids) => {
                session.decode_into(ids, Outputs::Last, &mut logits)?;
                ids.iter().for_each(|&t| sampler.accept(t));
                prompt_tokens += ids.len();
            }
            PromptChunk::Embd { rows, causal } => {
                session.decode_embd(rows, causal)?;
                prompt_tokens += rows.len() / session.model().dims().n_embd as usize;
            }
        }
    }
    let prompt_time = start.elapsed();
    let start = Instant::now();
    let mut decoder = tokenizer.decoder();
    let mut tokens = Vec::new();
    let stop = loop {
        if tokens.len() >= max_tokens {
            break StopReason::MaxTokens;
        }
        let t = match constraint.as_deref_mut() {
            Some(c) => c.sample(sampler, &mut logits)?,
            None => sampler.sample(&logits)?,
        };
        on_step(&logits, t);
        if tokenizer.is_end_of_generation(t) {
            break StopReason::EndOfGeneration(t);
        }
        let progress = match constraint.as_deref_mut() {
            Some(c) => c.accept(t)?,
            None => Progress::Open,
        };
        sampler.accept(t);
        tokens.push(t);
        let text = decoder.push(t);
        if !text.is_empty() && !on_text(&text) {
            break StopReason::Cancelled;
        }
        if progress == Progress::Complete {
            break StopReason::EndOfGeneration(tokenizer.end_of_turn().unwrap_or(tokenizer.eos()));
        }
        if session.n_past() >= session.n_ctx() {
            break StopReason::ContextFull;
        }
        session.decode_into(&[t], Outputs::Last, &mut logits)?;
    };
    let rest = decoder.finish();
    if !rest.is_empty() {
        on_text(&rest);
    }
    Ok(Generated { tokens, stop, prompt_tokens, prompt_time, generation_time: start.elapsed() })
}
