//! Four greedy streams at once against the same four requests one after another, ours and
//! llama.cpp's (libllama, built by `llama-cpp-sys-2`), on one GGUF, in one process:
//!
//! | mode | what runs | as in |
//! |---|---|---|
//! | ours, one after another | one session, each request's prompt then its tokens | `gemma serve` |
//! | ours, 4 sessions in turn | a session per stream, each step decodes them one by one | `gemma serve --parallel 4` |
//! | ours, batched | `Session::with_sequences(4)`, a token of every stream in one graph per step | `gemma serve --parallel 4 --batching` |
//! | llama.cpp, one after another | one sequence, each request in turn | `llama-server -np 1` |
//! | llama.cpp, batched | a unified cache of 4 sequences, one `llama_batch` per step with a token of each | `llama-server -np 4 --kv-unified` |
//!
//!     cargo run --release -p gemma-tests --example batched_vs_llama -- MODEL.gguf \
//!         [-n 64] [-t 2] [-r 3] [--no-pool]
//!
//! Every mode feeds the same four prompts (tests' PROMPTS, tokenized by ours), then `-n`
//! decode steps per stream, each feeding the greedy choice of the step before. Timed
//! separately: the prompts, and the decode steps (generated tokens/s = 4 × n / their time).
//! Repetitions rotate the order of the modes (a load change favours none); the first one
//! warms up and is not counted. Each mode's tokens are compared with ours one after another:
//! batched decoding may part from them at a near-tie (tests/tests/multi_seq.rs says why).
//! It prints; it asserts nothing about time.
use gemma_gguf::model::{LoadOptions, Model};
use gemma_gguf::session::{Outputs, SeqTokens, Session, SessionOptions};
use gemma_tests::bench::{mean_sd, median, settle};
use gemma_tests::llama_logits::{LlamaOptions, LlamaRunner};
use gemma_tests::serve::PROMPTS;
use std::path::PathBuf;
use std::time::Instant;

const N_STREAMS: usize = 4;
/// Each stream's context: its prompt (at most 12 tokens) and up to 244 generated ones.
const N_CTX_SEQ: u32 = 256;

/// Decodes sequences: each entry's tokens after what its sequence holds; one logits row per
/// entry, in order.
trait Seqs {
    fn clear(&mut self);
    fn feed(&mut self, entries: &[(usize, &[u32])], logits: &mut Vec<f32>);
}

/// Ours, a session per sequence, fed one after the other (the server's default).
struct OursOwn<'m>(Vec<Session<'m>>);

impl Seqs for OursOwn<'_> {
    fn clear(&mut self) {
        self.0.iter_mut().for_each(Session::reset);
    }
    fn feed(&mut self, entries: &[(usize, &[u32])], logits: &mut Vec<f32>) {
        let mut row = Vec::new();
        logits.clear();
        for &(seq, tokens) in entries {
            self.0[seq].decode_into(tokens, Outputs::Last, &mut row).expect("decode");
            logits.extend_from_slice(&row);
        }
    }
}

/// Ours, every sequence in one shared cache, one graph per call (`--batching`).
struct OursShared<'m>(Session<'m>);

impl Seqs for OursShared<'_> {
    fn clear(&mut self) {
        self.0.reset();
    }
    fn feed(&mut self, entries: &[(usize, &[u32])], logits: &mut Vec<f32>) {
        let batch: Vec<SeqTokens<'_>> =
            entries.iter().map(|&(seq, tokens)| SeqTokens { seq: seq as u16, tokens }).collect();
        self.0.decode_seqs(&batch, logits).expect("decode_seqs");
    }
}

impl Seqs for LlamaRunner {
    fn clear(&mut self) {
        LlamaRunner::clear(self);
    }
    fn feed(&mut self, entries: &[(usize, &[u32])], logits: &mut Vec<f32>) {
        *logits = self.decode_seqs(entries);
    }
}

