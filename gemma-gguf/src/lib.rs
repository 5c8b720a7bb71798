//! gemma-gguf: Gemma models as GGUF files on ggml.
//!
//! - [`gguf`]: the GGUF format (reader, writer), pure Rust.
//! - [`ggml`]: the safe layer over ggml; the only module with `unsafe`.
#![deny(unsafe_code)]

pub mod chat;
pub mod error;
pub mod gguf;
pub mod sampler;
pub mod tokenizer;

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
pub mod session;
