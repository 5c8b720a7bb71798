//! Quality of a model on a text: perplexity over fixed-size chunks, and how far its next-token
//! distributions are from a base model's (KL-divergence, top-token agreement), with the base's
//! distributions kept in a small file so that the base runs once.
//!
//! # Perplexity
//!
//! llama.cpp's method (`tools/perplexity/perplexity.cpp`, `perplexity()`, the version vendored
//! by `llama-cpp-sys-2` 0.1.161), so figures are comparable with `llama-perplexity`'s:
//!
//! - the whole text is tokenized once, with BOS when the model adds one;
//! - it is cut into `n_chunk = n_tokens / n_ctx` chunks of `n_ctx` tokens (the rest is dropped;
//!   at least `2 × n_ctx` tokens are needed, as there);
//! - each chunk is evaluated from an empty cache with its first token replaced by BOS;
//! - only the second half is scored: the logits at positions `n_ctx/2 ..= n_ctx−2` predict the
//!   tokens at `n_ctx/2+1 ..= n_ctx−1`, so every scored token has at least `n_ctx/2` tokens of
//!   context (`n_ctx − 1 − n_ctx/2` tokens per chunk);
//! - PPL = exp(mean NLL), and its uncertainty is llama.cpp's `±`:
//!   `PPL × sqrt((mean(NLL²) − mean(NLL)²) / (n − 1))`.
//!
//! # Comparing a model with a base
//!
//! At each scored position, with P the base's next-token distribution and Q the model's:
//!
//! - **KL-divergence** KL(P‖Q), over the base's `top_k` most likely tokens plus one bucket for
//!   all the others: `Σᵢ pᵢ (ln pᵢ − ln qᵢ) + p_rest (ln p_rest − ln q_rest)`. Merging tokens
//!   into one bucket never raises KL (log-sum inequality), so this is a lower bound of the full
//!   KL and equals it when the rest carries little of P's mass; [`kl_full`] gives the exact
//!   value for checks. Mean, median, 99th percentile and maximum over positions (percentiles by
//!   nearest rank).
//! - **top-1 agreement**: the most likely token is the same (ties: the lower id).
//! - **top-5 overlap**: tokens shared by the two top-5 lists, ÷ 5.
//! - **RMS Δp**: root mean square of Q(t) − P(t) for the text's actual next token t
//!   (llama-perplexity's "RMS Δp").
//! - Perplexity of both, and their ratio.
//!
//! # The base-logits file (version 1)
//!
//! All integers and floats little-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `GEMMABLG` |
//! | 8 | 4 | version, u32 = 1 |
//! | 12 | 4 | `n_vocab`, u32 (1 ..= 2²⁴) |
//! | 16 | 4 | `n_ctx`, the chunk size, u32 (4 ..= 2²⁰) |
//! | 20 | 4 | `n_chunk`, u32 (1 ..= 2²⁰) |
//! | 24 | 4 | `top_k`, u32 (5 ..= 1024, ≤ `n_vocab`) |
//! | 28 | 4 | `L`, label length in bytes, u32 (≤ 4096) |
//! | 32 | 8 | the base's bits per weight, f64 (finite, ≥ 0) |
//! | 40 | L | label (the base's file name), UTF-8 |
//! | 40+L | 4·n_chunk·n_ctx | the chunks' tokens, u32, each chunk's first already BOS |
//! | … | R·row | one row per scored position, chunk by chunk, in position order |
//!
//! with `R = n_chunk × (n_ctx − 1 − n_ctx/2)` rows of `8·top_k + 8` bytes: `top_k` token ids
//! (u32, distinct, < `n_vocab`), their log-probabilities (f32, finite, ≤ 0, most likely
//! first), the log-probability of the text's next token (f32), and the log of the probability
//! mass outside the `top_k` tokens (f32, may be −∞). The file's length must be exactly the
//! sum: a file cut short or with trailing bytes is refused, before anything is allocated for
//! its rows. For Gemma 3 (262 144 tokens) at the default `top_k` = 64 a row is 520 bytes where
//! the full logits would be 1 MiB.
#![forbid(unsafe_code)]

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::session::{Outputs, Session};

