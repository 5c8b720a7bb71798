//! Images in: Gemma 3's vision path (a SigLIP encoder and Gemma 3's projector), read from a
//! projector GGUF in llama.cpp's layout (`mmproj-*.gguf`, libmtmd's format).
//!
//! - [`names`]: the projector file's keys and tensor names (shared with the converter).
//! - [`preprocess`]: image bytes → the pixel tensor (decode, RGB, resize, normalise).
//! - [`encoder`]: the SigLIP encoder and Gemma 3 projector as a ggml graph.
//! - [`gemma4`]: Gemma 4's vision tower and embedder (`gemma4v` projector files) as a ggml graph.
//! - [`prompt`]: where the images go among a prompt's tokens.
#![forbid(unsafe_code)]

#[cfg(feature = "ggml")]
pub mod encoder;
#[cfg(feature = "ggml")]
pub mod gemma4;
pub mod names;
pub mod preprocess;
pub mod prompt;
