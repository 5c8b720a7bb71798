//! Choosing the next token from a row of logits: greedy, temperature, top-k, top-p, min-p,
//! repetition penalty, all from a seeded generator so that runs can be repeated.
//!
//! The semantics are those of llama.cpp's default sampler chain (`common/sampling.cpp` and
//! `src/llama-sampler.cpp` in the copy vendored by `llama-cpp-sys-2` 0.1.161), restricted to
//! the samplers offered here, in llama.cpp's order:
//!
//! 1. **repetition penalty**: each token among the last `repeat_last_n` accepted ones has its
//!    logit divided by `repeat_penalty` when positive, multiplied by it otherwise (once,
//!    however often the token occurred);
//! 2. **top-k**: keep the `top_k` highest logits;
//! 3. **top-p**: keep the shortest run of best tokens whose probability, under the softmax of
//!    what top-k kept, reaches `top_p` (at least one token);
//! 4. **min-p**: drop tokens less probable than `min_p` times the most probable one;
//! 5. **temperature**: divide what is left by `temperature`;
//! 6. **dist**: draw one token from the softmax of that.
//!
//! Top-p and min-p thus see the distribution *before* temperature, as in llama.cpp. A
//! temperature of 0 (or `top_k` 1) is greedy: the highest logit after the penalty, the lowest
//! id among equals, and no random draw. Equal logits are ranked by id everywhere, so which of
//! several tied tokens top-k keeps never depends on the selection algorithm.
//!
//! **Non-finite logits never panic.** NaN counts as −∞ (never chosen); +∞ counts as
//! `f32::MAX` (several +∞ tokens share the probability). When every logit is NaN or −∞ there
//! is nothing to choose from, and [`Sampler::sample`] returns token 0 without a draw.
//!
//! **Speed** (vocabulary of 262 144): one pass copies the logits, replaces NaN and +∞ and
//! keeps the maximum of each block of 64; greedy ends there. Top-k takes the `k`-th highest
//! block maximum as a floor, reads only the blocks that reach it (about `k` of them), and
//! sorts only the `k` best. Min-p skips blocks below its bound the same way. Without top-k,
//! top-p needs the softmax over the whole vocabulary (as in llama.cpp), then sorts a growing
//! prefix of the candidates (256, 1024, … tokens) and stops as soon as the prefix reaches
//! `top_p`. Buffers are reused: no allocation per token.
//!
//! **Randomness**: xoshiro256++ seeded through SplitMix64 (Blackman and Vigna,
//! <https://prng.di.unimi.it/xoshiro256plusplus.c> and `splitmix64.c`, public domain). A
//! sample draws exactly one number unless it is greedy, so the same seed, logits and accepted
//! tokens give the same tokens.
#![forbid(unsafe_code)]

use crate::error::{Error, Result};
use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};

/// Sampling parameters. [`Default`] is llama.cpp's (`common_params_sampling` in
/// `common/common.h`), except the seed: llama.cpp draws a random one, this is fixed at 0 so that
/// runs repeat unless the caller picks another (a CLI that wants llama.cpp's behaviour picks
/// one from the clock and prints it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerParams {
    /// Divides the logits before the draw; 0 = greedy. Finite, ≥ 0.
    pub temperature: f32,
    /// Keep this many best tokens; 0 = off.
    pub top_k: u32,
    /// Keep the best tokens up to this cumulative probability; 1 = off. In [0, 1].
    pub top_p: f32,
    /// Drop tokens below this fraction of the best token's probability; 0 = off. In [0, 1].
    pub min_p: f32,
    /// Penalty for tokens seen recently; 1 = off, > 1 discourages repeats. Finite, > 0.
    pub repeat_penalty: f32,
    /// How many of the last accepted tokens the penalty looks at; 0 = off.
    pub repeat_last_n: usize,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplerParams {
    fn default() -> Self {
        Self { temperature: 0.8, top_k: 40, top_p: 0.95, min_p: 0.05, repeat_penalty: 1.0, repeat_last_n: 64, seed: 0 }
    }
}

impl SamplerParams {
    /// Greedy decoding: the default parameters with temperature 0.
    pub fn greedy() -> Self {
        Self { temperature: 0.0, ..Self::default() }
    }

    /// Checks every parameter; the error names the first one out of range.
    pub fn validate(&self) -> Result<()> {
        let bad = |param, value: f32, why| Err(Error::BadSampling { param, value: value.to_string(), why });
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad("temperature", self.temperature, "must be a finite number ≥ 0 (0 = greedy)");
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return bad("top_p", self.top_p, "must be in [0, 1] (1 = off)");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", self.min_p, "must be in [0, 1] (0 = off)");
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad("repeat_penalty", self.repeat_penalty, "must be a finite number > 0 (1 = off)");
        }
        Ok(())
    }

    fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }

    fn penalty_on(&self) -> bool {
        self.repeat_last_n > 0 && self.repeat_penalty != 1.0
    }
}

