//! The cost of constrained sampling per generated token, on the real model: decode steps with
//! and without a JSON-schema mask, side by side in one run, in alternating rounds.
//!
//!   cargo run --release -p gemma-tests --example constrain_overhead -- [MODEL] [--threads N] [--rounds R]
//!
//! Per round: 48 tokens unconstrained (decode + sample), then 48 under the schema (decode +
//! mask + sample + advance). Printed: the engine's build time for the vocabulary, one
//! compile, the mean time of a decode step, of a mask step (mask + advance) and their ratio.
use gemma_gguf::constrain::{ConstraintEngine, ConstraintSpec, Progress};
use gemma_gguf::model::{LoadOptions, Model};
use gemma_gguf::sampler::{Sampler, SamplerParams};
use gemma_gguf::session::{Outputs, Session, SessionOptions};
use gemma_tests::bench::{mean_sd, settle};
use std::time::{Duration, Instant};

const TOKENS: usize = 48;

/// A schema whose output keeps the mask busy: strings, numbers, an array, an enum.
const SCHEMA: &str = r#"{"type": "object", "properties": {
  "name": {"type": "string", "maxLength": 40},
  "age": {"type": "integer", "minimum": 0, "maximum": 120},
  "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 6},
  "kind": {"enum": ["person", "robot", "cat"]},
  "score": {"type": "number", "minimum": 0, "maximum": 1}},
  "required": ["name", "age", "tags", "kind", "score"], "additionalProperties": false}"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut path, mut threads, mut rounds) = (None, 1usize, 3usize);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => threads = args.next().ok_or("--threads N")?.parse()?,
            "--rounds" => rounds = args.next().ok_or("--rounds R")?.parse()?,
            _ => path = Some(std::path::PathBuf::from(a)),
        }
    }
    let path = path.or_else(gemma_tests::test_model).ok_or("no model: give a path")?;
    let model = Model::load(&path, &LoadOptions { threads: Some(threads), ..LoadOptions::default() })?;
    let tok = model.tokenizer();
    let start = Instant::now();
    let engine = ConstraintEngine::new(tok)?;
    let build = start.elapsed();
    let spec = ConstraintSpec::json_schema_str(SCHEMA)?;
    let start = Instant::now();
    engine.compile(&spec)?;
    let compile = start.elapsed();
    println!("model {}, {} threads, vocabulary {}", path.display(), threads, tok.vocab_size());
    println!("engine build {:.1} ms, schema compile {:.2} ms", ms(build), ms(compile));

    let prompt = tok.encode("A JSON record of a person:\n", tok.adds_bos());
    let mut session = Session::new(&model, SessionOptions { n_ctx: 256, ..SessionOptions::default() })?;
    let (mut decode, mut masked_decode, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    let mut logits = Vec::new();
    for round in 0..rounds {
        for constrained in [false, true] {
            settle();
            session.reset();
            session.decode_into(&prompt, Outputs::Last, &mut logits)?;
            let params = SamplerParams { temperature: 1.0, seed: round as u64, ..SamplerParams::default() };
            let mut sampler = Sampler::new(params)?;
            let mut c = if constrained { Some(engine.compile(&spec)?) } else { None };
            for _ in 0..TOKENS {
                let t0 = Instant::now();
                let t = match c.as_mut() {
                    Some(c) => c.sample(&mut sampler, &mut logits)?,
                    None => sampler.sample(&logits)?,
                };
                let mut done = tok.is_end_of_generation(t);
                if let (Some(c), false) = (c.as_mut(), done) {
                    done = c.accept(t)? == Progress::Complete;
                }
                let t_mask = t0.elapsed();
                if done {
                    // A finished record: start the next one (the schema again, same cache).
                    c = if constrained { Some(engine.compile(&spec)?) } else { None };
                    session.reset();
                    session.decode_into(&prompt, Outputs::Last, &mut logits)?;
                    continue;
                }
                let t1 = Instant::now();
                session.decode_into(&[t], Outputs::Last, &mut logits)?;
                let t_decode = t1.elapsed();
                if constrained {
                    mask.push(ms(t_mask));
                    masked_decode.push(ms(t_decode));
                } else {
                    decode.push(ms(t_decode + t_mask));
                }
            }
        }
    }
    let (d, d_sd) = mean_sd(&decode);
    let (m, m_sd) = mean_sd(&mask);
    let (md, _) = mean_sd(&masked_decode);
    println!("unconstrained step (decode + sample): {d:.2} ± {d_sd:.2} ms over {} tokens", decode.len());
    println!("constrained: decode {md:.2} ms + mask and advance {m:.3} ± {m_sd:.3} ms over {} tokens", mask.len());
    println!(
        "constrained step / unconstrained step: {:.3} (mask, sample and advance: {:.1}% of an unconstrained step)",
        (md + m) / d,
        100.0 * m / d
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
