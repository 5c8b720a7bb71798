//! `gemma perplexity`: a model's perplexity over a text, llama-perplexity's way; and the flags,
//! text loading and progress bar that `compare` and `sweep` share with it.
use anyhow::{bail, Context as _, Result};
use gemma_gguf::model::{LoadOptions, Model};
use gemma_gguf::quality::{self, Chunks, Perplexity};
use gemma_gguf::session::{Session, SessionOptions};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// llama-perplexity's default chunk size (its `-c`).
pub const DEFAULT_CHUNK: usize = 512;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF model file.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// The text to score (UTF-8), e.g. tests/data/text/alice.txt.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    #[command(flatten)]
    pub eval: EvalArgs,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// How a text is scored: chunking and runtime flags.
#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// Chunk size in tokens (llama-perplexity's -c): each chunk is evaluated from an empty
    /// cache, BOS first, and scored on its second half. The text needs at least two chunks.
    #[arg(short = 'c', long = "ctx-size", default_value_t = DEFAULT_CHUNK)]
    pub chunk: usize,
    /// Score only the first N chunks (default: as many as the text fills).
    #[arg(long = "chunks")]
    pub chunks: Option<usize>,
    /// Compute threads (default: the logical CPUs).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Device to run on, as `gemma --version` lists them (CPU, CUDA0, Vulkan0…).
    #[arg(long = "device")]
    pub device: Option<String>,
    /// Use ggml's fused flash-attention kernel.
    #[arg(long = "flash-attn", visible_alias = "fa")]
    pub flash_attn: bool,
    /// Keep every weight mapped from the file (no repacking into the CPU's faster layout).
    #[arg(long = "no-repack")]
    pub no_repack: bool,
}

impl EvalArgs {
    pub fn load(&self, path: &Path) -> Result<Model> {
        let opts = LoadOptions {
            device: self.device.clone(),
            threads: self.threads,
            no_repack: self.no_repack,
            ..Default::default()
        };
        Model::load(path, &opts).with_context(|| format!("loading {}", path.display()))
    }

    /// A session whose context is one chunk of `n_ctx` tokens.
    pub fn session<'m>(&self, model: &'m Model, n_ctx: usize) -> Result<Session<'m>> {
        let n_ctx = u32::try_from(n_ctx).context("chunk size")?;
        let opts = SessionOptions { n_ctx, flash_attn: self.flash_attn, ..Default::default() };
        Ok(Session::new(model, opts)?)
    }

    /// The text's tokens (model's tokenizer, BOS when it adds one) cut into chunks.
    pub fn chunks(&self, model: &Model, text: &str) -> Result<Chunks> {
        let tok = model.tokenizer();
        let tokens = tok.encode(text, true);
        let bos = tok.adds_bos().then(|| tok.bos());
        Chunks::new(&tokens, self.chunk, self.chunks, bos)
            .with_context(|| format!("the text is {} tokens, the chunk size {} (-c)", tokens.len(), self.chunk))
    }
}

/// Reads a UTF-8 text file.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    match String::from_utf8(bytes) {
        Ok(text) if !text.trim().is_empty() => Ok(text),
        Ok(_) => bail!("{} is empty", path.display()),
        Err(e) => bail!("{} is not UTF-8 (invalid byte at offset {})", path.display(), e.utf8_error().valid_up_to()),
    }
}

/// A progress bar over `n` chunks on stderr (hidden when stderr is not a terminal).
pub fn progress(n: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(n as u64);
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} chunks, {elapsed} (eta {eta}) {msg}")
        .expect("a valid template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(what.to_string());
    bar
}

/// The file name of `path`, for tables and charts.
pub fn label(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

pub fn run(args: Args) -> Result<()> {
    let text = read_text(&args.file)?;
    let model = args.eval.load(&args.model)?;
    let chunks = args.eval.chunks(&model, &text)?;
    let mut session = args.eval.session(&model, chunks.n_ctx())?;
    let start = Instant::now();
    let bar = progress(chunks.n_chunk(), &label(&args.model));
    let mut ppl = Perplexity::default();
    let mut buf = Vec::new();
    for i in 0..chunks.n_chunk() {
        quality::score_chunk(&mut session, chunks.chunk(i), &mut buf, |row, next| {
            ppl.add(quality::nll(row, next));
            Ok(())
        })?;
        bar.inc(1);
        bar.set_message(format!("PPL {:.4}", ppl.value()));
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    if args.json {
        let out = serde_json::json!({
            "model": args.model.display().to_string(),
            "text": args.file.display().to_string(),
            "ppl": ppl.value(),
            "ppl_uncertainty": ppl.uncertainty(),
            "tokens_scored": ppl.n(),
            "chunks": chunks.n_chunk(),
            "chunk_size": chunks.n_ctx(),
            "seconds": secs,
        });
        println!("{out}");
    } else {
        println!("PPL = {:.4} +/- {:.5}", ppl.value(), ppl.uncertainty());
        eprintln!(
            "{} tokens scored: {} chunks of {} (second halves), {:.1} s, {:.0} tokens/s evaluated",
            ppl.n(),
            chunks.n_chunk(),
            chunks.n_ctx(),
            secs,
            chunks.tokens().len() as f64 / secs
        );
    }
    Ok(())
}
