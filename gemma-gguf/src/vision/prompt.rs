//! Prompts with images: where each image's embeddings go among the prompt's tokens.
//!
//! The prompt text marks each image with [`MEDIA_MARKER`] (llama.cpp's default marker,
//! `mtmd_default_marker()` in tools/mtmd/mtmd.cpp). Each marker becomes the model's image
//! sequence ([`ImageLayout`]) as transformers' processor writes it, the image's embeddings
//! (one row per image token) in place of its soft tokens:
//! - Gemma 3 (`Gemma3Processor`, processing_gemma3.py 5.24.0, `full_image_sequence`):
//!   `"\n\n"`, `<start_of_image>`, the image, `<end_of_image>`, `"\n\n"`;
//! - Gemma 4 (`Gemma4Processor.replace_image_token`, processing_gemma4.py): `<|image>`, the
//!   image (as many soft tokens as the resized image has cells), `<image|>`; libmtmd's
//!   gemma4v markers are the same (mtmd.cpp `img_beg`/`img_end`).
//!
//! The markers are control tokens of the vocabulary, found by name; text is tokenized without
//! parsing control tokens, so user text cannot forge them.
#![forbid(unsafe_code)]

use crate::chat::Piece;
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// The text that stands for one image in a prompt.
pub const MEDIA_MARKER: &str = "<__media__>";
/// Gemma 3's image delimiters (its tokenizer's control tokens; mtmd.cpp uses the same names).
pub const START_OF_IMAGE: &str = "<start_of_image>";
pub const END_OF_IMAGE: &str = "<end_of_image>";

/// Where an image sits among a prompt's tokens: its delimiters and the text around them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLayout {
    /// The control tokens before and after the image's embeddings.
    pub start: &'static str,
    pub end: &'static str,
    /// Text before `start` and after `end`.
    pub around: &'static str,
    /// The model family, for messages.
    pub model: &'static str,
}

/// Gemma 3's image sequence (see the module doc).
pub const GEMMA3: ImageLayout =
    ImageLayout { start: START_OF_IMAGE, end: END_OF_IMAGE, around: "\n\n", model: "Gemma 3" };
/// Gemma 4's image sequence (see the module doc).
pub const GEMMA4: ImageLayout = ImageLayout { start: "<|image>", end: "<image|>", around: "", model: "Gemma 4" };

/// A part of a prompt: tokens, or the `i`-th image's embeddings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    Tokens(Vec<u32>),
    Image(usize),
}

/// `prompt` with `n_images` markers put before the text when it has none (the CLI's rule:
/// images go where the prompt marks them, else first, in order).
pub fn with_markers(prompt: &str, n_images: usize) -> String {
    if n_images == 0 || prompt.contains(MEDIA_MARKER) {
        return prompt.to_string();
    }
    format!("{}{prompt}", MEDIA_MARKER.repeat(n_images))
}

/// Splits `pieces` (a formatted prompt, see [`crate::chat`]) at the image markers of its
/// text into tokens and images laid out as `layout`, numbered in order. The number of markers
/// must equal `n_images`. Every marker is followed by the end token, so the prompt ends with
/// tokens (the logits come from the last one).
pub fn chunks(pieces: &[Piece], layout: &ImageLayout, n_images: usize, tok: &Tokenizer) -> Result<Vec<Chunk>> {
    let id = |s: &str| {
        tok.token_id(s).ok_or_else(|| Error::Projector {
            what: format!(
                "the language model's vocabulary has no {s} token: it is not a {} vision model",
                layout.model
            ),
        })
    };
    let mut out = Vec::new();
    let mut ids = Vec::new();
    let mut text = String::new();
    let mut image = 0;
    for piece in pieces {
        match piece {
            Piece::Special(s) => {
                flush_text(&mut text, &mut ids, tok);
                ids.push(tok.token_id(s).ok_or_else(|| Error::ChatSpecialToken { piece: s.clone() })?);
            }
            Piece::Text(t) => {
                for (k, part) in t.split(MEDIA_MARKER).enumerate() {
                    if k > 0 {
                        // The marker: the text around it joins the text before and after, as in
                        // the processor's string.
                        text.push_str(layout.around);
                        flush_text(&mut text, &mut ids, tok);
                        ids.push(id(layout.start)?);
                        out.push(Chunk::Tokens(std::mem::take(&mut ids)));
                        out.push(Chunk::Image(image));
                        image += 1;
                        ids.push(id(layout.end)?);
                        text.push_str(layout.around);
                    }
                    text.push_str(part);
                }
            }
        }
    }
    flush_text(&mut text, &mut ids, tok);
    if image != n_images {
        return Err(Error::OutOfRange {
            what: "<__media__> markers in the prompt",
            value: format!("{image} for {n_images} images"),
            why: "give one marker per image, or none to put every image before the text",
        });
    }
    out.push(Chunk::Tokens(ids));
    out.retain(|c| !matches!(c, Chunk::Tokens(t) if t.is_empty()));
    Ok(out)
}