/// A token and its logit (after the penalty).
#[derive(Debug, Clone, Copy)]
struct Candidate {
    logit: f32,
    id: u32,
}

/// Best first: descending logit, then ascending id. A total order (logits are never NaN here).
fn by_rank(a: &Candidate, b: &Candidate) -> Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// Logits are scanned in blocks of this many: a block whose maximum is below a threshold is
/// skipped whole.
const BLOCK: usize = 64;
/// Independent running maxima in [`sanitize_block`], so that the loop vectorises (a multiple
/// of the widest SIMD register, 16 × f32).
const LANES: usize = 16;
/// Top-p without top-k sorts this many candidates first, then four times more each round
/// (llama.cpp's `llama_sampler_top_p_apply` starts from 256 too).
const TOP_P_FIRST_PREFIX: usize = 256;

/// Picks tokens from logits; holds the random generator and the recent tokens for the penalty.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplerParams,
    rng: Xoshiro256PlusPlus,
    /// The last accepted tokens, oldest first, at most `repeat_last_n`.
    history: VecDeque<u32>,
    /// How often each token occurs in `history`.
    counts: HashMap<u32, u32>,
    /// Scratch: the logits after the penalty, NaN and +∞ replaced.
    logits: Vec<f32>,
    /// Scratch: the candidates that survive top-k / min-p; the first ones are kept.
    cand: Vec<Candidate>,
    /// Scratch: the maximum of each [`BLOCK`] of `logits`.
    block_max: Vec<f32>,
    /// Scratch: the block maxima again, reordered by the selection in [`select_top_k`].
    block_scratch: Vec<f32>,
    /// Scratch: the weights of the final draw.
    weights: Vec<f64>,
}

impl Sampler {
    /// A sampler with validated parameters.
    pub fn new(params: SamplerParams) -> Result<Self> {
        params.validate()?;
        Ok(Self {
            params,
            rng: Xoshiro256PlusPlus::seed_from_u64(params.seed),
            history: VecDeque::new(),
            counts: HashMap::new(),
            logits: Vec::new(),
            cand: Vec::new(),
            block_max: Vec::new(),
            block_scratch: Vec::new(),
            weights: Vec::new(),
        })
    }

    /// The parameters it was made with.
    pub fn params(&self) -> &SamplerParams {
        &self.params
    }

    /// Records a token for the repetition penalty. Accept the prompt's tokens and every
    /// generated one; `sample` does not accept by itself. Ids outside a later logits row are
    /// ignored by the penalty.
    pub fn accept(&mut self, token: u32) {
        if !self.params.penalty_on() {
            return;
        }
        if self.history.len() == self.params.repeat_last_n {
            if let Some(old) = self.history.pop_front() {
                if let Some(n) = self.counts.get_mut(&old) {
                    *n -= 1;
                    if *n == 0 {
                        self.counts.remove(&old);
                    }
                }
            }
        }
        self.history.push_back(token);
        *self.counts.entry(token).or_insert(0) += 1;
    }

    /// Forgets the accepted tokens and restarts the random generator from the seed.
    pub fn reset(&mut self) {
        self.history.clear();
        self.counts.clear();
        self.rng = Xoshiro256PlusPlus::seed_from_u64(self.params.seed);
    }