mod base;
pub use base::{BaseLogits, BaseRow};

/// Tokens of the base kept per position by default.
pub const DEFAULT_TOP_K: usize = 64;
/// The overlap measure's list length (top-5).
pub const OVERLAP_K: usize = 5;
/// Largest `top_k` a base-logits file may have.
pub const MAX_TOP_K: usize = 1024;
/// Smallest chunk: its second half must score at least one token.
pub const MIN_CHUNK: usize = 4;
/// Largest chunk a base-logits file may declare.
pub const MAX_CHUNK: usize = 1 << 20;
/// Largest chunk count a base-logits file may declare.
pub const MAX_CHUNKS: usize = 1 << 20;
/// Largest vocabulary a base-logits file may declare.
pub const MAX_VOCAB: usize = 1 << 24;
/// Longest label in a base-logits file.
pub const MAX_LABEL: usize = 4096;

pub(crate) fn file_error(why: impl Into<String>) -> Error {
    Error::BaseLogits { why: why.into() }
}

/// A text's tokens cut into chunks the way llama-perplexity does (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunks {
    pub(crate) tokens: Vec<u32>,
    pub(crate) n_ctx: usize,
}

impl Chunks {
    /// Cuts `tokens` (the whole text, tokenized with BOS when the model adds one) into
    /// `tokens.len() / n_ctx` chunks, at most `max_chunks`, each one's first token replaced
    /// by `bos` when given. Needs at least `2 × n_ctx` tokens (as llama-perplexity).
    pub fn new(tokens: &[u32], n_ctx: usize, max_chunks: Option<usize>, bos: Option<u32>) -> Result<Chunks> {
        if !(MIN_CHUNK..=MAX_CHUNK).contains(&n_ctx) {
            return Err(Error::OutOfRange {
                what: "chunk size",
                value: n_ctx.to_string(),
                why: "must be 4 to 1048576 tokens",
            });
        }
        if tokens.len() < 2 * n_ctx {
            return Err(Error::OutOfRange {
                what: "text length in tokens",
                value: tokens.len().to_string(),
                why: "needs at least twice the chunk size (as llama-perplexity): use a longer text or a smaller chunk",
            });
        }
        if max_chunks == Some(0) {
            return Err(Error::OutOfRange { what: "chunk count", value: "0".into(), why: "must be at least 1" });
        }
        let n_chunk = (tokens.len() / n_ctx).min(max_chunks.unwrap_or(usize::MAX)).min(MAX_CHUNKS);
        let mut out = tokens[..n_chunk * n_ctx].to_vec();
        if let Some(bos) = bos {
            out.iter_mut().step_by(n_ctx).for_each(|t| *t = bos);
        }
        Ok(Chunks { tokens: out, n_ctx })
    }

    /// Chunk size in tokens.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    pub fn n_chunk(&self) -> usize {
        self.tokens.len() / self.n_ctx
    }

    /// Chunk `i`'s tokens (first token already BOS).
    pub fn chunk(&self, i: usize) -> &[u32] {
        &self.tokens[i * self.n_ctx..(i + 1) * self.n_ctx]
    }

    /// Every chunk's tokens, one after the other.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Scored positions per chunk: `n_ctx − 1 − n_ctx/2`.
    pub fn scored_per_chunk(&self) -> usize {
        self.n_ctx - 1 - self.n_ctx / 2
    }

    /// Scored positions in all.
    pub fn n_scored(&self) -> usize {
        self.n_chunk() * self.scored_per_chunk()
    }
}

