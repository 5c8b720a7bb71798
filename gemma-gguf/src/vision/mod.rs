//! Images in: Gemma 3's and Gemma 4's vision towers and projectors, read from a projector GGUF
//! in llama.cpp's layout (`mmproj-*.gguf`, libmtmd's format); [`Projector`] picks by type.
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

/// A projector error: the file or its use does not fit (`Error::Projector`).
#[cfg(feature = "ggml")]
pub(crate) fn bad(what: impl Into<String>) -> crate::error::Error {
    crate::error::Error::Projector { what: what.into() }
}

/// A projector key `k`, a u32 within `min..=max`.
#[cfg(feature = "ggml")]
pub(crate) fn u32_in(g: &crate::gguf::GgufFile, k: &str, min: u32, max: u32) -> crate::error::Result<u32> {
    let v = g.get_u32(k)?;
    if v < min || v > max {
        return Err(bad(format!("{k} = {v} is outside {min}..={max}")));
    }
    Ok(v)
}

/// A projector key `k` holding 3 finite f32 values (an image mean or standard deviation).
#[cfg(feature = "ggml")]
pub(crate) fn triple(g: &crate::gguf::GgufFile, k: &str) -> crate::error::Result<[f32; 3]> {
    use crate::gguf::{GgufArray, GgufValue};
    match g.get(k) {
        Some(GgufValue::Array(GgufArray::F32(v))) if v.len() == 3 && v.iter().all(|x| x.is_finite()) => {
            Ok([v[0], v[1], v[2]])
        }
        _ => Err(bad(format!("{k} must be 3 finite f32 values"))),
    }
}

/// A projector's weights on a CPU backend with `threads` threads (all cores if `None`): the
/// tensors `declare` names in `file`, the patch kernel (from `patch_embd`) checked to be f32
/// or f16 (ggml's convolution takes nothing else), then allocated and copied from the file.
#[cfg(feature = "ggml")]
pub(crate) fn load_weights<W>(
    file: &crate::gguf::GgufFile,
    threads: Option<usize>,
    declare: impl FnOnce(&mut crate::arch::WeightDecl<'_>) -> crate::error::Result<W>,
    patch_embd: impl Fn(&W) -> crate::ggml::TensorId,
) -> crate::error::Result<(crate::ggml::Backend, crate::ggml::Context, W)> {
    use crate::ggml::{Backend, Context, Device, Type};
    let backend = Backend::new(Device::cpu()?)?;
    backend.set_n_threads(threads.unwrap_or_else(crate::ggml::default_threads))?;
    let wctx = Context::new(file.tensors().len() + 1, 0)?;
    let (w, declared) = {
        let mut decl = crate::arch::WeightDecl::new(&wctx, file);
        let w = declare(&mut decl)?;
        (w, decl.declared)
    };
    let kernel = wctx.tensor(patch_embd(&w))?.ty();
    if kernel != Type::F32 && kernel != Type::F16 {
        return Err(bad(format!(
            "{} is {}; the patch convolution takes f32 or f16",
            names::tensor::PATCH_EMBD,
            kernel.name()
        )));
    }
    wctx.alloc_tensors(&backend)?;
    for (name, id) in &declared {
        let info = file.tensor(name).ok_or_else(|| crate::error::Error::MissingTensor { name: name.clone() })?;
        wctx.tensor(*id)?.set_bytes(file.tensor_data(info)?)?;
    }
    Ok((backend, wctx, w))
}

/// Runs an encoder graph ending in `out` on `backend`: allocates it, sets the patch input
/// `inp` from `patches` (in `inp`'s type, f32 or f16, the kernel's, as ggml_conv_2d's im2col
/// makes it) and the other inputs with `set_more`, computes, and returns `out` as f32.
#[cfg(feature = "ggml")]
pub(crate) fn run_encoder<'a>(
    ctx: &'a crate::ggml::Context,
    backend: &crate::ggml::Backend,
    n_nodes: usize,
    (inp, patches): (crate::ggml::Tensor<'a>, &[f32]),
    out: crate::ggml::Tensor<'a>,
    set_more: impl FnOnce() -> crate::error::Result<()>,
) -> crate::error::Result<Vec<f32>> {
    let mut gf = ctx.new_graph(n_nodes)?;
    gf.expand(out)?;
    ctx.alloc_graph(&gf, backend)?;
    if inp.ty() == crate::ggml::Type::F32 {
        inp.set_f32(patches)?;
    } else {
        inp.set_f32_as_f16(patches)?;
    }
    set_more()?;
    backend.compute(&gf)?;
    out.get_f32()
}

/// Bidirectional attention over an image's patches (clip.cpp's `build_attn` without a mask):
/// q, k, v `[d_head, n_head, n_pos]` → `[d_head·n_head, n_pos]`. With `flash`, ggml's fused
/// kernel on keys and values cast to f16 with f32 accumulation (libmtmd's choice when flash
/// attention is on, its default on the CPU); without, the `[n_pos, n_pos, n_head]` scores in
/// f32, soft-maxed, times v (libmtmd's `-fa off`).
#[cfg(feature = "ggml")]
pub(crate) fn attention<'a>(
    c: &'a crate::ggml::Context,
    (q, k, v): (crate::ggml::Tensor<'a>, crate::ggml::Tensor<'a>, crate::ggml::Tensor<'a>),
    scale: f32,
    flash: bool,
) -> crate::error::Result<crate::ggml::Tensor<'a>> {
    let [d, n_head, n_pos, _] = q.ne();
    let q = c.permute(q, [0, 2, 1, 3])?;
    let k = c.permute(k, [0, 2, 1, 3])?;
    let out = if flash {
        let v = c.to_f16(c.permute(v, [0, 2, 1, 3])?)?;
        c.flash_attn_ext(q, c.to_f16(k)?, v, None, scale, 0.0)?
    } else {
        let v = c.cont(c.permute(v, [1, 2, 0, 3])?)?;
        let kq = c.soft_max_ext(c.mul_mat(k, q)?, None, scale)?;
        c.cont(c.permute(c.mul_mat(v, kq)?, [0, 2, 1, 3])?)?
    };
    c.reshape(out, &[d * n_head, n_pos])
}

