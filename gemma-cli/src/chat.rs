//! `gemma chat`: an interactive, multi-turn conversation that keeps the KV cache between
//! turns. Works with piped standard input too (one user message per line).
use crate::common::{report_memory, report_model, ModelArgs, SamplingArgs};
use anyhow::Result;
use gemma_gguf::chat::{encode_pieces, format_turn, Message};
use gemma_gguf::generate::{generate, StopReason};
use gemma_gguf::sampler::Sampler;
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
}

const HELP: &str = "commands: /reset (forget the conversation), /quit (or end of input)";

pub fn run(args: Args) -> Result<()> {
    let model = args.model.load()?;
    let mut session = args.model.session(&model)?;
    report_model(&model, &session);
    let tok = model.tokenizer();
    let eot = tok.end_of_turn().ok_or_else(|| anyhow::anyhow!("the vocabulary has no <end_of_turn> token"))?;
    let mut sampler = Sampler::new(args.sampling.params())?;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("{HELP}");
    }
    let mut first = true;
    let mut stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        match line.trim() {
            "/quit" | "/exit" => break,
            "/reset" => {
                session.reset();
                sampler.reset();
                first = true;
                eprintln!("(conversation reset)");
                continue;
            }
            "" => continue,
            _ => {}
        }
        let mut turn = Vec::new();
        if first {
            if let Some(s) = &args.system {
                turn.push(Message::system(s));
            }
        }
        turn.push(Message::user(&line));
        // After a reply the cache ends where generation stopped: close the model's turn.
        let mut ids = if first { Vec::new() } else { vec![eot] };
        ids.extend(encode_pieces(&format_turn(&turn, first, true)?, tok)?);
        if session.n_past() as usize + ids.len() >= session.n_ctx() as usize {
            eprintln!("(context full: {} tokens; /reset to start over or raise -c)", session.n_past());
            continue;
        }
        first = false;
        let out = generate(&mut session, &mut sampler, &ids, args.n_predict, |t| {
            print!("{t}");
            stdout.flush().is_ok()
        })?;
        println!();
        if !matches!(out.stop, StopReason::EndOfGeneration(_)) {
            eprintln!("(reply ended: {})", out.stop);
        }
        if interactive {
            eprintln!("({:.1} tokens/s)", out.generation_tps());
        }
    }
    report_memory();
    Ok(())
}
