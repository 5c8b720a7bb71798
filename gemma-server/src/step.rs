//! One step of the busy sequences: what each feeds (a prompt chunk, or the token it sampled
//! last), the decode, then sampling from each sequence's logits.
//!
//! Two ways to hold the sequences ([`Sessions`]): one session each, decoded one after the
//! other (the default: a greedy request gives exactly what it gives alone, as ggml's CPU
//! kernels round the same way for the same batch), or one shared session whose cache cells
//! are tagged by sequence, all fed in one graph per step (`--batching`: the weights are read
//! once per step for every sequence; a matrix product over several rows rounds differently
//! from one over a single row, so a near-tie may fall the other way).
#![forbid(unsafe_code)]

use crate::engine::{Event, Finish, Running, Slot};
use crate::metrics::Metrics;
use gemma_gguf::constrain::Progress;
use gemma_gguf::session::{Outputs, SeqTokens, Session};
use gemma_gguf::tokenizer::Tokenizer;
use std::sync::atomic::Ordering::Relaxed;

/// The sessions behind the slots.
pub(crate) enum Sessions<'m> {
    /// Slot `i` is session `i`.
    Own(Vec<Session<'m>>),
    /// Slot `i` is sequence `i` of one session (boxed: a session is large next to a `Vec`).
    Shared(Box<Session<'m>>),
}

impl Sessions<'_> {
    /// The context of one sequence.
    pub fn n_ctx(&self) -> u32 {
        match self {
            Sessions::Own(v) => v[0].n_ctx(),
            Sessions::Shared(s) => s.n_ctx(),
        }
    }

    pub fn cells_used(&self) -> usize {
        match self {
            Sessions::Own(v) => v.iter().map(|s| s.n_past() as usize).sum(),
            Sessions::Shared(s) => s.kv_cache().cells_used(),
        }
    }

    /// Keeps the first `n` tokens of the slot's sequence; `false` (nothing changed) when the
    /// cache cannot (see `Session::truncate_seq`).
    pub fn truncate(&mut self, slot: usize, n: usize) -> bool {
        match self {
            Sessions::Own(v) => v[slot].truncate_seq(0, n as u32),
            Sessions::Shared(s) => s.truncate_seq(slot as u16, n as u32),
        }
    }

    pub fn clear(&mut self, slot: usize) {
        match self {
            Sessions::Own(v) => v[slot].reset(),
            Sessions::Shared(s) => s.clear_seq(slot as u16),
        }
    }
}

/// What one slot feeds this step.
struct Feed {
    slot: usize,
    tokens: Vec<u32>,
    /// The prompt position after this feed, or `None` for a generated token.
    fed_to: Option<usize>,
}

