//! gemma-gguf: Gemma models as GGUF files on ggml.
//!
//! - [`gguf`]: the GGUF format (reader, writer), pure Rust.
//! - [`ggml`]: the safe layer over ggml; the only module with `unsafe`.
//! - [`model`], [`session`], [`generate`]: load a model, keep a conversation's KV cache,
//!   generate; [`tokenizer`], [`sampler`], [`chat`] around them; [`constrain`]: JSON
//!   Schema, grammar and regex constraints applied while sampling.
//! - [`quality`]: perplexity over a text (llama-perplexity's method) and a model's
//!   distributions against a base's (KL-divergence, top-token agreement, the base-logits file).
//!
//! Load a model, open a session, feed tokens, sample and stream text:
//!
//! ```no_run
//! use gemma_gguf::generate::generate;
//! use gemma_gguf::model::{LoadOptions, Model};
//! use gemma_gguf::sampler::{Sampler, SamplerParams};
//! use gemma_gguf::session::{Session, SessionOptions};
//!
//! let model = Model::load("models/gemma-3-270m-q4_k_m.gguf", &LoadOptions::default())?;
//! let mut session = Session::new(&model, SessionOptions::default())?;
//! let prompt = model.tokenizer().encode("The capital of France is", true);
//! let mut sampler = Sampler::new(SamplerParams::greedy())?;
//! let out = generate(&mut session, &mut sampler, &prompt, 32, |text| {
//!     print!("{text}");
//!     true // keep going
//! })?;
//! eprintln!("\n{} tokens, {:.1} tokens/s, stopped: {}", out.tokens.len(), out.generation_tps(), out.stop);
//! # Ok::<(), gemma_gguf::Error>(())
//! ```
#![deny(unsafe_code)]

pub mod chat;
pub mod constrain;
pub mod error;
pub mod gguf;
pub mod names;
pub mod sampler;
pub mod tokenizer;
pub mod tool_call;
pub mod vision;

#[cfg(feature = "ggml")]
#[allow(unsafe_code)]
pub mod ggml;

pub use error::{Error, Result};

#[cfg(feature = "ggml")]
pub mod arch;
#[cfg(feature = "ggml")]
pub mod generate;
#[cfg(feature = "ggml")]
pub mod kv_cache;
#[cfg(feature = "ggml")]
pub mod model;
#[cfg(feature = "ggml")]
pub mod quality;
#[cfg(feature = "ggml")]
pub mod session;
