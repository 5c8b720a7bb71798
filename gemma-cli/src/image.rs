//! Images in prompts (`gemma run --image`, `gemma chat` `/image`): the projector flags, and
//! image files → embeddings → the prompt's chunks.
use crate::common::OnOff;
use anyhow::{bail, Context as _, Result};
use gemma_gguf::chat::Piece;
use gemma_gguf::model::Model;
use gemma_gguf::vision::preprocess::MAX_IMAGE_PIXELS;
use gemma_gguf::vision::prompt::{self, Chunk};
use gemma_gguf::vision::Projector;
use std::path::{Path, PathBuf};

/// The projector flag.
#[derive(clap::Args, Debug, Clone)]
pub struct MmprojArgs {
    /// The projector GGUF of a Gemma 3 or Gemma 4 vision model (`gemma convert --mmproj`, or
    /// llama.cpp's `mmproj-*.gguf`); needed to give images.
    #[arg(long = "mmproj")]
    pub mmproj: Option<PathBuf>,
    /// Largest image accepted, in pixels (width × height, read from the header before
    /// decoding).
    #[arg(long = "image-max-pixels", default_value_t = MAX_IMAGE_PIXELS)]
    pub image_max_pixels: u64,
    /// The vision encoder's attention: `on` runs ggml's fused flash-attention kernel (keys and
    /// values in f16, as libmtmd does by default on the CPU; faster), `off` computes the scores
    /// in f32 (libmtmd's `-fa off`). Independent of --flash-attn, which is the text model's.
    #[arg(long = "mmproj-flash-attn", value_enum, default_value_t = OnOff::On)]
    pub mmproj_flash_attn: OnOff,
}

impl MmprojArgs {
    /// The projector, checked against `model`; `None` without --mmproj.
    pub fn load(&self, model: &Model, threads: Option<usize>) -> Result<Option<Projector>> {
        let Some(path) = &self.mmproj else { return Ok(None) };
        let mut v =
            Projector::load(path, threads).with_context(|| format!("loading the projector {}", path.display()))?;
        v.set_flash_attn(self.mmproj_flash_attn.is_on());
        v.check_model(model).with_context(|| format!("the projector {} does not fit the model", path.display()))?;
        Ok(Some(v))
    }
}

/// Reads and encodes an image file: its embeddings, row by row.
pub fn embed_file(v: &Projector, path: &Path, max_pixels: u64) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading the image {}", path.display()))?;
    let (_, rows) = v.embed_image(&bytes, max_pixels).with_context(|| format!("the image {}", path.display()))?;
    Ok(rows)
}

/// Image tokens of `images[i]` (its rows; 0 past the end, which the prompt's marker count
/// rules out).
fn n_image_tokens<'a>(model: &Model, images: &'a [Vec<f32>]) -> impl Fn(usize) -> usize + 'a {
    let n_embd = model.dims().n_embd as usize;
    move |i| images.get(i).map_or(0, |e| e.len() / n_embd.max(1))
}

/// The pieces of a plain (not chat-formatted) prompt: BOS when the vocabulary adds it, then
/// the text.
pub fn plain_pieces(model: &Model, text: &str) -> Result<Vec<Piece>> {
    let tok = model.tokenizer();
    let mut pieces = Vec::new();
    if tok.adds_bos() {
        let bos = tok.piece(tok.bos()).context("the vocabulary's BOS token has no text")?;
        pieces.push(Piece::Special(bos.to_string()));
    }
    pieces.push(Piece::Text(text.to_string()));
    Ok(pieces)
}

/// The chunks of `pieces` with `images` (their embeddings), refusing a prompt that does not
/// fit the context.
pub fn chunks(model: &Model, v: &Projector, pieces: &[Piece], images: &[Vec<f32>], n_ctx: u32) -> Result<Vec<Chunk>> {
    let chunks = prompt::chunks(pieces, v.layout(), images.len(), model.tokenizer())?;
    let n = prompt::n_tokens(&chunks, n_image_tokens(model, images));
    if n >= n_ctx as usize {
        let in_images: usize = (0..images.len()).map(n_image_tokens(model, images)).sum();
        bail!(
            "the prompt has {n} tokens ({in_images} in its images) but the context holds {n_ctx}: raise -c or shorten the prompt"
        );
    }
    Ok(chunks)
}

/// The `--image`/`/image` error when no projector was given.
pub fn need_mmproj() -> anyhow::Error {
    anyhow::anyhow!("images need the model's projector: give --mmproj FILE")
}

/// The ids of `pieces`, each image (`images`, numbered from `first_image`) as its run of
/// flat ids (`vision::prompt::flatten`); without a projector, plain tokens.
pub fn flat_ids(
    model: &Model,
    vision: Option<&Projector>,
    pieces: &[Piece],
    first_image: usize,
    images: &[Vec<f32>],
) -> Result<Vec<u32>> {
    let tok = model.tokenizer();
    let Some(v) = vision else { return Ok(gemma_gguf::chat::encode_pieces(pieces, tok)?) };
    let chunks = prompt::chunks(pieces, v.layout(), images.len(), tok)?;
    Ok(prompt::flatten(&chunks, first_image, n_image_tokens(model, images)))
}

/// Whether the model's images are fed with causal attention (`Arch::image_attention`).
pub fn causal(model: &Model) -> bool {
    model.arch().image_attention().is_none()
}