    /// Chooses a token id (an index into `logits`). Fails only on an empty row, or one with
    /// more than `u32::MAX` entries; NaN and infinite logits are handled as the module doc says.
    /// The token is not recorded for the penalty: pass it to [`Sampler::accept`].
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(Error::BadLogits { len: 0, why: "the row is empty" });
        }
        if u32::try_from(logits.len()).is_err() {
            return Err(Error::BadLogits { len: logits.len(), why: "token ids are u32" });
        }
        let (argmax, max) = self.prepare(logits);
        if max == f32::NEG_INFINITY {
            return Ok(0); // every logit NaN or −∞: nothing to choose from
        }
        if self.params.is_greedy() {
            return Ok(argmax as u32);
        }
        let keep = self.truncate(max);
        Ok(self.draw(keep, max))
    }

    /// Copies `logits` to `self.logits` with the penalty applied, NaN → −∞, +∞ → `f32::MAX`,
    /// and fills `self.block_max`. Returns the first index of the highest value and that value
    /// (−∞ if nothing is usable).
    fn prepare(&mut self, logits: &[f32]) -> (usize, f32) {
        self.logits.resize(logits.len(), 0.0);
        self.block_max.clear();
        for (dst, src) in self.logits.chunks_mut(BLOCK).zip(logits.chunks(BLOCK)) {
            self.block_max.push(sanitize_block(dst, src));
        }
        if self.params.penalty_on() {
            self.apply_penalty();
        }
        let (mut best_block, mut max) = (0, f32::NEG_INFINITY);
        for (b, &m) in self.block_max.iter().enumerate() {
            if m > max {
                (best_block, max) = (b, m);
            }
        }
        let start = best_block * BLOCK;
        let offset = self.logits[start..].iter().position(|&l| l == max);
        (start + offset.unwrap_or(0), max)
    }

    /// The repetition penalty, on the sanitised logits of the recent tokens (ids beyond the row
    /// are ignored); the maxima of their blocks are updated.
    fn apply_penalty(&mut self) {
        let penalty = self.params.repeat_penalty;
        for &token in self.counts.keys() {
            let i = token as usize;
            let Some(l) = self.logits.get_mut(i) else { continue };
            // −∞ stays −∞; a positive logit divided by a penalty below 1 may need clamping.
            *l = if *l > 0.0 { (*l / penalty).min(f32::MAX) } else { *l * penalty };
            let start = i - i % BLOCK;
            let block = &self.logits[start..self.logits.len().min(start + BLOCK)];
            self.block_max[i / BLOCK] = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        }
    }

    /// Top-k, top-p and min-p: leaves the kept tokens in `self.cand[..keep]`, returns `keep`
    /// (≥ 1: the best token always stays). `max` is the highest logit.
    fn truncate(&mut self, max: f32) -> usize {
        let p = self.params;
        // min-p keeps p_i ≥ min_p·p_max, i.e. logit_i ≥ max + ln(min_p); normalising after
        // top-k or top-p does not change the ratio, so the bound holds at any stage.
        let min_logit = if p.min_p > 0.0 { max + p.min_p.ln() } else { f32::NEG_INFINITY };
        let k = p.top_k as usize;
        if k > 0 && k < self.logits.len() {
            select_top_k(&self.logits, &self.block_max, k, &mut self.block_scratch, &mut self.cand);
            let mut keep = self.cand.len();
            if p.top_p < 1.0 {
                let z: f64 = self.cand.iter().map(|c| weight(c.logit, max)).sum();
                keep = top_p_prefix(&mut self.cand, max, f64::from(p.top_p) * z);
            }
            // The candidates are sorted: min-p keeps a prefix of them.
            return keep.min(self.cand.partition_point(|c| c.logit >= min_logit));
        }
        // No top-k: what min-p drops can be left out before top-p sorts anything, as long
        // as top-p's normaliser counts every token.
        collect_at_least(&self.logits, &self.block_max, min_logit, &mut self.cand);
        if p.top_p < 1.0 {
            let z: f64 = self.logits.iter().map(|&l| weight(l, max)).sum();
            return top_p_prefix(&mut self.cand, max, f64::from(p.top_p) * z);
        }
        self.cand.len()
    }

    /// Temperature and the draw among `self.cand[..keep]`.
    fn draw(&mut self, keep: usize, max: f32) -> u32 {
        let temperature = self.params.temperature;
        let kept = &self.cand[..keep];
        // (l − max) / T ≤ 0, so no overflow; the best token weighs 1, so the total is ≥ 1.
        self.weights.clear();
        self.weights.extend(kept.iter().map(|c| f64::from(((c.logit - max) / temperature).exp())));
        let total: f64 = self.weights.iter().sum();
        let target = self.rng.next_f64() * total;
        let mut acc = 0.0;
        let mut last_positive = 0;
        for (i, &w) in self.weights.iter().enumerate() {
            acc += w;
            if w > 0.0 {
                last_positive = i;
            }
            if acc > target {
                return kept[i].id;
            }
        }
        // Rounding left the target just above the running sum: the last token that can win.
        kept[last_positive].id
    }
}

/// Unnormalised probability, exp(logit − max), summed in f64 over up to 262 144 tokens.
fn weight(logit: f32, max: f32) -> f64 {
    f64::from((logit - max).exp())
}