/// Evaluates one chunk from an empty cache and calls `on_row(logits, next_token)` for each
/// scored position, in order. The whole chunk goes in one call with every position's logits
/// (`buf`, reused: `n_ctx × n_vocab` floats, 512 MiB for Gemma 3 at 512 tokens), batched by
/// the session's `n_ubatch` as llama-perplexity batches it: ggml's results depend on the
/// batch shape (feeding the scored half separately moves some logits of the 270M file by up
/// to 0.7, in libllama as in ours), so this keeps the figures bit-comparable.
pub fn score_chunk(
    session: &mut Session<'_>,
    chunk: &[u32],
    buf: &mut Vec<f32>,
    mut on_row: impl FnMut(&[f32], u32) -> Result<()>,
) -> Result<()> {
    let n = chunk.len();
    if n < MIN_CHUNK || n > session.n_ctx() as usize {
        return Err(Error::OutOfRange {
            what: "chunk size",
            value: n.to_string(),
            why: "must be at least 4 and at most the session's context",
        });
    }
    let n_vocab = session.model().n_vocab() as usize;
    session.reset();
    session.decode_into(chunk, Outputs::All, buf)?;
    if buf.len() != n * n_vocab {
        return Err(Error::Length { what: "logits".into(), expected: n * n_vocab, actual: buf.len() });
    }
    for (pos, row) in buf.chunks_exact(n_vocab).enumerate().take(n - 1).skip(n / 2) {
        on_row(row, chunk[pos + 1])?;
    }
    Ok(())
}

/// Runs [`score_chunk`] over every chunk; `on_chunk(i)` after chunk `i` (progress).
pub fn score_chunks(
    session: &mut Session<'_>,
    chunks: &Chunks,
    mut on_row: impl FnMut(&[f32], u32) -> Result<()>,
    mut on_chunk: impl FnMut(usize),
) -> Result<()> {
    let mut buf = Vec::new();
    for i in 0..chunks.n_chunk() {
        score_chunk(session, chunks.chunk(i), &mut buf, &mut on_row)?;
        on_chunk(i);
    }
    Ok(())
}

/// Running perplexity: sums of the negative log-likelihoods and their squares.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Perplexity {
    sum: f64,
    sum2: f64,
    n: usize,
}

impl Perplexity {
    /// Adds one token's negative log-likelihood (natural log).
    pub fn add(&mut self, nll: f64) {
        self.sum += nll;
        self.sum2 += nll * nll;
        self.n += 1;
    }

    /// Tokens scored.
    pub fn n(&self) -> usize {
        self.n
    }

    /// exp(mean NLL); NaN before any token.
    pub fn value(&self) -> f64 {
        (self.sum / self.n as f64).exp()
    }

    /// llama.cpp's uncertainty: PPL × the standard error of the mean NLL (0 below two tokens).
    pub fn uncertainty(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let mean = self.sum / self.n as f64;
        let var = self.sum2 / self.n as f64 - mean * mean;
        if var > 0.0 {
            self.value() * (var / (self.n - 1) as f64).sqrt()
        } else {
            0.0
        }
    }
}

/// Perplexity of the model in `session` over `chunks`.
pub fn perplexity(session: &mut Session<'_>, chunks: &Chunks, on_chunk: impl FnMut(usize)) -> Result<Perplexity> {
    let mut ppl = Perplexity::default();
    score_chunks(
        session,
        chunks,
        |row, next| {
            ppl.add(nll(row, next));
            Ok(())
        },
        on_chunk,
    )?;
    Ok(ppl)
}

/// ln Σ exp(row), in f64 around the maximum. NaN when the row holds NaN.
pub fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    if max == f64::NEG_INFINITY {
        return max;
    }
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    max + sum.ln()
}

/// Negative log-likelihood of `token` under the logits `row`.
pub fn nll(row: &[f32], token: u32) -> f64 {
    log_sum_exp(row) - row[token as usize] as f64
}