/// One step; returns the slots that finished (with why) or failed (with the error).
pub(crate) fn round(
    sessions: &mut Sessions<'_>,
    slots: &mut [Slot<'_>],
    n_ubatch: usize,
    n_vocab: usize,
    logits: &mut Vec<f32>,
    tok: &Tokenizer,
    metrics: &Metrics,
) -> Vec<(usize, Result<Finish, String>)> {
    let feeds = plan(slots, n_ubatch, matches!(sessions, Sessions::Shared(_)));
    let n_ctx = sessions.n_ctx();
    let mut ended = Vec::new();
    match sessions {
        Sessions::Own(v) => {
            for f in &feeds {
                let session = &mut v[f.slot];
                let r = session
                    .decode_into(&f.tokens, Outputs::Last, logits)
                    .and_then(|_| after(&mut slots[f.slot], f, logits, session.n_past(), n_ctx, tok, metrics));
                match r {
                    Ok(None) => {}
                    Ok(Some(finish)) => ended.push((f.slot, Ok(finish))),
                    Err(e) => {
                        session.reset();
                        slots[f.slot].cached.clear();
                        ended.push((f.slot, Err(e.to_string())));
                    }
                }
            }
        }
        Sessions::Shared(s) => {
            if feeds.is_empty() {
                return ended;
            }
            let batch: Vec<SeqTokens<'_>> =
                feeds.iter().map(|f| SeqTokens { seq: f.slot as u16, tokens: &f.tokens }).collect();
            if let Err(e) = s.decode_seqs(&batch, logits) {
                // The shared cache may be half written: every sequence starts over.
                s.reset();
                slots.iter_mut().for_each(|sl| sl.cached.clear());
                let running = slots.iter().enumerate().filter(|(_, sl)| sl.run.is_some());
                return running.map(|(i, _)| (i, Err(e.to_string()))).collect();
            }
            for (k, f) in feeds.iter().enumerate() {
                let row = &mut logits[k * n_vocab..(k + 1) * n_vocab];
                match after(&mut slots[f.slot], f, row, s.n_past_seq(f.slot as u16), n_ctx, tok, metrics) {
                    Ok(None) => {}
                    Ok(Some(finish)) => ended.push((f.slot, Ok(finish))),
                    Err(e) => {
                        s.clear_seq(f.slot as u16);
                        slots[f.slot].cached.clear();
                        ended.push((f.slot, Err(e.to_string())));
                    }
                }
            }
        }
    }
    ended
}

/// Generated tokens first (one each), then prompt chunks; a shared session takes at most
/// `n_ubatch` tokens in all, separate sessions a chunk of up to `n_ubatch` each.
fn plan(slots: &[Slot<'_>], n_ubatch: usize, shared: bool) -> Vec<Feed> {
    let mut feeds = Vec::new();
    let mut budget = if shared { n_ubatch } else { usize::MAX };
    for (i, run) in slots.iter().enumerate().filter_map(|(i, s)| Some((i, s.run.as_ref()?))) {
        if let (Some(t), true) = (run.pending, budget > 0) {
            feeds.push(Feed { slot: i, tokens: vec![t], fed_to: None });
            budget -= 1;
        }
    }
    for (i, run) in slots.iter().enumerate().filter_map(|(i, s)| Some((i, s.run.as_ref()?))) {
        if run.pending.is_none() && run.fed < run.feed.len() && budget > 0 {
            let end = run.feed.len().min(run.fed + n_ubatch.min(budget));
            feeds.push(Feed { slot: i, tokens: run.feed[run.fed..end].to_vec(), fed_to: Some(end) });
            budget = budget.saturating_sub(end - run.fed);
        }
    }
    feeds
}

/// After a feed was decoded: bookkeeping, then, once the prompt is in, the next token from
/// `row`. The same order of calls as `gemma_gguf::generate::generate`.
fn after(
    slot: &mut Slot<'_>,
    feed: &Feed,
    row: &mut [f32],
    n_past: u32,
    n_ctx: u32,
    tok: &Tokenizer,
    metrics: &Metrics,
) -> gemma_gguf::Result<Option<Finish>> {
    slot.cached.extend_from_slice(&feed.tokens);
    let run: &mut Running<'_> = slot.run.as_mut().expect("a running slot");
    run.pending = None;
    if let Some(end) = feed.fed_to {
        run.fed = end;
        if end < run.feed.len() {
            return Ok(None);
        }
    }
    let t = match run.constraint.as_mut() {
        Some(c) => c.sample(&mut run.sampler, row)?,
        None => run.sampler.sample(row)?,
    };
    if tok.is_end_of_generation(t) {
        return Ok(Some(Finish::Stop));
    }
    let complete = match run.constraint.as_mut() {
        Some(c) => c.accept(t)? == Progress::Complete,
        None => false,
    };
    run.sampler.accept(t);
    run.generated += 1;
    run.usage.completion_tokens += 1;
    metrics.completion_tokens.fetch_add(1, Relaxed);
    let (text, stopped) = run.stop.push(&run.decoder.push(t));
    if !text.is_empty() {
        let _ = run.job.events.send(Event::Text(text));
    }
    if stopped || complete {
        return Ok(Some(Finish::Stop));
    }
    if run.generated >= run.max_tokens || n_past >= n_ctx {
        return Ok(Some(Finish::Length));
    }
    run.pending = Some(t);
    Ok(None)
}

/// Shorter shared starts are not worth dropping the rest of a sequence's cache for (every
/// chat prompt starts with the same few tokens of the turn format).
const MIN_PARTIAL_REUSE: usize = 16;

/// The free slot whose cache shares the longest start with `prompt`, and how many tokens of
/// it to reuse (at least one prompt token is left to feed); else the least recently used
/// free slot, reusing nothing. A cache held whole is reused at any length; a part of one only
/// from [`MIN_PARTIAL_REUSE`] tokens.
pub(crate) fn pick_slot(slots: &[Slot<'_>], prompt: &[u32]) -> (usize, usize) {
    let free = || slots.iter().enumerate().filter(|(_, s)| s.run.is_none());
    let reuse = |s: &Slot<'_>| {
        let common = s.cached.iter().zip(prompt).take_while(|(a, b)| a == b).count().min(prompt.len() - 1);
        if common == s.cached.len() || common >= MIN_PARTIAL_REUSE {
            common
        } else {
            0
        }
    };
    match free().map(|(i, s)| (i, reuse(s))).max_by_key(|&(_, r)| r) {
        Some((i, r)) if r > 0 => (i, r),
        _ => free().min_by_key(|(_, s)| s.last_used).map_or((0, 0), |(i, _)| (i, 0)),
    }
}

/// Sends what the decoder and the stop filter still hold, then `Done`.
pub(crate) fn finish_run(mut run: Running<'_>, finish: Finish) {
    let (mut text, stopped) = run.stop.push(&run.decoder.finish());
    text.push_str(&run.stop.finish());
    if !text.is_empty() {
        let _ = run.job.events.send(Event::Text(text));
    }
    let finish = if stopped { Finish::Stop } else { finish };
    let _ = run.job.events.send(Event::Done { finish, usage: run.usage });
}
