//! `gemma`: run, inspect and measure Gemma models stored as GGUF files, on ggml.
use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod bench;
mod chart;
mod chat;
mod common;
mod compare;
mod convert;
mod image;
mod info;
mod perplexity;
mod run;
mod serve;
mod sweep;
mod system;

/// Run, inspect and measure Gemma models stored as GGUF files (llama.cpp's format), on ggml's
/// CPU, Vulkan and CUDA backends.
#[derive(Parser)]
#[command(name = "gemma", propagate_version = true)]
struct Cli {
    /// Show ggml's own log messages (backend setup, weight repacking…) on stderr.
    #[arg(long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what ggml detected on this machine: CPU features (AVX2, AVX512, NEON, dot-product…),
    /// backends and devices, and the thread count that would be used.
    System(system::Args),
    /// Show what a GGUF file holds: architecture and hyper-parameters, tokenizer, chat
    /// template, metadata, and parameters and bytes per tensor type (--tensors: each tensor).
    ///
    /// Only the header is parsed; tensor data is not read, so this is quick for any size.
    /// A malformed file gives a one-line error naming what is wrong, and exit status 1.
    Info(info::Args),
    /// Complete a prompt: streams the text to stdout; load time, speeds and memory go to
    /// stderr. The prompt comes from -p, -f or standard input.
    Run(run::Args),
    /// Chat with an instruction-tuned model, multi-turn, keeping the KV cache between turns.
    /// Reads one user message per line (interactive or piped); /reset and /quit.
    Chat(chat::Args),
    /// Measure prompt processing and generation speed (tokens/s, mean ± std over -r runs) and
    /// peak memory, as llama-bench does: `-p 512 -n 128 -t 4`; comma-separated values give
    /// one row each. Markdown table (default) or `--output json`.
    Bench(bench::Args),
    /// Perplexity over a text, llama-perplexity's way: chunks of -c tokens (default 512),
    /// each from an empty cache with BOS first, scored on its second half; prints
    /// `PPL = x +/- y` (the uncertainty as llama.cpp estimates it).
    Perplexity(perplexity::Args),
    /// Compare models with a base on the same text: perplexity and its ratio, KL-divergence
    /// (mean, median, p99, max), top-1 agreement, top-5 overlap, RMS of the change in the
    /// next token's probability. Table on stdout; --json, --csv and --chart (SVG/PNG: mean KL
    /// against bits per weight) on request. --save-base keeps the base's top-k logits in a
    /// file that --base-logits reuses.
    Compare(compare::Args),
    /// Convert a Hugging Face checkpoint to several types (--types f16,q8_0,q4_k_m,q4_k),
    /// compare each with the highest-precision one on a text, print the table, draw the
    /// chart, and recommend the smallest file within --kl-budget.
    Sweep(sweep::Args),
    /// Convert a Hugging Face checkpoint (Gemma 1, 2, 3 or 4, the text model of a
    /// conditional-generation checkpoint too: config.json, safetensors, tokenizer) to a GGUF that llama.cpp and gemma both load: `gemma convert DIR -o
    /// OUT.gguf --type q4_k_m`. One pass, bounded memory, a summary of the type chosen for
    /// each tensor and why.
    Convert(convert::ConvertArgs),
    /// Serve the model over HTTP with OpenAI's API: /v1/chat/completions, /v1/completions
    /// (streaming too), /v1/models, /health, /metrics. Loopback only unless --host says
    /// otherwise; --parallel N requests at once; --api-key to require a key.
    Serve(serve::Args),
    /// Requantise a GGUF to another type or mix: `gemma quantize IN.gguf OUT.gguf --type q8_0`.
    Quantize(convert::QuantizeArgs),
}

fn main() {
    let version = system::version_text();
    let cmd = Cli::command().version(version.clone()).long_version(version);
    let cli = match Cli::from_arg_matches(&cmd.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Err(e) = run(cli) {
        eprintln!("error: {}", error_chain(&e));
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    gemma_gguf::ggml::set_logging(cli.verbose);
    match cli.command {
        Command::System(args) => system::run(args),
        Command::Info(args) => info::run(args),
        Command::Run(args) => run::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Perplexity(args) => perplexity::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Sweep(args) => sweep::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Convert(args) => convert::run_convert(args),
        Command::Quantize(args) => convert::run_quantize(args),
    }
}

/// The error and its causes on one line, leaving out a cause whose text the previous
/// message already contains.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}
