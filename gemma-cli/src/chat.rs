//! `gemma chat`: an interactive, multi-turn conversation that keeps the KV cache between
//! turns. Works with piped standard input too (one user message per line).
use crate::common::{report_memory, report_model, ConstraintArgs, ModelArgs, SamplingArgs};
use crate::image::{self, MmprojArgs};
use anyhow::Result;
use gemma_gguf::chat::{ChatFormat, Message, SpecialTokens};
use gemma_gguf::generate::{generate_chunks, StopReason};
use gemma_gguf::model::Model;
use gemma_gguf::sampler::Sampler;
use gemma_gguf::session::Session;
use gemma_gguf::vision::prompt::{prompt_chunks, unflatten, with_markers};
use gemma_gguf::vision::Projector;
use std::io::{BufRead, IsTerminal, Write};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A system prompt, put before the first user message (Gemma has no system role).
    #[arg(short = 's', long = "system")]
    pub system: Option<String>,
    /// Tokens to generate per reply at most.
    #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
    pub n_predict: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Every reply is constrained (a fresh constraint per reply).
    #[command(flatten)]
    pub constraint: ConstraintArgs,
    /// With --mmproj, `/image FILE` adds an image to the next message.
    #[command(flatten)]
    pub vision: MmprojArgs,
}

const HELP: &str = "commands: /reset (forget the conversation), /image FILE (with --mmproj: an image for the next message, put where it says <__media__>, else before its text), /quit (or end of input)";

pub fn run(args: Args) -> Result<()> {
    let spec = args.constraint.spec()?;
    let model = args.model.load()?;
    let mut session = args.model.session(&model)?;
    let memory = report_model(&args.model, &model, &session);
    let vision = args.vision.load(&model, args.model.threads)?;
    // The conversation's images (embeddings), and how many of them wait for the next message.
    let mut images: Vec<Vec<f32>> = Vec::new();
    let mut pending = 0;
    let constraints = ConstraintArgs::engine(spec, &model)?;
    let tok = model.tokenizer();
    let eot = tok.end_of_turn().ok_or_else(|| anyhow::anyhow!("the vocabulary has no <end_of_turn> token"))?;
    let mut sampler = Sampler::new(args.sampling.params())?;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("{HELP}");
    }
    // The file's own chat template when it has one (rendered in a sandbox), else Gemma's
    // turn format built in.
    let format = ChatFormat::from_gguf(model.gguf())?;
    let specials = SpecialTokens::from_tokenizer(tok);
    let mut history: Vec<Message> = args.system.iter().map(Message::system).collect();
    let mut fed: Vec<u32> = Vec::new();
    let mut first = true;
    let mut stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        match line.trim() {
            "/quit" | "/exit" => break,
            "/reset" => {
                session.reset();
                sampler.reset();
                history.truncate(usize::from(args.system.is_some()));
                fed.clear();
                first = true;
                images.clear();
                pending = 0;
                eprintln!("(conversation reset)");
                continue;
            }
            "" => continue,
            l if l.starts_with("/image") => {
                let file = l["/image".len()..].trim();
                match add_image(vision.as_ref(), file, args.vision.image_max_pixels) {
                    Ok(e) => {
                        images.push(e);
                        pending += 1;
                        eprintln!("(image {file} added to the next message)");
                    }
                    Err(e) => eprintln!("(no image added: {e:#})"),
                }
                continue;
            }
            _ => {}
        }
        let line = with_markers(&line, pending);
        let n_before = images.len() - pending;
        let ids = match &format {
            ChatFormat::Gemma | ChatFormat::Gemma4 => {
                let mut turn = Vec::new();
                if first {
                    turn.extend(args.system.as_deref().map(Message::system));
                }
                turn.push(Message::user(&line));
                // After a reply the cache ends where generation stopped: close the model's turn.
                let mut ids = if first { Vec::new() } else { vec![eot] };
                let pieces = format.format_turn(&turn, first, true)?;
                match image::flat_ids(&model, vision.as_ref(), &pieces, n_before, &images[n_before..]) {
                    Ok(t) => ids.extend(t),
                    Err(e) => {
                        drop_pending(&mut images, &mut pending, &e);
                        continue;
                    }
                }
                ids
            }
            ChatFormat::Template(_) => {
                history.push(Message::user(&line));
                let turn = template_turn(
                    &format,
                    &history,
                    &specials,
                    &model,
                    (vision.as_ref(), &images),
                    &mut session,
                    &mut fed,
                );
                match turn {
                    Ok(ids) => ids,
                    Err(e) => {
                        history.pop();
                        drop_pending(&mut images, &mut pending, &e);
                        continue;
                    }
                }
            }
        };
        if session.n_past() as usize + ids.len() >= session.n_ctx() as usize {
            eprintln!("(context full: {} tokens; /reset to start over or raise -c)", session.n_past());
            if matches!(format, ChatFormat::Template(_)) {
                history.pop();
            }
            images.truncate(n_before);
            pending = 0;
            continue;
        }
        first = false;
        pending = 0;
        let causal = image::causal(&model);
        let chunks = unflatten(&ids);
        let mut reply = String::new();
        let mut constraint = match &constraints {
            Some((engine, spec)) => Some(engine.compile(spec)?),
            None => None,
        };
        let out = generate_chunks(
            &mut session,
            &mut sampler,
            constraint.as_mut(),
            &prompt_chunks(&chunks, &images, causal)?,
            args.n_predict,
            |_, _| {},
            |t| {
                reply.push_str(t);
                print!("{t}");
                stdout.flush().is_ok()
            },
        )?;
        fed.extend(&ids);
        fed.extend(&out.tokens);
        history.push(Message::model(reply));
        println!();
        if !matches!(out.stop, StopReason::EndOfGeneration(_)) {
            eprintln!("(reply ended: {})", out.stop);
        }
        if interactive {
            eprintln!("({:.1} tokens/s)", out.generation_tps());
        }
    }
    report_memory(&memory, &model, &session);
    Ok(())
}

/// Encodes an image file for `/image`.
fn add_image(vision: Option<&Projector>, file: &str, max_pixels: u64) -> Result<Vec<f32>> {
    let v = vision.ok_or_else(image::need_mmproj)?;
    if file.is_empty() {
        anyhow::bail!("give a file: /image FILE");
    }
    image::embed_file(v, std::path::Path::new(file), max_pixels)
}

/// A message that cannot be fed (its markers do not match its images): it and its images
/// are dropped.
fn drop_pending(images: &mut Vec<Vec<f32>>, pending: &mut usize, e: &anyhow::Error) {
    images.truncate(images.len() - *pending);
    *pending = 0;
    eprintln!("(message not sent: {e:#})");
}

/// With a GGUF template: renders the whole conversation and returns the ids (images as in
/// [`image::flat_ids`]; `images`: the whole conversation's) after what the cache holds. When the rendering no longer starts with
/// the cached ids (a template that rewrites history), the cache is emptied and everything is
/// fed again.
fn template_turn(
    format: &ChatFormat,
    history: &[Message],
    specials: &SpecialTokens,
    model: &Model,
    (vision, images): (Option<&Projector>, &[Vec<f32>]),
    session: &mut Session<'_>,
    fed: &mut Vec<u32>,
) -> Result<Vec<u32>> {
    let pieces = format.format(history, true, specials)?;
    let full = image::flat_ids(model, vision, &pieces, 0, images)?;
    if full.starts_with(fed) && full.len() > fed.len() {
        return Ok(full[fed.len()..].to_vec());
    }
    session.reset();
    fed.clear();
    Ok(full)
}
