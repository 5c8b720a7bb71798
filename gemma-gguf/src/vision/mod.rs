//! projector GGUF in llama.cpp's layout (`mmproj-*.gguf`, libmtmd's format).
//!
//! - [`names`]: the projector file's keys and tensor names (shared with the converter).
//! - [`preprocess`]: image bytes → the pixel tensor (decode, RGB, resize, normalise).
#![forbid(unsafe_code)]

pub mod names;
pub mod preprocess;