fn argmax(row: &[f32]) -> u32 {
    (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a))).unwrap_or(0) as u32
}

/// One timed run: seconds for the prompts and for the decode steps, and each stream's tokens.
struct Run {
    prompt_s: f64,
    gen_s: f64,
    tokens: Vec<Vec<u32>>,
}

/// All streams together: the prompts in one call, then each step one call with a token of each.
fn together(rt: &mut dyn Seqs, prompts: &[Vec<u32>], n_gen: usize) -> Run {
    let mut logits = Vec::new();
    rt.clear();
    let t = Instant::now();
    let entries: Vec<(usize, &[u32])> = prompts.iter().enumerate().map(|(i, p)| (i, p.as_slice())).collect();
    rt.feed(&entries, &mut logits);
    let prompt_s = t.elapsed().as_secs_f64();
    let n_vocab = logits.len() / prompts.len();
    let mut tokens: Vec<Vec<u32>> = logits.chunks(n_vocab).map(|r| vec![argmax(r)]).collect();
    let t = Instant::now();
    for _ in 0..n_gen {
        let last: Vec<[u32; 1]> = tokens.iter().map(|t| [t[t.len() - 1]]).collect();
        let entries: Vec<(usize, &[u32])> = last.iter().enumerate().map(|(i, t)| (i, t.as_slice())).collect();
        rt.feed(&entries, &mut logits);
        for (t, row) in tokens.iter_mut().zip(logits.chunks(n_vocab)) {
            t.push(argmax(row));
        }
    }
    Run { prompt_s, gen_s: t.elapsed().as_secs_f64(), tokens }
}

/// One stream after another in sequence 0, from an empty cache each.
fn one_by_one(rt: &mut dyn Seqs, prompts: &[Vec<u32>], n_gen: usize) -> Run {
    let (mut prompt_s, mut gen_s, mut tokens, mut logits) = (0.0, 0.0, Vec::new(), Vec::new());
    for p in prompts {
        rt.clear();
        let t = Instant::now();
        rt.feed(&[(0, p.as_slice())], &mut logits);
        prompt_s += t.elapsed().as_secs_f64();
        let mut got = vec![argmax(&logits)];
        let t = Instant::now();
        for _ in 0..n_gen {
            rt.feed(&[(0, &got[got.len() - 1..])], &mut logits);
            got.push(argmax(&logits));
        }
        gen_s += t.elapsed().as_secs_f64();
        tokens.push(got);
    }
    Run { prompt_s, gen_s, tokens }
}

struct Opts {
    model: PathBuf,
    n_gen: usize,
    threads: usize,
    reps: usize,
    pool: bool,
}

fn parse() -> Opts {
    let mut o = Opts { model: PathBuf::new(), n_gen: 64, threads: 2, reps: 3, pool: true };
    let mut args = std::env::args().skip(1);
    let num = |v: Option<String>, what: &str| -> usize {
        v.and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{what} takes a number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "-n" => o.n_gen = num(args.next(), "-n").clamp(1, 200),
            "-t" => o.threads = num(args.next(), "-t").max(1),
            "-r" => o.reps = num(args.next(), "-r").max(1),
            "--no-pool" => o.pool = false,
            _ if o.model.as_os_str().is_empty() => o.model = PathBuf::from(a),
            _ => panic!("unknown argument {a:?}"),
        }
    }
    assert!(!o.model.as_os_str().is_empty(), "usage: batched_vs_llama MODEL.gguf [-n N] [-t N] [-r N] [--no-pool]");
    o
}

fn llama(o: &Opts, n_seq: u32) -> LlamaRunner {
    let lo = LlamaOptions { capture: &[], n_ctx: N_CTX_SEQ * n_seq, n_threads: o.threads as i32, flash_attn: false };
    let mut ll = LlamaRunner::with_sequences(&o.model, lo, n_seq);
    if o.pool {
        ll.attach_threadpool(o.threads as i32);
    }
    ll
}