/// The `k` largest entries of `row` as (id, value) into `out`, largest first, equal values by
/// lower id; NaN entries are never chosen.
pub fn top_k(row: &[f32], k: usize, out: &mut Vec<(u32, f32)>) {
    out.clear();
    if k == 0 {
        return;
    }
    for (i, &v) in row.iter().enumerate() {
        if v.is_nan() || (out.len() == k && v <= out[k - 1].1) {
            continue;
        }
        if out.len() == k {
            out.pop();
        }
        let at = out.partition_point(|&(_, x)| x >= v);
        out.insert(at, (i as u32, v));
    }
}

/// Log-probabilities of `ids` under `row` (whose log-sum-exp is `lse`) into `out`, and the log
/// of the mass of every other token. Base and model go through this same function, so equal
/// logits give bit-equal results.
pub(crate) fn log_probs_at(row: &[f32], lse: f64, ids: &[u32], out: &mut Vec<f32>, sorted: &mut Vec<u32>) -> f32 {
    out.clear();
    out.extend(ids.iter().map(|&id| (row[id as usize] as f64 - lse) as f32));
    sorted.clear();
    sorted.extend_from_slice(ids);
    sorted.sort_unstable();
    let mut rest = 0.0f64;
    let mut next = sorted.iter().peekable();
    for (i, &x) in row.iter().enumerate() {
        if next.peek().is_some_and(|&&id| id as usize == i) {
            next.next();
            continue;
        }
        rest += (x as f64 - lse).exp();
    }
    rest.ln() as f32
}

/// The exact KL(P‖Q) of two logits rows over the whole vocabulary (for checks of the top-k
/// estimate).
pub fn kl_full(base: &[f32], model: &[f32]) -> f64 {
    let (lp, lq) = (log_sum_exp(base), log_sum_exp(model));
    base.iter()
        .zip(model)
        .map(|(&b, &m)| {
            let lpi = b as f64 - lp;
            let p = lpi.exp();
            if p == 0.0 {
                0.0
            } else {
                p * (lpi - (m as f64 - lq))
            }
        })
        .sum()
}

/// Reusable buffers for the per-row work.
#[derive(Debug, Default)]
pub struct Scratch {
    pub(crate) top: Vec<(u32, f32)>,
    pub(crate) ids: Vec<u32>,
    pub(crate) lp: Vec<f32>,
    pub(crate) sorted: Vec<u32>,
}

/// A model's distributions against a base's, accumulated over scored positions.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    kl: Vec<f64>,
    ppl: Perplexity,
    base_ppl: Perplexity,
    top1_same: usize,
    top5_shared: usize,
    dp2: f64,
}

/// A comparison's figures (the module doc defines each).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ComparisonSummary {
    pub n_tokens: usize,
    pub ppl: f64,
    pub ppl_uncertainty: f64,
    pub base_ppl: f64,
    pub base_ppl_uncertainty: f64,
    /// ppl / base_ppl.
    pub ppl_ratio: f64,
    pub kl_mean: f64,
    pub kl_median: f64,
    pub kl_p99: f64,
    pub kl_max: f64,
    /// Fractions, 0 to 1.
    pub top1_agreement: f64,
    pub top5_overlap: f64,
    pub rms_dp: f64,
}

impl Comparison {
    /// Adds one scored position: the base's row there, the model's logits, the next token.
    pub fn add(&mut self, base: BaseRow<'_>, row: &[f32], next: u32, s: &mut Scratch) {
        let lse = log_sum_exp(row);
        let rest_q = log_probs_at(row, lse, base.ids, &mut s.lp, &mut s.sorted) as f64;
        let mut kl = 0.0f64;
        for (&lp, &lq) in base.log_probs.iter().zip(&s.lp) {
            kl += (lp as f64).exp() * (lp as f64 - lq as f64);
        }
        let rest_p = base.rest_log_prob as f64;
        if rest_p > f64::NEG_INFINITY {
            kl += rest_p.exp() * (rest_p - rest_q);
        }
        self.kl.push(kl);
        let nll_q = lse - row[next as usize] as f64;
        self.ppl.add(nll_q);
        self.base_ppl.add(-(base.next_log_prob as f64));
        // Through f32 as the base's stored value, so equal logits give exactly 0.
        let dp = ((-nll_q) as f32 as f64).exp() - (base.next_log_prob as f64).exp();
        self.dp2 += dp * dp;
        top_k(row, OVERLAP_K, &mut s.top);
        if s.top.first().map(|t| t.0) == base.ids.first().copied() {
            self.top1_same += 1;
        }
        let base5 = &base.ids[..OVERLAP_K.min(base.ids.len())];
        self.top5_shared += s.top.iter().filter(|(id, _)| base5.contains(id)).count();
    }

