//! The base's top-k rows and their file (the layout is in the parent module's doc).
#![forbid(unsafe_code)]

use super::{file_error, log_probs_at, log_sum_exp, top_k, Chunks, Perplexity, Scratch};
use super::{MAX_CHUNK, MAX_CHUNKS, MAX_LABEL, MAX_TOP_K, MAX_VOCAB, MIN_CHUNK, OVERLAP_K};
use crate::error::{Error, Result};
use std::io::{Read, Write};
use std::path::Path;

const MAGIC: &[u8; 8] = b"GEMMABLG";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 40;
/// Slack for rounding in the file's probability checks (log-probabilities a hair above 0, a
/// total mass a hair off 1).
const PROB_SLACK: f64 = 1e-3;

/// One scored position of a base: its `top_k` tokens and their log-probabilities, the
/// log-probability of the text's next token, and the log of the mass outside the top-k.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BaseRow<'a> {
    pub ids: &'a [u32],
    pub log_probs: &'a [f32],
    pub next_log_prob: f32,
    pub rest_log_prob: f32,
}

/// A base model's top-k log-probabilities at every scored position of a text's chunks: what
/// models are compared against, computed once and saved in the file the module doc lays out.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseLogits {
    /// The base's name (its file name), for tables.
    pub label: String,
    /// The base's bits per weight ([`bits_per_weight`]).
    pub bits_per_weight: f64,
    chunks: Chunks,
    n_vocab: usize,
    top_k: usize,
    ids: Vec<u32>,
    log_probs: Vec<f32>,
    next: Vec<f32>,
    rest: Vec<f32>,
}

impl BaseLogits {
    /// An empty record for `chunks`, filled by [`push_row`](Self::push_row).
    pub fn new(label: &str, bits_per_weight: f64, n_vocab: usize, chunks: Chunks, top_k: usize) -> Result<BaseLogits> {
        if !(OVERLAP_K..=MAX_TOP_K).contains(&top_k) || top_k > n_vocab {
            return Err(Error::OutOfRange {
                what: "top-k",
                value: top_k.to_string(),
                why: "must be 5 to 1024 and at most the vocabulary size",
            });
        }
        if label.len() > MAX_LABEL || !bits_per_weight.is_finite() || bits_per_weight < 0.0 || n_vocab > MAX_VOCAB {
            return Err(file_error("label over 4096 bytes, bits per weight not finite, or vocabulary over 2^24"));
        }
        let n = chunks.n_scored();
        Ok(BaseLogits {
            label: label.to_string(),
            bits_per_weight,
            chunks,
            n_vocab,
            top_k,
            ids: Vec::with_capacity(n * top_k),
            log_probs: Vec::with_capacity(n * top_k),
            next: Vec::with_capacity(n),
            rest: Vec::with_capacity(n),
        })
    }

    /// Records the base's logits at the next scored position; `next` is the text's next token.
    /// Refuses rows that are not finite (a broken base would make every comparison meaningless).
    pub fn push_row(&mut self, row: &[f32], next: u32, s: &mut Scratch) -> Result<()> {
        if row.len() != self.n_vocab || next as usize >= self.n_vocab || self.is_complete() {
            return Err(Error::Length { what: "base logits row".into(), expected: self.n_vocab, actual: row.len() });
        }
        let lse = log_sum_exp(row);
        if !lse.is_finite() || row.iter().any(|x| x.is_nan()) {
            return Err(file_error(format!("the base's logits at scored position {} are not finite", self.n_rows())));
        }
        top_k(row, self.top_k, &mut s.top);
        s.ids.clear();
        s.ids.extend(s.top.iter().map(|&(id, _)| id));
        let rest = log_probs_at(row, lse, &s.ids, &mut s.lp, &mut s.sorted);
        self.ids.extend_from_slice(&s.ids);
        self.log_probs.extend_from_slice(&s.lp);
        self.next.push((row[next as usize] as f64 - lse) as f32);
        self.rest.push(rest);
        Ok(())
    }

    pub fn chunks(&self) -> &Chunks {
        &self.chunks
    }

    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    pub fn top_k(&self) -> usize {
        self.top_k
    }

    /// Rows recorded so far.
    pub fn n_rows(&self) -> usize {
        self.next.len()
    }

    /// Whether every scored position has its row.
    pub fn is_complete(&self) -> bool {
        self.n_rows() == self.chunks.n_scored()
    }

