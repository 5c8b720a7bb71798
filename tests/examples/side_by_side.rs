//! Our runtime and llama.cpp (libllama, built by `llama-cpp-sys-2`) side by side on one GGUF:
//! the same threads, prompt and generation lengths, runs alternating between the two in one
//! process (so machine load hits both alike), then each one's peak RSS in a child process of
//! its own at the same context size. Prints tokens/s for both and the ratio ours / llama.cpp.
//!
//!     cargo run --release -p gemma-tests --example side_by_side -- MODEL.gguf \
//!         [-p 512] [-n 128] [-t 2] [-r 5] [-c 4096] [--fa] [--no-pool] [--no-rss]
//!
//! The tests are llama-bench's (see `gemma bench`): `pp<P>` feeds a P-token prompt (BOS, then
//! random tokens) to an empty cache, logits for the last token only; `tg<N>` feeds N tokens
//! one decode step at a time to an empty cache. Each runtime gets a persistent thread pool (as
//! llama-bench attaches one to llama.cpp, and as `gemma` does) unless `--no-pool`. llama.cpp
//! runs with a window-sized cache for the sliding-window layers (`swa_full = false`), as ours.
//! The ratio column is the median of the per-repetition ratios (each pair ran back to back).
use gemma_gguf::model::{LoadOptions, Model};
use gemma_gguf::session::{Outputs, Session, SessionOptions};
use gemma_tests::bench::{mean_sd, median, settle};
use gemma_tests::llama_logits::{LlamaOptions, LlamaRunner};
use std::path::PathBuf;
use std::time::Instant;

struct Opts {
    model: PathBuf,
    n_prompt: u32,
    n_gen: u32,
    threads: usize,
    reps: usize,
    n_ctx_rss: u32,
    flash_attn: bool,
    pool: bool,
    rss: bool,
}

fn parse(args: Vec<String>) -> Opts {
    let mut o = Opts {
        model: PathBuf::new(),
        n_prompt: 512,
        n_gen: 128,
        threads: 2,
        reps: 5,
        n_ctx_rss: 4096,
        flash_attn: false,
        pool: true,
        rss: true,
    };
    let mut args = args.into_iter();
    let num = |v: Option<String>, what: &str| -> u64 {
        v.and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{what} takes a number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "-p" => o.n_prompt = num(args.next(), "-p") as u32,
            "-n" => o.n_gen = num(args.next(), "-n") as u32,
            "-t" => o.threads = num(args.next(), "-t") as usize,
            "-r" => o.reps = num(args.next(), "-r").max(1) as usize,
            "-c" => o.n_ctx_rss = num(args.next(), "-c") as u32,
            "--fa" => o.flash_attn = true,
            "--no-pool" => o.pool = false,
            "--no-rss" => o.rss = false,
            _ if o.model.as_os_str().is_empty() => o.model = PathBuf::from(a),
            _ => panic!("unknown argument {a:?}"),
        }
    }
    assert!(!o.model.as_os_str().is_empty(), "usage: side_by_side MODEL.gguf [-p N] [-n N] [-t N] [-r N]");
    o
}

/// SplitMix64, for the random prompt tokens (both runtimes get the same ones).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        (gemma_gguf::sampler::splitmix64(&mut self.0) % n as u64) as u32
    }
}

/// One side of the comparison: decode a prompt, or generate, from an empty cache.
trait Runtime {
    fn clear(&mut self);
    fn feed(&mut self, tokens: &[u32]);
}

struct Ours<'m> {
    session: Session<'m>,
    logits: Vec<f32>,
}

impl Runtime for Ours<'_> {
    fn clear(&mut self) {
        self.session.reset();
    }
    fn feed(&mut self, tokens: &[u32]) {
        self.session.decode_into(tokens, Outputs::Last, &mut self.logits).expect("decode");
    }
}

impl Runtime for LlamaRunner {
    fn clear(&mut self) {
        LlamaRunner::clear(self);
    }
    fn feed(&mut self, tokens: &[u32]) {
        self.decode(tokens);
    }
}

/// Seconds for one llama-bench run: `prompt` at once, then `n_gen` single-token steps.
fn timed(rt: &mut dyn Runtime, prompt: &[u32], gen: &[u32]) -> f64 {
    rt.clear();
    let start = Instant::now();
    if !prompt.is_empty() {
        rt.feed(prompt);
    }
    for &t in gen {
        rt.feed(&[t]);
    }
    start.elapsed().as_secs_f64()
}

fn load_ours(o: &Opts) -> Model {
    let lo = LoadOptions { threads: Some(o.threads), ..Default::default() };
    Model::load(&o.model, &lo).expect("our runtime loads the model")
}

fn session_opts(o: &Opts, n_ctx: u32) -> SessionOptions {
    SessionOptions { n_ctx, flash_attn: o.flash_attn, ..Default::default() }
}

fn load_llama(o: &Opts, n_ctx: u32) -> LlamaRunner {
    let lo = LlamaOptions { capture: &[], n_ctx, n_threads: o.threads as i32, flash_attn: o.flash_attn };
    let mut ll = LlamaRunner::load(&o.model, lo);
    if o.pool {
        ll.attach_threadpool(o.threads as i32);
    }
    ll
}

