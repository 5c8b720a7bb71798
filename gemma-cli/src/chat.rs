//! `gemma chat`: an interactive, multi-turn conversation that keeps the KV cache between
//! turns. Works with piped standard input too (one user message per line).
use crate::common::{report_memory, report_model, ConstraintArgs, ModelArgs, SamplingArgs};
use anyhow::Result;
use gemma_gguf::chat::{encode_pieces, ChatFormat, Message, SpecialTokens};
use gemma_gguf::generate::{generate_constrained, StopReason};
use gemma_gguf::sampler::Sampler;
use gemma_gguf::session::Session;
use gemma_gguf::tokenizer::Tokenizer;
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
}

const HELP: &str = "commands: /reset (forget the conversation), /quit (or end of input)";

pub fn run(args: Args) -> Result<()> {
    let spec = args.constraint.spec()?;
    let model = args.model.load()?;
    let mut session = args.model.session(&model)?;
    let memory = report_model(&args.model, &model, &session);
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
                eprintln!("(conversation reset)");
                continue;
            }
            "" => continue,
            _ => {}
        }
        let ids = match &format {
            ChatFormat::Gemma | ChatFormat::Gemma4 => {
                let mut turn = Vec::new();
                if first {
                    turn.extend(args.system.as_deref().map(Message::system));
                }
                turn.push(Message::user(&line));
                // After a reply the cache ends where generation stopped: close the model's turn.
                let mut ids = if first { Vec::new() } else { vec![eot] };
                ids.extend(encode_pieces(&format.format_turn(&turn, first, true)?, tok)?);
                ids
            }
            ChatFormat::Template(_) => {
                history.push(Message::user(&line));
                template_turn(&format, &history, &specials, tok, &mut session, &mut fed)?
            }
        };
        if session.n_past() as usize + ids.len() >= session.n_ctx() as usize {
            eprintln!("(context full: {} tokens; /reset to start over or raise -c)", session.n_past());
            if matches!(format, ChatFormat::Template(_)) {
                history.pop();
            }
            continue;
        }
        first = false;
        let mut reply = String::new();
        let mut constraint = match &constraints {
            Some((engine, spec)) => Some(engine.compile(spec)?),
            None => None,
        };
        let out = generate_constrained(
            &mut session,
            &mut sampler,
            constraint.as_mut(),
            &ids,
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

/// With a GGUF template: renders the whole conversation and returns the tokens after what
/// the cache holds. When the rendering no longer starts with the cached tokens (a template
/// that rewrites history), the cache is emptied and everything is fed again.
fn template_turn(
    format: &ChatFormat,
    history: &[Message],
    specials: &SpecialTokens,
    tok: &Tokenizer,
    session: &mut Session<'_>,
    fed: &mut Vec<u32>,
) -> Result<Vec<u32>> {
    let full = encode_pieces(&format.format(history, true, specials)?, tok)?;
    if full.starts_with(fed) && full.len() > fed.len() {
        return Ok(full[fed.len()..].to_vec());
    }
    session.reset();
    fed.clear();
    Ok(full)
}