    /// Row `i` (scored positions in order, chunk by chunk).
    pub fn row(&self, i: usize) -> BaseRow<'_> {
        let r = i * self.top_k..(i + 1) * self.top_k;
        BaseRow {
            ids: &self.ids[r.clone()],
            log_probs: &self.log_probs[r],
            next_log_prob: self.next[i],
            rest_log_prob: self.rest[i],
        }
    }

    /// The base's own perplexity, from the recorded next-token log-probabilities.
    pub fn perplexity(&self) -> Perplexity {
        let mut p = Perplexity::default();
        self.next.iter().for_each(|&lp| p.add(-(lp as f64)));
        p
    }

    /// Writes the file (module doc). The record must be complete.
    pub fn write_to(&self, mut w: impl Write) -> Result<()> {
        if !self.is_complete() {
            return Err(file_error(format!("only {} of {} rows recorded", self.n_rows(), self.chunks.n_scored())));
        }
        let io = |e: std::io::Error| file_error(format!("writing: {e}"));
        let mut head = Vec::with_capacity(HEADER_LEN + self.label.len());
        head.extend_from_slice(MAGIC);
        for v in
            [VERSION as usize, self.n_vocab, self.chunks.n_ctx, self.chunks.n_chunk(), self.top_k, self.label.len()]
        {
            head.extend_from_slice(&(v as u32).to_le_bytes());
        }
        head.extend_from_slice(&self.bits_per_weight.to_le_bytes());
        head.extend_from_slice(self.label.as_bytes());
        w.write_all(&head).map_err(io)?;
        let mut bytes = Vec::with_capacity(self.chunks.tokens.len() * 4);
        self.chunks.tokens.iter().for_each(|t| bytes.extend_from_slice(&t.to_le_bytes()));
        w.write_all(&bytes).map_err(io)?;
        for i in 0..self.n_rows() {
            let row = self.row(i);
            bytes.clear();
            row.ids.iter().for_each(|t| bytes.extend_from_slice(&t.to_le_bytes()));
            row.log_probs.iter().for_each(|x| bytes.extend_from_slice(&x.to_le_bytes()));
            bytes.extend_from_slice(&row.next_log_prob.to_le_bytes());
            bytes.extend_from_slice(&row.rest_log_prob.to_le_bytes());
            w.write_all(&bytes).map_err(io)?;
        }
        w.flush().map_err(io)
    }

    /// Saves to `path` through a temporary file in the same folder, renamed when complete.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("partial");
        let io = |e: std::io::Error| file_error(format!("{}: {e}", path.display()));
        let result = std::fs::File::create(&tmp)
            .map_err(io)
            .and_then(|f| self.write_to(std::io::BufWriter::new(f)))
            .and_then(|()| std::fs::rename(&tmp, path).map_err(io));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Loads a file written by [`save`](Self::save), checking every field (module doc).
    pub fn load(path: &Path) -> Result<BaseLogits> {
        let io = |e: std::io::Error| file_error(format!("{}: {e}", path.display()));
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Self::read_from(std::io::BufReader::new(file), len).map_err(|e| {
            file_error(format!("{}: {}", path.display(), e.to_string().trim_start_matches("base logits file: ")))
        })
    }

    /// Reads the file format from `r`, whose total length is `len` bytes.
    pub fn read_from(mut r: impl Read, len: u64) -> Result<BaseLogits> {
        let mut head = [0u8; HEADER_LEN];
        read_exact(&mut r, &mut head, "the header")?;
        if &head[..8] != MAGIC {
            return Err(file_error("not a base-logits file (bad magic)"));
        }
        let u32_at = |o: usize| u32::from_le_bytes(head[o..o + 4].try_into().expect("4 bytes")) as usize;
        let (version, n_vocab, n_ctx, n_chunk, top_k, label_len) =
            (u32_at(8), u32_at(12), u32_at(16), u32_at(20), u32_at(24), u32_at(28));
        let bpw = f64::from_le_bytes(head[32..40].try_into().expect("8 bytes"));
        check_header(version, n_vocab, n_ctx, n_chunk, top_k, label_len, bpw)?;
        let n_rows = n_chunk * (n_ctx - 1 - n_ctx / 2);
        // Every count is capped, so this cannot overflow u64; checked all the same.
        let expected = (HEADER_LEN as u64 + label_len as u64)
            .checked_add(4 * (n_chunk as u64) * (n_ctx as u64))
            .and_then(|x| x.checked_add((n_rows as u64).checked_mul(8 * top_k as u64 + 8)?));
        if expected != Some(len) {
            return Err(file_error(format!(
                "the header describes {} bytes but the file has {len} (cut short, or not this format)",
                expected.map_or("too many".into(), |e| e.to_string())
            )));
        }
        let mut label = vec![0u8; label_len];
        read_exact(&mut r, &mut label, "the label")?;
        let label = String::from_utf8(label).map_err(|_| file_error("the label is not UTF-8"))?;
        let tokens = read_u32s(&mut r, n_chunk * n_ctx, "the tokens")?;
        if let Some((i, t)) = tokens.iter().enumerate().find(|(_, &t)| t as usize >= n_vocab) {
            return Err(file_error(format!("token {i} is {t}, outside the vocabulary of {n_vocab}")));
        }
        let chunks = Chunks { tokens, n_ctx };
        let mut base = BaseLogits::new(&label, bpw, n_vocab, chunks, top_k)?;
        let mut row = vec![0u8; 8 * top_k + 8];
        for i in 0..n_rows {
            read_exact(&mut r, &mut row, "a row")?;
            let word = |j: usize| <[u8; 4]>::try_from(&row[4 * j..4 * j + 4]).expect("4 bytes");
            let ids: Vec<u32> = (0..top_k).map(|j| u32::from_le_bytes(word(j))).collect();
            let lps: Vec<f32> = (top_k..2 * top_k).map(|j| f32::from_le_bytes(word(j))).collect();
            let (next, rest) = (f32::from_le_bytes(word(2 * top_k)), f32::from_le_bytes(word(2 * top_k + 1)));
            check_row(i, &ids, &lps, next, rest, n_vocab)?;
            base.ids.extend_from_slice(&ids);
            base.log_probs.extend_from_slice(&lps);
            base.next.push(next);
            base.rest.push(rest);
        }
        Ok(base)
    }
}