/// Copies `src` to `dst` (same length) with NaN replaced by −∞ and +∞ by `f32::MAX`, and
/// returns the maximum.
fn sanitize_block(dst: &mut [f32], src: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut step = |d: &mut [f32], s: &[f32]| {
        for ((d, &s), m) in d.iter_mut().zip(s).zip(&mut lanes) {
            *d = if s.is_nan() { f32::NEG_INFINITY } else { s.min(f32::MAX) };
            *m = if *d > *m { *d } else { *m };
        }
    };
    let mut d = dst.chunks_exact_mut(LANES);
    let mut s = src.chunks_exact(LANES);
    for (dc, sc) in (&mut d).zip(&mut s) {
        step(dc, sc);
    }
    step(d.into_remainder(), s.remainder());
    lanes.into_iter().fold(f32::NEG_INFINITY, f32::max)
}

/// Fills `cand` with every logit ≥ `floor` other than −∞, reading only the blocks whose
/// maximum reaches `floor`.
fn collect_at_least(logits: &[f32], block_max: &[f32], floor: f32, cand: &mut Vec<Candidate>) {
    cand.clear();
    for (b, (block, &m)) in logits.chunks(BLOCK).zip(block_max).enumerate() {
        if m < floor || m == f32::NEG_INFINITY {
            continue;
        }
        for (i, &logit) in block.iter().enumerate() {
            if logit >= floor && logit != f32::NEG_INFINITY {
                let id = (b * BLOCK + i) as u32;
                cand.push(Candidate { logit, id });
            }
        }
    }
}

/// Fills `cand` with the `k` best of `logits` by [`by_rank`], sorted, leaving out −∞.
fn select_top_k(logits: &[f32], block_max: &[f32], k: usize, scratch: &mut Vec<f32>, cand: &mut Vec<Candidate>) {
    // A floor under the k-th best logit: the k-th highest block maximum. Those k maxima are k
    // different logits, so at least k logits are ≥ the floor, and the top k all are. Only the
    // blocks whose maximum reaches it are read: about k of them.
    let mut floor = f32::NEG_INFINITY;
    if block_max.len() >= k {
        scratch.clear();
        scratch.extend_from_slice(block_max);
        let (_, kth, _) = scratch.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        floor = *kth;
    }
    collect_at_least(logits, block_max, floor, cand);
    if cand.len() > k {
        cand.select_nth_unstable_by(k - 1, by_rank);
        cand.truncate(k);
    }
    cand.sort_unstable_by(by_rank);
}

/// Sorts `cand` best first only as far as needed for the running sum of weights to reach
/// `target` (top-p); returns how many to keep: up to and including the token that reaches it,
/// or all of them if none does. Sorts a prefix of 256, then 4× longer ones, selecting each
/// from what is left.
fn top_p_prefix(cand: &mut [Candidate], max: f32, target: f64) -> usize {
    let mut sorted = 0;
    let mut chunk = TOP_P_FIRST_PREFIX;
    let mut acc = 0.0;
    while sorted < cand.len() {
        let end = cand.len().min(sorted + chunk);
        if end < cand.len() {
            cand[sorted..].select_nth_unstable_by(end - sorted - 1, by_rank);
        }
        cand[sorted..end].sort_unstable_by(by_rank);
        for (i, c) in cand[sorted..end].iter().enumerate() {
            acc += weight(c.logit, max);
            if acc >= target {
                return sorted + i + 1;
            }
        }
        sorted = end;
        chunk *= 4;
    }
    cand.len()
}

/// xoshiro256++ 1.0 (Blackman and Vigna, <https://prng.di.unimi.it/xoshiro256plusplus.c>,
/// public domain), its state filled by SplitMix64 (`splitmix64.c` on the same site), as its
/// authors recommend and as `rand`'s `Xoshiro256PlusPlus::seed_from_u64` does.
#[derive(Debug, Clone)]
struct Xoshiro256PlusPlus {
    s: [u64; 4],
}