/// Tokenizes and empties the pending text.
fn flush_text(text: &mut String, ids: &mut Vec<u32>, tok: &Tokenizer) {
    if !text.is_empty() {
        ids.extend(tok.encode(text, false));
        text.clear();
    }
}

/// Tokens the prompt feeds, image `i` taking `n_image_tokens(i)`.
pub fn n_tokens(chunks: &[Chunk], n_image_tokens: impl Fn(usize) -> usize) -> usize {
    chunks
        .iter()
        .map(|c| match c {
            Chunk::Tokens(t) => t.len(),
            Chunk::Image(i) => n_image_tokens(*i),
        })
        .sum()
}

/// The chunks as [`generate_chunks`](crate::generate::generate_chunks) takes them, image `i`
/// being `images[i]` (its embeddings, row by row), fed bidirectionally unless `causal`.
#[cfg(feature = "ggml")]
pub fn prompt_chunks<'a>(
    chunks: &'a [Chunk],
    images: &'a [Vec<f32>],
    causal: bool,
) -> Result<Vec<crate::generate::PromptChunk<'a>>> {
    use crate::generate::PromptChunk;
    chunks
        .iter()
        .map(|c| match c {
            Chunk::Tokens(t) => Ok(PromptChunk::Tokens(t)),
            Chunk::Image(i) => images.get(*i).map(|rows| PromptChunk::Embd { rows, causal }).ok_or_else(|| {
                Error::OutOfRange { what: "image index", value: i.to_string(), why: "more markers than images" }
            }),
        })
        .collect()
}

/// Images a flat id list can number (see [`image_id`]).
const MAX_IMAGES: u32 = 1 << 16;

/// Image `i` in a flat id list ([`flatten`]): an id far above any vocabulary (Gemma's have
/// at most 2^18 tokens), so it never meets a token and a comparison of two lists (a cache
/// prefix) never matches one image with another of another prompt by accident of tokens.
pub fn image_id(i: usize) -> u32 {
    u32::MAX - (i as u32 % MAX_IMAGES)
}

/// The image a flat id stands for, or `None` for a token.
pub fn image_of(id: u32) -> Option<usize> {
    (id > u32::MAX - MAX_IMAGES).then(|| (u32::MAX - id) as usize)
}

/// The chunks as one id list, image `i` as `n_image_tokens(i)` copies of
/// `image_id(first_image + i)`: one entry per position, for prompts kept as token lists
/// (a chat's cache, the server's sequences).
pub fn flatten(chunks: &[Chunk], first_image: usize, n_image_tokens: impl Fn(usize) -> usize) -> Vec<u32> {
    let mut ids = Vec::new();
    for c in chunks {
        match c {
            Chunk::Tokens(t) => ids.extend(t),
            Chunk::Image(i) => ids.extend(std::iter::repeat_n(image_id(first_image + i), n_image_tokens(*i))),
        }
    }
    ids
}

/// [`flatten`] undone: a run of one image's id is that image.
pub fn unflatten(ids: &[u32]) -> Vec<Chunk> {
    let mut out: Vec<Chunk> = Vec::new();
    let mut prev = None;
    for &t in ids {
        let image = image_of(t);
        match (image, out.last_mut()) {
            (Some(i), _) if prev == Some(i) => {}
            (Some(i), _) => out.push(Chunk::Image(i)),
            (None, Some(Chunk::Tokens(v))) => v.push(t),
            (None, _) => out.push(Chunk::Tokens(vec![t])),
        }
        prev = image;
    }
    out
}
