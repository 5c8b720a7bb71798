//! `gemma run`: complete a prompt, streaming the text to stdout.
use crate::common::{report_memory, report_model, ModelArgs, SamplingArgs};
use anyhow::{bail, Context as _, Result};
use gemma_gguf::generate::generate;
use gemma_gguf::sampler::Sampler;
use std::io::{Read, Write};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text (`-` or nothing with -f absent: read standard input).
    #[arg(short = 'p', long = "prompt")]
    pub prompt: Option<String>,
    /// Read the prompt from a file (UTF-8).
    #[arg(short = 'f', long = "file", conflicts_with = "prompt")]
    pub file: Option<PathBuf>,
    /// Tokens to generate at most.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    pub n_predict: usize,
    /// Wrap the prompt in the Gemma chat turn format (for instruction-tuned models).
    #[arg(long = "chat-format")]
    pub chat_format: bool,
    /// Do not echo the prompt before the generated text.
    #[arg(long = "no-echo")]
    pub no_echo: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// The prompt from -p, -f or standard input; invalid UTF-8 is an error naming the source.
fn read_prompt(args: &Args) -> Result<String> {
    let bytes = match (&args.prompt, &args.file) {
        (Some(p), _) if p != "-" => return Ok(p.clone()),
        (_, Some(f)) => std::fs::read(f).with_context(|| format!("reading the prompt file {}", f.display()))?,
        _ => {
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b).context("reading the prompt from standard input")?;
            b
        }
    };
    String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("the prompt is not valid UTF-8 (byte {})", e.utf8_error().valid_up_to()))
}

pub fn run(args: Args) -> Result<()> {
    let prompt = read_prompt(&args)?;
    if prompt.is_empty() {
        bail!("the prompt is empty: give one with -p, -f or on standard input");
    }
    let model = args.model.load()?;
    let mut session = args.model.session(&model)?;
    let memory = report_model(&args.model, &model, &session);
    let tok = model.tokenizer();
    let ids = if args.chat_format {
        let pieces = gemma_gguf::chat::format(&[gemma_gguf::chat::Message::user(&prompt)], true)?;
        gemma_gguf::chat::encode_pieces(&pieces, tok)?
    } else {
        tok.encode(&prompt, tok.adds_bos())
    };
    if ids.len() >= session.n_ctx() as usize {
        bail!(
            "the prompt has {} tokens but the context holds {}: raise -c or shorten the prompt",
            ids.len(),
            session.n_ctx()
        );
    }
    let mut sampler = Sampler::new(args.sampling.params())?;
    let mut out = std::io::stdout().lock();
    if !args.no_echo {
        write!(out, "{prompt}")?;
        out.flush()?;
    }
    let mut write_err = None;
    let result = generate(&mut session, &mut sampler, &ids, args.n_predict, |text| {
        let r = out.write_all(text.as_bytes()).and_then(|_| out.flush());
        let ok = r.is_ok();
        write_err = r.err();
        ok
    })?;
    writeln!(out)?;
    if let Some(e) = write_err {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("writing to standard output");
        }
    }
    eprintln!(
        "prompt: {} tokens, {:.1} tokens/s; generation: {} tokens, {:.1} tokens/s; stop: {}",
        result.prompt_tokens,
        result.prompt_tps(),
        result.tokens.len(),
        result.generation_tps(),
        result.stop
    );
    report_memory(&memory, &model, &session);
    Ok(())
}
