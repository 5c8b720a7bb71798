//! `gemma run`: complete a prompt, streaming the text to stdout.
use crate::common::{report_memory, report_model, ConstraintArgs, ModelArgs, SamplingArgs};
use crate::image::{self, MmprojArgs};
use anyhow::{bail, Context as _, Result};
use gemma_gguf::generate::generate_chunks;
use gemma_gguf::sampler::Sampler;
use gemma_gguf::vision::prompt::{prompt_chunks, with_markers, Chunk};
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
    /// After each generated token, print the step's N highest logits to standard error, one
    /// line per step: `top STEP ID:LOGIT ID:LOGIT …`, best first (the sampled token is the
    /// first with --temp 0). Shows how close each choice was; scripts/cross-aarch64.sh
    /// compares two builds with it.
    #[arg(long = "show-top", value_name = "N", default_value_t = 0)]
    pub show_top: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub constraint: ConstraintArgs,
    #[command(flatten)]
    pub vision: MmprojArgs,
    /// An image for the prompt (PNG, JPEG or WebP; needs --mmproj); repeat for several. The
    /// images go where the prompt says `<__media__>`, in order; with no marker in the
    /// prompt, all go before its text.
    #[arg(long = "image", value_name = "FILE")]
    pub images: Vec<PathBuf>,
}

/// `top STEP ID:LOGIT …`: the `n` highest logits, best first (ties: lower id first).
fn top_line(step: usize, logits: &[f32], n: usize) -> String {
    let mut ids: Vec<usize> = (0..logits.len()).collect();
    let n = n.min(ids.len());
    let order = |&a: &usize, &b: &usize| logits[b].total_cmp(&logits[a]).then(a.cmp(&b));
    if n > 0 && n < ids.len() {
        ids.select_nth_unstable_by(n - 1, order);
    }
    ids.truncate(n);
    ids.sort_by(order);
    let mut line = format!("top {step}");
    for id in ids {
        line.push_str(&format!(" {id}:{:.6}", logits[id]));
    }
    line
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
    let spec = args.constraint.spec()?;
    if !args.images.is_empty() && args.vision.mmproj.is_none() {
        return Err(image::need_mmproj());
    }
    let model = args.model.load()?;
    let mut session = args.model.session(&model)?;
    let memory = report_model(&args.model, &model, &session);
    let mut constraint = match ConstraintArgs::engine(spec, &model)? {
        Some((engine, spec)) => Some(engine.compile(&spec)?),
        None => None,
    };
    let vision = args.vision.load(&model, args.model.threads)?;
    let tok = model.tokenizer();
    // The file's built-in turn format (Gemma 4's for a Gemma 4 file) around the text.
    let chat_pieces = |text: &str| {
        let format = gemma_gguf::chat::ChatFormat::builtin(model.gguf());
        let specials = gemma_gguf::chat::SpecialTokens::from_tokenizer(tok);
        format.format(&[gemma_gguf::chat::Message::user(text)], true, &specials)
    };
    let (chunks, images, causal) = match &vision {
        Some(v) if !args.images.is_empty() => {
            let n = args.images.len();
            let text = with_markers(&prompt, n);
            let pieces = if args.chat_format { chat_pieces(&text)? } else { image::plain_pieces(&model, &text)? };
            let start = std::time::Instant::now();
            let images = args
                .images
                .iter()
                .map(|f| image::embed_file(v, f, args.vision.image_max_pixels))
                .collect::<Result<Vec<_>>>()?;
            eprintln!("images: {n} encoded in {:.2} s", start.elapsed().as_secs_f64());
            // Gemma 4's images take as many tokens as their resized size has cells: known now.
            let chunks = image::chunks(&model, v, &pieces, &images, session.n_ctx())?;
            (chunks, images, image::causal(&model))
        }
        _ => {
            let ids = if args.chat_format {
                gemma_gguf::chat::encode_pieces(&chat_pieces(&prompt)?, tok)?
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
            (vec![Chunk::Tokens(ids)], Vec::new(), true)
        }
    };
    let mut sampler = Sampler::new(args.sampling.params())?;
    let mut out = std::io::stdout().lock();
    if !args.no_echo {
        write!(out, "{prompt}")?;
        out.flush()?;
    }
    let mut write_err = None;
    let mut step = 0;
    let show_top = |logits: &[f32], _: u32| {
        if args.show_top > 0 {
            eprintln!("{}", top_line(step, logits, args.show_top));
        }
        step += 1;
    };
    let result = generate_chunks(
        &mut session,
        &mut sampler,
        constraint.as_mut(),
        &prompt_chunks(&chunks, &images, causal)?,
        args.n_predict,
        show_top,
        |text| {
            let r = out.write_all(text.as_bytes()).and_then(|_| out.flush());
            let ok = r.is_ok();
            write_err = r.err();
            ok
        },
    )?;
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

#[cfg(test)]
mod tests {
    use super::top_line;

    #[test]
    fn top_line_lists_the_highest_logits_best_first() {
        let logits = [0.5, 3.0, -1.0, 3.0, 2.25];
        assert_eq!(top_line(7, &logits, 3), "top 7 1:3.000000 3:3.000000 4:2.250000");
        assert_eq!(top_line(0, &logits, 9), "top 0 1:3.000000 3:3.000000 4:2.250000 0:0.500000 2:-1.000000");
        assert_eq!(top_line(0, &[], 2), "top 0");
    }
}