fn main() {
    gemma_gguf::ggml::set_logging(false);
    let o = parse();
    let model = Model::load(&o.model, &LoadOptions { threads: Some(o.threads), ..Default::default() })
        .expect("our runtime loads the model");
    let tok = model.tokenizer();
    let prompts: Vec<Vec<u32>> = PROMPTS[..N_STREAMS].iter().map(|p| tok.encode(p, tok.adds_bos())).collect();
    let seq_opts = SessionOptions { n_ctx: N_CTX_SEQ, ..SessionOptions::default() };
    let session = || Session::new(&model, seq_opts).expect("session");
    let shared_opts = SessionOptions { n_ctx: N_CTX_SEQ * N_STREAMS as u32, ..seq_opts };
    let mut one = OursOwn(vec![session()]);
    let mut own = OursOwn((0..N_STREAMS).map(|_| session()).collect());
    let mut shared =
        OursShared(Session::with_sequences(&model, shared_opts, N_STREAMS as u32).expect("a 4-sequence session"));
    let (mut ll_one, mut ll_batched) = (llama(&o, 1), llama(&o, N_STREAMS as u32));
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "model {} · {N_STREAMS} streams × {} decode steps · threads {} · thread pool {} · load average before: {}",
        o.model.display(),
        o.n_gen,
        o.threads,
        o.pool,
        load_avg.trim()
    );
    type Mode<'a> = (&'static str, &'a mut dyn Seqs, bool);
    let mut modes: Vec<Mode<'_>> = vec![
        ("ours, one after another", &mut one as &mut dyn Seqs, false),
        ("ours, 4 sessions in turn (--parallel 4)", &mut own as &mut dyn Seqs, true),
        ("ours, batched (--parallel 4 --batching)", &mut shared as &mut dyn Seqs, true),
        ("llama.cpp, one after another", &mut ll_one as &mut dyn Seqs, false),
        ("llama.cpp, batched (-np 4, unified cache)", &mut ll_batched as &mut dyn Seqs, true),
    ];
    let n = modes.len();
    let (mut gen_tps, mut prompt_s): (Vec<Vec<f64>>, Vec<Vec<f64>>) = (vec![Vec::new(); n], vec![Vec::new(); n]);
    let mut tokens: Vec<Vec<Vec<u32>>> = vec![Vec::new(); n];
    for rep in 0..=o.reps {
        for k in 0..n {
            let m = (k + rep) % n;
            let (_, rt, is_together) = &mut modes[m];
            settle();
            let run = if *is_together {
                together(&mut **rt, &prompts, o.n_gen)
            } else {
                one_by_one(&mut **rt, &prompts, o.n_gen)
            };
            if rep > 0 {
                gen_tps[m].push((N_STREAMS * o.n_gen) as f64 / run.gen_s);
                prompt_s[m].push(run.prompt_s);
            }
            tokens[m] = run.tokens;
        }
    }
    let base = median(gen_tps[n - 1].clone());
    let alone = median(gen_tps[0].clone());
    println!("\n| mode | generated t/s | prompts ms | / llama.cpp batched | / ours one after another | streams equal to ours one after another |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (m, (name, _, _)) in modes.iter().enumerate() {
        let (tps, sd) = mean_sd(&gen_tps[m]);
        let same = tokens[m].iter().zip(&tokens[0]).filter(|(a, b)| a == b).count();
        println!(
            "| {name} | {tps:.2} ± {sd:.2} | {:.0} | {:.3} | {:.3} | {same}/{N_STREAMS} |",
            1000.0 * median(prompt_s[m].clone()),
            median(gen_tps[m].clone()) / base,
            median(gen_tps[m].clone()) / alone,
        );
    }
    for (p, t) in PROMPTS.iter().zip(&tokens[0]) {
        println!("{p:?} → {:?}", tok.decode(&t[..t.len().min(12)]));
    }
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after: {}", load_avg.trim());
}
