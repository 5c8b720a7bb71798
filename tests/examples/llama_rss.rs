//! llama.cpp's peak memory for the same job as `gemma run`: load the model with libllama,
//! a context of N tokens (default 4096), a prompt, 32 greedy tokens; prints peak RSS.
//!
//!     cargo run --release -p gemma-tests --example llama_rss -- MODEL.gguf [N_CTX]
use gemma_tests::llama_logits::{LlamaOptions, LlamaRunner};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = std::path::PathBuf::from(args.next().expect("usage: llama_rss MODEL.gguf [N_CTX]"));
    let n_ctx: u32 = args.next().map_or(4096, |s| s.parse().expect("N_CTX"));
    let mut ll = LlamaRunner::load(&path, LlamaOptions { capture: &[], n_ctx, n_threads: 2, flash_attn: false });
    let toks = ll.tokenize("The capital of France is", true);
    let mut row = ll.eval(&toks, false);
    for _ in 0..32 {
        let t = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i) as u32;
        row = ll.eval(&[t], false);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap_or("VmHWM: ?");
    println!("llama.cpp n_ctx {n_ctx}: {hwm}");
}