/// A projector file of any supported type, chosen by its `clip.projector_type`: `gemma3`
/// (SigLIP + Gemma 3's projector, [`encoder::VisionModel`]) or `gemma4v` (Gemma 4's vision
/// tower and embedder, [`gemma4::Gemma4VisionModel`]).
#[cfg(feature = "ggml")]
pub enum Projector {
    Gemma3(encoder::VisionModel),
    Gemma4(gemma4::Gemma4VisionModel),
}

#[cfg(feature = "ggml")]
impl Projector {
    /// Loads `path` on the CPU with `threads` threads (all cores if `None`); any other
    /// projector type is a typed error naming it.
    pub fn load(path: impl AsRef<std::path::Path>, threads: Option<usize>) -> crate::error::Result<Projector> {
        let path = path.as_ref();
        let ty = crate::gguf::GgufFile::open(path)?.get_str(names::key::PROJECTOR_TYPE)?.to_owned();
        match ty.as_str() {
            names::PROJECTOR_GEMMA4V => Ok(Projector::Gemma4(gemma4::Gemma4VisionModel::load(path, threads)?)),
            _ => Ok(Projector::Gemma3(encoder::VisionModel::load(path, threads)?)),
        }
    }

    /// Refuses a language model this projector cannot feed (another family, another width).
    pub fn check_model(&self, model: &crate::model::Model) -> crate::error::Result<()> {
        match self {
            Projector::Gemma3(m) => m.check_model(model),
            Projector::Gemma4(m) => m.check_model(model),
        }
    }

    /// Chooses the encoder's attention: ggml's fused flash-attention kernel (`true`, the
    /// default, as libmtmd's on the CPU) or f32 scores (`false`, libmtmd's `-fa off`).
    pub fn set_flash_attn(&mut self, on: bool) {
        match self {
            Projector::Gemma3(m) => m.flash_attn = on,
            Projector::Gemma4(m) => m.flash_attn = on,
        }
    }

    /// Where this projector's images go among the prompt's tokens.
    pub fn layout(&self) -> &'static prompt::ImageLayout {
        match self {
            Projector::Gemma3(_) => &prompt::GEMMA3,
            Projector::Gemma4(_) => &prompt::GEMMA4,
        }
    }

    /// The language model's embedding width the projector maps to.
    pub fn n_embd_text(&self) -> u32 {
        match self {
            Projector::Gemma3(m) => m.hp.n_embd_text,
            Projector::Gemma4(m) => m.hp.n_embd_text,
        }
    }

    /// Image bytes → (image tokens, embeddings row by row): Gemma 3 always gives its fixed
    /// count (256 for the released models); Gemma 4 as many as the resized image has cells.
    pub fn embed_image(&self, bytes: &[u8], max_pixels: u64) -> crate::error::Result<(u32, Vec<f32>)> {
        match self {
            Projector::Gemma3(m) => Ok((m.hp.n_tokens(), m.embed_image(bytes, max_pixels)?)),
            Projector::Gemma4(m) => m.embed_image(bytes, max_pixels),
        }
    }
}