/// SplitMix64's step: advances `state` and returns the next output. Also the generator of
/// `gemma bench`'s and the side-by-side harness's random prompt tokens.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Xoshiro256PlusPlus {
    fn seed_from_u64(seed: u64) -> Self {
        let mut state = seed;
        // SplitMix64's output is a bijection of its (distinct) states: at most one of the
        // four words is zero, and xoshiro needs only a state that is not all zero.
        Self { s: std::array::from_fn(|_| splitmix64(&mut state)) }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1): the top 53 bits as a fraction (the recipe on the same page).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// All filters off, temperature 1: a draw from the plain softmax.
    fn plain() -> SamplerParams {
        SamplerParams { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, ..SamplerParams::default() }
    }

    /// The token ids that top-k, top-p and min-p keep, ascending.
    fn kept(params: SamplerParams, logits: &[f32]) -> Vec<u32> {
        let mut s = Sampler::new(params).unwrap();
        let (_, max) = s.prepare(logits);
        let keep = s.truncate(max);
        let mut ids: Vec<u32> = s.cand[..keep].iter().map(|c| c.id).collect();
        ids.sort_unstable();
        ids
    }

    /// Logits whose softmax is `probs`.
    fn logits_of(probs: &[f64]) -> Vec<f32> {
        probs.iter().map(|p| p.ln() as f32).collect()
    }

    fn first_argmax(logits: &[f32]) -> u32 {
        let mut best = 0;
        for (i, &l) in logits.iter().enumerate() {
            if l > logits[best] {
                best = i;
            }
        }
        best as u32
    }

    fn random_logits(rng: &mut StdRng, n: usize) -> Vec<f32> {
        // Roughly normal (sum of four uniforms), spread like real logits, a few spikes.
        (0..n)
            .map(|_| {
                let x: f32 = (0..4).map(|_| rng.gen::<f32>()).sum::<f32>() - 2.0;
                if rng.gen_ratio(1, 1000) {
                    8.0 + 4.0 * x
                } else {
                    3.0 * x
                }
            })
            .collect()
    }

    #[test]
    fn rng_matches_the_reference_vectors() {
        // xoshiro256++ from the state {1, 2, 3, 4}: the reference implementation's output, as
        // quoted by rand_xoshiro's test `reference`.
        let mut x = Xoshiro256PlusPlus { s: [1, 2, 3, 4] };
        let expected: [u64; 10] = [
            41943041,
            58720359,
            3588806011781223,
            3591011842654386,
            9228616714210784205,
            9973669472204895162,
            14011001112246962877,
            12406186145184390807,
            15849039046786891736,
            10450023813501588000,
        ];
        assert_eq!(expected.map(|_| x.next_u64()), expected);
        // SplitMix64 seeded with 1234567 (Rosetta Code, "Pseudo-random numbers/Splitmix64").
        let mut state = 1234567;
        let expected: [u64; 5] =
            [6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431, 16408922859458223821];
        assert_eq!(expected.map(|_| splitmix64(&mut state)), expected);
        let mut x = Xoshiro256PlusPlus::seed_from_u64(7);
        assert!((0..1000).map(|_| x.next_f64()).all(|u| (0.0..1.0).contains(&u)));
    }

    #[test]
    fn greedy_is_the_first_argmax() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut s = Sampler::new(SamplerParams::greedy()).unwrap();
        for n in [1, 2, 7, 1000] {
            let logits = random_logits(&mut rng, n);
            assert_eq!(s.sample(&logits).unwrap(), first_argmax(&logits));
        }
        // Ties go to the lowest id.
        assert_eq!(s.sample(&[1.0, 3.0, 3.0, 2.0]).unwrap(), 1);
    }

    #[test]
    fn temperature_zero_and_top_k_one_are_greedy() {
        let mut rng = StdRng::seed_from_u64(2);
        let cold = SamplerParams { temperature: 0.0, ..plain() };
        let top1 = SamplerParams { top_k: 1, temperature: 5.0, ..plain() };
        for params in [cold, top1] {
            let mut s = Sampler::new(params).unwrap();
            for _ in 0..50 {
                let logits = random_logits(&mut rng, 300);
                assert_eq!(s.sample(&logits).unwrap(), first_argmax(&logits));
            }
        }
    }

    #[test]
    fn same_seed_same_tokens() {
        let mut rng = StdRng::seed_from_u64(3);
        let rows: Vec<Vec<f32>> = (0..200).map(|_| random_logits(&mut rng, 500)).collect();
        let params = SamplerParams { temperature: 1.5, repeat_penalty: 1.3, seed: 42, ..SamplerParams::default() };
        let run = |s: &mut Sampler| -> Vec<u32> {
            rows.iter()
                .map(|row| {
                    let t = s.sample(row).unwrap();
                    s.accept(t);
                    t
                })
                .collect()
        };
        let mut a = Sampler::new(params).unwrap();
        let first = run(&mut a);
        assert_eq!(first, run(&mut Sampler::new(params).unwrap()));
        a.reset();
        assert_eq!(first, run(&mut a), "reset restarts the sequence");
        let other = SamplerParams { seed: 43, ..params };
        assert_ne!(first, run(&mut Sampler::new(other).unwrap()));
    }

    /// Draws `n` tokens and checks each frequency against `probs` within 5 binomial standard
    /// deviations, and the chi-square statistic against its 0.1 % critical value.
    fn check_frequencies(params: SamplerParams, logits: &[f32], probs: &[f64], n: usize) {
        let mut s = Sampler::new(params).unwrap();
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..n {
            counts[s.sample(logits).unwrap() as usize] += 1;
        }
        let mut chi2 = 0.0;
        let mut df = 0;
        for (i, (&count, &p)) in counts.iter().zip(probs).enumerate() {
            let expected = n as f64 * p;
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            println!("token {i}: {count} draws, expected {expected:.1} ± {sd:.1} (1 sd)");
            assert!(
                (count as f64 - expected).abs() <= 5.0 * sd,
                "token {i}: {count} draws, expected {expected:.1}, 5 sd = {:.1}",
                5.0 * sd
            );
            if p > 0.0 {
                chi2 += (count as f64 - expected).powi(2) / expected;
                df += 1;
            }
        }
        // 0.1 % critical values of chi-square for 1..=5 degrees of freedom.
        let critical = [10.83, 13.82, 16.27, 18.47, 20.52][df - 2];
        println!("chi-square = {chi2:.2}, {} df, 0.1 % critical value {critical}", df - 1);
        assert!(chi2 < critical);
    }

    #[test]
    fn draws_follow_the_softmax() {
        let probs = [0.4, 0.25, 0.2, 0.1, 0.05];
        check_frequencies(plain(), &logits_of(&probs), &probs, 10_000);
        // Temperature 0.5 squares the probabilities before normalising.
        let squared: Vec<f64> = probs.iter().map(|p| p * p).collect();
        let z: f64 = squared.iter().sum();
        let tempered: Vec<f64> = squared.iter().map(|q| q / z).collect();
        let cold = SamplerParams { temperature: 0.5, seed: 9, ..plain() };
        check_frequencies(cold, &logits_of(&probs), &tempered, 10_000);
        // Top-k 3 renormalises over the three best.
        let top3 = [0.4 / 0.85, 0.25 / 0.85, 0.2 / 0.85, 0.0, 0.0];
        let k3 = SamplerParams { top_k: 3, seed: 11, ..plain() };
        check_frequencies(k3, &logits_of(&probs), &top3, 10_000);
        // Temperature comes after top-p: top-p 0.6 keeps {0, 1} from the untempered
        // distribution, then temperature 2 flattens them to √0.4 : √0.25.
        let (a, b) = (0.4f64.sqrt(), 0.25f64.sqrt());
        let hot_top2 = [a / (a + b), b / (a + b), 0.0, 0.0, 0.0];
        let hot = SamplerParams { top_p: 0.6, temperature: 2.0, seed: 13, ..plain() };
        check_frequencies(hot, &logits_of(&probs), &hot_top2, 10_000);
    }

    #[test]
    fn top_k_keeps_the_k_best() {
        let logits = [0.5, 3.0, -1.0, 2.0, 2.0, 7.0];
        let k = |top_k| SamplerParams { top_k, ..plain() };
        assert_eq!(kept(k(2), &logits), [1, 5]);
        // Tied logits: the lower id stays.
        assert_eq!(kept(k(3), &logits), [1, 3, 5]);
        assert_eq!(kept(k(100), &logits), [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        let logits = logits_of(&[0.15, 0.5, 0.05, 0.3]);
        for top_k in [0, 3] {
            let p = |top_p| SamplerParams { top_p, top_k, ..plain() };
            assert_eq!(kept(p(0.0), &logits), [1]);
            assert_eq!(kept(p(0.45), &logits), [1]);
            assert_eq!(kept(p(0.75), &logits), [1, 3]);
        }
        // Without top-k, 0.85 needs three tokens; after top-k 3, 0.65 / 0.95 already does.
        let p = |top_k| SamplerParams { top_p: 0.85, top_k, ..plain() };
        assert_eq!(kept(p(0), &logits), [0, 1, 3]);
        assert_eq!(kept(p(2), &logits), [1, 3]);
        // A flat vocabulary of 10 000: 0.9 needs 9 000 tokens (several prefix rounds).
        let flat = vec![0.0f32; 10_000];
        let ids = kept(SamplerParams { top_p: 0.9, ..plain() }, &flat);
        assert_eq!(ids, (0..9000).collect::<Vec<u32>>());
    }

    #[test]
    fn min_p_drops_tokens_below_min_p_times_the_best() {
        // Relative to the best (0.5): 1, 0.6, 0.12, 0.08, 0.06.
        let logits = logits_of(&[0.04, 0.5, 0.3, 0.03, 0.06]);
        let m = |min_p| SamplerParams { min_p, ..plain() };
        assert_eq!(kept(m(0.1), &logits), [1, 2, 4]);
        assert_eq!(kept(m(0.07), &logits), [0, 1, 2, 4]);
        assert_eq!(kept(m(1.0), &logits), [1]);
        // With top-k, same answer.
        let mk = SamplerParams { top_k: 4, ..m(0.1) };
        assert_eq!(kept(mk, &logits), [1, 2, 4]);
    }

    #[test]
    fn repetition_penalty_changes_the_choice() {
        let params = SamplerParams { repeat_penalty: 1.1, repeat_last_n: 3, ..SamplerParams::greedy() };
        let mut s = Sampler::new(params).unwrap();
        let positive = [2.0, 1.9, 0.0];
        let negative = [-1.0, -1.05, -3.0];
        assert_eq!(s.sample(&positive).unwrap(), 0);
        assert_eq!(s.sample(&negative).unwrap(), 0);
        s.accept(0);
        // 2 / 1.1 = 1.82 < 1.9; −1 · 1.1 = −1.1 < −1.05.
        assert_eq!(s.sample(&positive).unwrap(), 1);
        assert_eq!(s.sample(&negative).unwrap(), 1);
        // Three more tokens push token 0 out of the last 3.
        for t in [2, 2, 1] {
            s.accept(t);
        }
        assert_eq!(s.sample(&positive).unwrap(), 0);
        // Ids beyond the row are ignored; reset forgets.
        for t in [1_000_000, 2, 0] {
            s.accept(t);
        }
        assert_eq!(s.sample(&positive).unwrap(), 1);
        s.reset();
        assert_eq!(s.sample(&positive).unwrap(), 0);
    }

    #[test]
    fn non_finite_logits_never_panic() {
        let nan = f32::NAN;
        let inf = f32::INFINITY;
        for params in [SamplerParams::greedy(), SamplerParams::default(), plain()] {
            let mut s = Sampler::new(params).unwrap();
            assert_eq!(s.sample(&[nan, nan, nan]).unwrap(), 0);
            assert_eq!(s.sample(&[-inf, nan, -inf]).unwrap(), 0);
            assert_eq!(s.sample(&[nan, -inf, 1.0, nan]).unwrap(), 2);
            assert_eq!(s.sample(&[nan, 3.0, inf, f32::MAX]).unwrap() / 2, 1);
            let t = s.sample(&[nan, 0.3, nan, 0.2, -inf]).unwrap();
            assert!(t == 1 || t == 3, "{t}");
        }
        // Anything at all, with any valid parameters: a token of the row, never a NaN one
        // unless there is nothing else.
        let mut rng = StdRng::seed_from_u64(5);
        let specials = [nan, inf, -inf, f32::MAX, -f32::MAX, f32::MIN_POSITIVE, 0.0, -0.0];
        for _ in 0..2000 {
            let n = rng.gen_range(1..300);
            let logits: Vec<f32> = (0..n)
                .map(|_| match rng.gen_range(0..3) {
                    0 => specials[rng.gen_range(0..specials.len())],
                    _ => rng.gen_range(-50.0..50.0),
                })
                .collect();
            let params = SamplerParams {
                temperature: [0.0, 1e-30, 0.7, 1e30][rng.gen_range(0..4)],
                top_k: rng.gen_range(0..10),
                top_p: rng.gen(),
                min_p: rng.gen(),
                repeat_penalty: [1.0, 0.5, 1.3, 1e-30][rng.gen_range(0..4)],
                repeat_last_n: 8,
                seed: rng.gen(),
            };
            let mut s = Sampler::new(params).unwrap();
            for _ in 0..4 {
                s.accept(rng.gen_range(0..n as u32 + 5));
            }
            let t = s.sample(&logits).unwrap() as usize;
            assert!(t < n);
            // A NaN token only as the fallback, token 0, when nothing else is usable.
            assert!(!logits[t].is_nan() || t == 0, "{logits:?} -> {t}");
        }
    }

    #[test]
    fn empty_logits_are_an_error() {
        let mut s = Sampler::new(SamplerParams::default()).unwrap();
        let err = s.sample(&[]).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn invalid_parameters_are_rejected_by_name() {
        let d = SamplerParams::default();
        let cases = [
            ("temperature", SamplerParams { temperature: f32::NAN, ..d }),
            ("temperature", SamplerParams { temperature: -0.1, ..d }),
            ("temperature", SamplerParams { temperature: f32::INFINITY, ..d }),
            ("top_p", SamplerParams { top_p: f32::NAN, ..d }),
            ("top_p", SamplerParams { top_p: -0.01, ..d }),
            ("top_p", SamplerParams { top_p: 1.01, ..d }),
            ("min_p", SamplerParams { min_p: f32::NAN, ..d }),
            ("min_p", SamplerParams { min_p: -1.0, ..d }),
            ("min_p", SamplerParams { min_p: 2.0, ..d }),
            ("repeat_penalty", SamplerParams { repeat_penalty: f32::NAN, ..d }),
            ("repeat_penalty", SamplerParams { repeat_penalty: 0.0, ..d }),
            ("repeat_penalty", SamplerParams { repeat_penalty: -1.0, ..d }),
            ("repeat_penalty", SamplerParams { repeat_penalty: f32::INFINITY, ..d }),
        ];
        for (name, params) in cases {
            let err = Sampler::new(params).unwrap_err().to_string();
            println!("{err}");
            assert!(err.contains(name), "{err:?} should name {name}");
        }
        for ok in [
            d,
            SamplerParams::greedy(),
            SamplerParams { top_p: 0.0, min_p: 1.0, top_k: u32::MAX, ..d },
            SamplerParams { repeat_last_n: usize::MAX, repeat_penalty: 0.5, ..d },
        ] {
            ok.validate().unwrap();
        }
    }

    /// llama.cpp's chain written plainly: full sort, top-k, top-p over the softmax of what
    /// top-k kept, min-p. Ranks ties by id like the sampler does.
    fn reference_kept(logits: &[f32], p: &SamplerParams) -> Vec<u32> {
        let sanitized = |l: f32| if l.is_nan() { f32::NEG_INFINITY } else { l.min(f32::MAX) };
        let mut c: Vec<Candidate> = (0..logits.len() as u32)
            .map(|id| Candidate { logit: sanitized(logits[id as usize]), id })
            .filter(|c| c.logit != f32::NEG_INFINITY)
            .collect();
        c.sort_by(by_rank);
        if p.top_k > 0 {
            c.truncate(p.top_k as usize);
        }
        let max = c[0].logit;
        if p.top_p < 1.0 {
            let z: f64 = c.iter().map(|c| weight(c.logit, max)).sum();
            let mut acc = 0.0;
            let n = c
                .iter()
                .position(|c| {
                    acc += weight(c.logit, max);
                    acc >= f64::from(p.top_p) * z
                })
                .map_or(c.len(), |i| i + 1);
            c.truncate(n);
        }
        if p.min_p > 0.0 {
            c.retain(|c| c.logit >= max + p.min_p.ln());
        }
        let mut ids: Vec<u32> = c.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn fast_paths_match_the_plain_chain() {
        let mut rng = StdRng::seed_from_u64(6);
        for case in 0..400 {
            let n = [10, 300, 5000, 40_000][case % 4];
            // Quarter steps make ties common; a few NaN and infinities.
            let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
            let logits: Vec<f32> = (0..n)
                .map(|_| match rng.gen_range(0..100) {
                    0 => specials[rng.gen_range(0..3)],
                    _ => (rng.gen_range(-40..40) as f32) / 4.0,
                })
                .collect();
            let params = SamplerParams {
                top_k: [0, 1, 5, 40, 2000][rng.gen_range(0..5)],
                top_p: [1.0, 0.37, 0.61, 0.93, 0.999][rng.gen_range(0..5)],
                min_p: [0.0, 0.013, 0.05, 0.3][rng.gen_range(0..4)],
                ..plain()
            };
            assert_eq!(kept(params, &logits), reference_kept(&logits, &params), "n = {n}, {params:?}");
        }
    }

    #[test]
    fn timing_of_one_sample_over_262144_logits() {
        let mut rng = StdRng::seed_from_u64(7);
        let logits = random_logits(&mut rng, 262_144);
        let configs = [
            ("default (top-k 40, top-p 0.95, min-p 0.05)", SamplerParams::default()),
            ("greedy", SamplerParams::greedy()),
            ("top-p 0.95 + min-p 0.05, no top-k", SamplerParams { top_k: 0, ..SamplerParams::default() }),
            ("top-p 0.95 alone", SamplerParams { top_k: 0, min_p: 0.0, ..SamplerParams::default() }),
            (
                "default + repeat penalty 1.1 over 64 tokens",
                SamplerParams { repeat_penalty: 1.1, ..SamplerParams::default() },
            ),
        ];
        for (name, params) in configs {
            let mut s = Sampler::new(params).unwrap();
            for t in 0..64 {
                s.accept(t * 997);
            }
            // The first call sizes the buffers; then the minimum and median of 30 timed calls.
            s.sample(&logits).unwrap();
            let mut times: Vec<_> = (0..30)
                .map(|_| {
                    let start = std::time::Instant::now();
                    std::hint::black_box(s.sample(std::hint::black_box(&logits)).unwrap());
                    start.elapsed()
                })
                .collect();
            times.sort_unstable();
            println!("sample over 262144 logits, {name}: min {:?}, median {:?}", times[0], times[15]);
        }
    }
}
