//! gemma-tools: Hugging Face checkpoints → GGUF, and GGUF → GGUF requantisation.
//!
//! - [`convert_hf`]: a `config.json` + safetensors (+ tokenizer files) directory of Gemma 1, 2,
//!   3 or 4 → one GGUF in llama.cpp's dialect, in one pass and bounded memory.
//! - [`requantize`]: a GGUF to another type or mix.
//!
//! Types and mixes: [`mix`]; per-tensor choices are reported in the returned [`Summary`].
//! Quantisation runs ggml's own routines (`gemma_gguf::ggml::quantize_rows`), so the blocks
//! are llama.cpp's, bit for bit.
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod config;
pub mod convert;
pub mod error;
pub mod gemma3n;
pub mod gemma4;
pub mod mix;
pub mod output;
pub mod pipeline;
pub mod requantize;
pub mod vision;
pub mod vocab;

pub use convert::{convert_hf, ConvertOptions};
pub use error::{Error, Result};
pub use mix::{OutType, Override, DEFAULT_TYPE, TYPE_NAMES};
pub use pipeline::{RunOptions, Summary, TensorReport};
pub use requantize::{requantize, RequantizeOptions};
pub use vision::{convert_mmproj, MmprojOptions};