    /// Positions added.
    pub fn n(&self) -> usize {
        self.kl.len()
    }

    pub fn summary(&self) -> ComparisonSummary {
        let n = self.n();
        let mut kl = self.kl.clone();
        kl.sort_unstable_by(f64::total_cmp);
        // Nearest rank: the smallest value with at least q·n values at or below it.
        let rank =
            |q: f64| kl.get(((q * n as f64).ceil() as usize).clamp(1, n.max(1)) - 1).copied().unwrap_or(f64::NAN);
        let (ppl, base_ppl) = (self.ppl.value(), self.base_ppl.value());
        ComparisonSummary {
            n_tokens: n,
            ppl,
            ppl_uncertainty: self.ppl.uncertainty(),
            base_ppl,
            base_ppl_uncertainty: self.base_ppl.uncertainty(),
            ppl_ratio: ppl / base_ppl,
            kl_mean: kl.iter().sum::<f64>() / n as f64,
            kl_median: rank(0.5),
            kl_p99: rank(0.99),
            // A NaN sorts last under total_cmp, so a broken model shows as NaN here too.
            kl_max: kl.last().copied().unwrap_or(f64::NAN),
            top1_agreement: self.top1_same as f64 / n as f64,
            top5_overlap: self.top5_shared as f64 / (n * OVERLAP_K) as f64,
            rms_dp: (self.dp2 / n as f64).sqrt(),
        }
    }
}

/// Runs the base model in `session` over `chunks` and records its top-k rows.
pub fn record_base(
    session: &mut Session<'_>,
    chunks: Chunks,
    top_k: usize,
    label: &str,
    on_chunk: impl FnMut(usize),
) -> Result<BaseLogits> {
    let model = session.model();
    let bpw = bits_per_weight(model.gguf());
    let mut base = BaseLogits::new(label, bpw, model.n_vocab() as usize, chunks.clone(), top_k)?;
    let mut s = Scratch::default();
    score_chunks(session, &chunks, |row, next| base.push_row(row, next, &mut s), on_chunk)?;
    Ok(base)
}

/// Runs the model in `session` over the base's chunks and compares it, position by position.
pub fn compare(session: &mut Session<'_>, base: &BaseLogits, on_chunk: impl FnMut(usize)) -> Result<Comparison> {
    let n_vocab = session.model().n_vocab() as usize;
    if n_vocab != base.n_vocab() {
        return Err(file_error(format!(
            "the base has a vocabulary of {} tokens, this model {n_vocab}: compare models of one family",
            base.n_vocab()
        )));
    }
    let mut cmp = Comparison::default();
    let mut s = Scratch::default();
    let mut i = 0;
    score_chunks(
        session,
        base.chunks(),
        |row, next| {
            cmp.add(base.row(i), row, next, &mut s);
            i += 1;
            Ok(())
        },
        on_chunk,
    )?;
    Ok(cmp)
}

/// Bits per weight of a GGUF file: its tensor data bytes × 8 ÷ its parameter count.
pub fn bits_per_weight(file: &GgufFile) -> f64 {
    let (bytes, params) =
        file.tensors().iter().fold((0u64, 0u64), |(b, p), t| (b + t.n_bytes, p.saturating_add(t.n_elements())));
    if params == 0 {
        0.0
    } else {
        bytes as f64 * 8.0 / params as f64
    }
}

#[cfg(test)]
mod tests;
