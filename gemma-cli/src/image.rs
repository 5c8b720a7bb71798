//! Images in prompts (`gemma run --image`, `gemma chat` `/image`): the projector flags, and
//! image files → embeddings → the prompt's chunks.
use anyhow::{bail, Context as _, Result};
use gemma_gguf::chat::Piece;
use gemma_gguf::model::Model;
use gemma_gguf::vision::encoder::VisionModel;
use gemma_gguf::vision::preprocess::MAX_IMAGE_PIXELS;
use gemma_gguf::vision::prompt::{self, Chunk};
use std::path::{Path, PathBuf};

/// The projector flag.
#[derive(clap::Args, Debug, Clone)]
pub struct MmprojArgs {
    /// The projector GGUF of a Gemma 3 vision model (`gemma convert --mmproj`, or llama.cpp's
    /// `mmproj-*.gguf`); needed to give images.
    #[arg(long = "mmproj")]
    pub mmproj: Option<PathBuf>,
    /// Largest image accepted, in pixels (width × height, read from the header before
    /// decoding).
    #[arg(long = "image-max-pixels", default_value_t = MAX_IMAGE_PIXELS)]
    pub image_max_pixels: u64,
}

impl MmprojArgs {
    /// The projector, checked against `model`; `None` without --mmproj.
    pub fn load(&self, model: &Model, threads: Option<usize>) -> Result<Option<VisionModel>> {
        let Some(path) = &self.mmproj else { return Ok(None) };
        let v =
            VisionModel::load(path, threads).with_context(|| format!("loading the projector {}", path.display()))?;
        v.check_model(model).with_context(|| format!("the projector {} does not fit the model", path.display()))?;
        Ok(Some(v))
    }
}

/// Reads and encodes an image file.
pub fn embed_file(v: &VisionModel, path: &Path, max_pixels: u64) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading the image {}", path.display()))?;
    v.embed_image(&bytes, max_pixels).with_context(|| format!("the image {}", path.display()))
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

/// The chunks of `pieces` with `n_images` images, refusing a prompt that does not fit the
/// context.
pub fn chunks(model: &Model, v: &VisionModel, pieces: &[Piece], n_images: usize, n_ctx: u32) -> Result<Vec<Chunk>> {
    let chunks = prompt::chunks(pieces, n_images, model.tokenizer())?;
    let n = prompt::n_tokens(&chunks, v.hp.n_tokens() as usize);
    if n >= n_ctx as usize {
        bail!(
            "the prompt has {n} tokens ({} per image) but the context holds {n_ctx}: raise -c or shorten the prompt",
            v.hp.n_tokens()
        );
    }
    Ok(chunks)
}

/// The `--image`/`/image` error when no projector was given.
pub fn need_mmproj() -> anyhow::Error {
    anyhow::anyhow!("images need the model's projector: give --mmproj FILE")
}

/// The ids of `pieces`, each image (numbered from `first_image`, `n_images` of them) as
/// its run of flat ids (`vision::prompt::flatten`); without a projector, plain tokens.
pub fn flat_ids(
    model: &Model,
    vision: Option<&VisionModel>,
    pieces: &[Piece],
    first_image: usize,
    n_images: usize,
) -> Result<Vec<u32>> {
    let tok = model.tokenizer();
    let Some(v) = vision else { return Ok(gemma_gguf::chat::encode_pieces(pieces, tok)?) };
    let chunks = prompt::chunks(pieces, n_images, tok)?;
    Ok(prompt::flatten(&chunks, first_image, v.hp.n_tokens() as usize))
}
