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
use gemma_gguf::vision::prompt::image_of;
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
    /// Tokens, or one image's run of flat ids.
    tokens: Vec<u32>,
    /// The prompt position after this feed, or `None` for a generated token.
    fed_to: Option<usize>,
    /// The image of the slot's request these ids stand for (fed as its embeddings, in a
    /// batch of its own).
    image: Option<usize>,
}

/// Feeds slot `f`'s image; `None` when `f` is tokens.
fn feed_image(
    f: &Feed,
    slots: &[Slot<'_>],
    feed: impl FnOnce(&[f32], bool) -> gemma_gguf::Result<()>,
) -> Option<gemma_gguf::Result<()>> {
    let k = f.image?;
    let run = slots[f.slot].run.as_ref()?;
    Some(match run.images.get(k) {
        Some(rows) => feed(rows, run.causal),
        None => Err(gemma_gguf::Error::OutOfRange { what: "image", value: k.to_string(), why: "not in the request" }),
    })
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
                let fed = match feed_image(f, slots, |rows, causal| session.decode_embd(rows, causal)) {
                    Some(r) => r,
                    None => session.decode_into(&f.tokens, Outputs::Last, logits),
                };
                let r = fed.and_then(|_| after(&mut slots[f.slot], f, logits, session.n_past(), n_ctx, tok, metrics));
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
            // Images first, each in a graph of its own; then every sequence's tokens in one.
            let (images, feeds): (Vec<Feed>, Vec<Feed>) = feeds.into_iter().partition(|f| f.image.is_some());
            for f in &images {
                let seq = f.slot as u16;
                let r = feed_image(f, slots, |rows, causal| s.decode_embd_seq(seq, rows, causal))
                    .unwrap_or(Ok(()))
                    .and_then(|_| after(&mut slots[f.slot], f, &mut [], s.n_past_seq(seq), n_ctx, tok, metrics));
                match r {
                    Ok(None) => {}
                    Ok(Some(finish)) => ended.push((f.slot, Ok(finish))),
                    Err(e) => {
                        s.clear_seq(seq);
                        slots[f.slot].cached.clear();
                        ended.push((f.slot, Err(e.to_string())));
                    }
                }
            }
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
            feeds.push(Feed { slot: i, tokens: vec![t], fed_to: None, image: None });
            budget -= 1;
        }
    }
    for (i, run) in slots.iter().enumerate().filter_map(|(i, s)| Some((i, s.run.as_ref()?))) {
        if run.pending.is_none() && run.fed < run.feed.len() && budget > 0 {
            let rest = &run.feed[run.fed..];
            // An image whole (in a graph of its own, outside the token budget); else the
            // tokens up to the next image.
            let (n, image) = match image_of(rest[0]) {
                Some(k) => (rest.iter().take_while(|&&t| t == rest[0]).count(), Some(k)),
                None => (rest.iter().take_while(|&&t| image_of(t).is_none()).count().min(n_ubatch.min(budget)), None),
            };
            let end = run.fed + n;
            feeds.push(Feed { slot: i, tokens: rest[..n].to_vec(), fed_to: Some(end), image });
            if image.is_none() {
                budget = budget.saturating_sub(n);
            }
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
        // Images are never taken as equal: their ids number a request's images, not their
        // content.
        let same = |(a, b): &(&u32, &u32)| a == b && image_of(**a).is_none();
        let common = s.cached.iter().zip(prompt).take_while(same).count().min(prompt.len() - 1);
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