fn read_exact(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| file_error(format!("reading {what}: {e}")))
}

fn read_u32s(r: &mut impl Read, n: usize, what: &str) -> Result<Vec<u32>> {
    let mut bytes = vec![0u8; n * 4];
    read_exact(r, &mut bytes, what)?;
    Ok(bytes.chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes"))).collect())
}

fn check_header(
    version: usize,
    n_vocab: usize,
    n_ctx: usize,
    n_chunk: usize,
    top_k: usize,
    label_len: usize,
    bpw: f64,
) -> Result<()> {
    let bad =
        |field: &str, value: String, allowed: &str| Err(file_error(format!("{field} = {value}: must be {allowed}")));
    if version != VERSION as usize {
        return bad("version", version.to_string(), "1");
    }
    if n_vocab == 0 || n_vocab > MAX_VOCAB {
        return bad("n_vocab", n_vocab.to_string(), "1 to 2^24");
    }
    if !(MIN_CHUNK..=MAX_CHUNK).contains(&n_ctx) {
        return bad("n_ctx", n_ctx.to_string(), "4 to 2^20");
    }
    if n_chunk == 0 || n_chunk > MAX_CHUNKS {
        return bad("n_chunk", n_chunk.to_string(), "1 to 2^20");
    }
    if !(OVERLAP_K..=MAX_TOP_K).contains(&top_k) || top_k > n_vocab {
        return bad("top_k", top_k.to_string(), "5 to 1024 and at most n_vocab");
    }
    if label_len > MAX_LABEL {
        return bad("label length", label_len.to_string(), "at most 4096");
    }
    if !bpw.is_finite() || bpw < 0.0 {
        return bad("bits per weight", bpw.to_string(), "finite and not negative");
    }
    Ok(())
}

fn check_row(i: usize, ids: &[u32], lps: &[f32], next: f32, rest: f32, n_vocab: usize) -> Result<()> {
    let bad = |why: String| Err(file_error(format!("row {i}: {why}")));
    if let Some(id) = ids.iter().find(|&&id| id as usize >= n_vocab) {
        return bad(format!("token id {id} is outside the vocabulary of {n_vocab}"));
    }
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return bad("a token id appears twice".into());
    }
    let slack = PROB_SLACK as f32;
    if lps.iter().any(|x| !x.is_finite() || *x > slack) || !next.is_finite() || next > slack {
        return bad("a log-probability is not finite or above 0".into());
    }
    if lps.windows(2).any(|w| w[0] < w[1]) {
        return bad("log-probabilities are not in descending order".into());
    }
    if rest.is_nan() || rest > slack {
        return bad(format!("the mass outside the top-k has log {rest}"));
    }
    let total: f64 = lps.iter().map(|&x| (x as f64).exp()).sum::<f64>() + (rest as f64).exp();
    if (total - 1.0).abs() > PROB_SLACK {
        return bad(format!("probabilities sum to {total}, not 1"));
    }
    Ok(())
}
