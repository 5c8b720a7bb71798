//! gemma-gguf: Gemma models as GGUF files on ggml.
//!
//! - [`gguf`]: the GGUF format (reader, writer), pure Rust.
//! - [`ggml`]: the safe layer over ggml; the only module with `unsafe`.
#![deny(unsafe_code)]

pub mod error;
pub mod gguf;

#[cfg(feature = "ggml")]
#[allow(unsafe_code)]
pub mod ggml;

pub use error::{Error, Result};