/// Child mode: one runtime alone, a session of `n_ctx`, the prompt and generation; prints
/// peak RSS in KiB.
fn rss_child(which: &str, o: &Opts) {
    let mut rng = Rng(7);
    let ours_model;
    let (mut rt, n_vocab): (Box<dyn Runtime>, u32) = if which == "ours" {
        ours_model = load_ours(o);
        let session = Session::new(&ours_model, session_opts(o, o.n_ctx_rss)).expect("session");
        (Box::new(Ours { session, logits: Vec::new() }), ours_model.n_vocab())
    } else {
        let ll = load_llama(o, o.n_ctx_rss);
        let n = ll.n_vocab() as u32;
        (Box::new(ll), n)
    };
    let prompt: Vec<u32> = std::iter::once(2).chain((1..o.n_prompt).map(|_| rng.below(n_vocab))).collect();
    let gen: Vec<u32> = (0..o.n_gen).map(|_| rng.below(n_vocab)).collect();
    timed(rt.as_mut(), &prompt, &gen);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1));
    println!("{}", hwm.unwrap_or("0"));
}

fn child_rss(which: &str) -> f64 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = std::process::Command::new(std::env::current_exe().expect("own path"))
        .args(&args)
        .env("SIDE_BY_SIDE_CHILD", which)
        .output()
        .expect("spawn child");
    assert!(out.status.success(), "{which} child failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().unwrap_or(0.0) / 1024.0
}

fn main() {
    gemma_gguf::ggml::set_logging(false);
    if let Ok(which) = std::env::var("SIDE_BY_SIDE_CHILD") {
        let o = parse(std::env::args().skip(1).collect());
        rss_child(&which, &o);
        return;
    }
    let o = parse(std::env::args().skip(1).collect());
    let model = load_ours(&o);
    let n_vocab = model.n_vocab();
    let bos = model.tokenizer().bos();
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "model {} · threads {} · flash attention {} · thread pool {} · load average before: {}",
        o.model.display(),
        o.threads,
        o.flash_attn,
        o.pool,
        load_avg.trim()
    );
    let mut rng = Rng(0x0062_656e_6368);
    let mut rows = Vec::new();
    for (name, n_prompt, n_gen) in
        [(format!("pp{}", o.n_prompt), o.n_prompt, 0), (format!("tg{}", o.n_gen), 0, o.n_gen)]
    {
        if n_prompt + n_gen == 0 {
            continue;
        }
        let n_ctx = n_prompt + n_gen;
        let mut ours =
            Ours { session: Session::new(&model, session_opts(&o, n_ctx)).expect("session"), logits: vec![] };
        let mut llama = load_llama(&o, n_ctx);
        let tokens = |rng: &mut Rng, n: u32| -> Vec<u32> {
            std::iter::once(bos).chain((1..n).map(|_| rng.below(n_vocab))).collect()
        };
        let (mut t_ours, mut t_llama) = (Vec::new(), Vec::new());
        for rep in 0..=o.reps {
            let prompt = if n_prompt > 0 { tokens(&mut rng, n_prompt) } else { vec![] };
            let gen = if n_gen > 0 { tokens(&mut rng, if rep == 0 { 1 } else { n_gen }) } else { vec![] };
            // Alternate who goes first, so a load change favours neither; before each run, a
            // pause (gemma_tests::bench::SETTLE_MS says why).
            let (a, b) = if rep % 2 == 0 {
                settle();
                let a = timed(&mut ours, &prompt, &gen);
                settle();
                (a, timed(&mut llama, &prompt, &gen))
            } else {
                settle();
                let b = timed(&mut llama, &prompt, &gen);
                settle();
                (timed(&mut ours, &prompt, &gen), b)
            };
            if rep > 0 {
                // rep 0 warms both up, as llama-bench's warm-up run
                t_ours.push(n_ctx as f64 / a);
                t_llama.push(n_ctx as f64 / b);
            }
        }
        let ratios: Vec<f64> = t_ours.iter().zip(&t_llama).map(|(a, b)| a / b).collect();
        rows.push((name, mean_sd(&t_ours), mean_sd(&t_llama), median(ratios.clone()), ratios));
    }
    println!("\n| test | ours t/s | llama.cpp t/s | ours / llama.cpp (median) | per-run ratios |");
    println!("| --- | ---: | ---: | ---: | --- |");
    for (name, (ma, sa), (mb, sb), r, all) in &rows {
        let all: Vec<String> = all.iter().map(|x| format!("{x:.3}")).collect();
        println!("| {name} | {ma:.2} ± {sa:.2} | {mb:.2} ± {sb:.2} | {r:.3} | {} |", all.join(" "));
    }
    if o.rss {
        // Children one after the other, twice each, alternating: peak RSS barely depends on load.
        let (mut ro, mut rl) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            ro.push(child_rss("ours"));
            rl.push(child_rss("llama"));
        }
        let (ro, rl) = (ro.iter().cloned().fold(0.0, f64::max), rl.iter().cloned().fold(0.0, f64::max));
        println!(
            "\npeak RSS at n_ctx {} (pp{} + tg{}): ours {ro:.1} MiB, llama.cpp {rl:.1} MiB, ratio {:.3}",
            o.n_ctx_rss,
            o.n_prompt,
            o.n_gen,
            ro / rl
        );
    }
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after: {}", load_avg.trim());
}
