//! Gemma 3's vision encoder (SigLIP) and projector: hyper-parameters from the projector GGUF,
//! weights, and the graph that turns one image's pixel tensor into `n_tokens` embeddings of
//! the language model's width.
//!
//! Template: llama.cpp's `tools/mtmd/models/siglip.cpp` (`PROJECTOR_TYPE_GEMMA3`) and
//! `clip_graph::build_vit` in `tools/mtmd/clip.cpp` (llama-cpp-sys-2 0.1.161); transformers'
//! `SiglipVisionTransformer` and `Gemma3MultiModalProjector` (5.24.0) for the semantics.
//! ggml's dim 0 is the row length and `mul_mat(a, b) = b·aᵀ`; shapes below are ggml order.
use super::names::{key, tensor as tn, PROJECTOR_GEMMA3};
use super::preprocess::PixelSpec;
use crate::arch::WeightDecl;
use crate::error::{Error, Result};
use crate::ggml::{Backend, Context, Tensor, TensorId};
use crate::gguf::{GgufFile, GgufValue};
use std::path::Path;

/// Gemma 3's pooling kernel when `clip.vision.projector.scale_factor` is absent (clip.cpp,
/// `load_hparams`: `hparams.n_merge = 4` for `PROJECTOR_TYPE_GEMMA3`).
const DEFAULT_POOL: u32 = 4;
// Caps far above SigLIP-So400m (1152 wide, 4304 FFN, 27 layers, 896 px).
const MAX_EMBD: u32 = 1 << 15;
const MAX_FF: u32 = 1 << 18;
const MAX_LAYERS: u32 = 256;
const MAX_IMAGE_SIZE: u32 = 4096;

/// The projector's hyper-parameters, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Hparams {
    pub n_embd: u32,
    pub n_ff: u32,
    pub n_layer: u32,
    pub n_head: u32,
    pub eps: f32,
    pub patch_size: u32,
    /// Average-pooling kernel: patches per side / image tokens per side.
    pub pool: u32,
    /// Output width: the language model's embedding width.
    pub n_embd_text: u32,
    /// Image side, mean and std of the pixel tensor.
    pub pixels: PixelSpec,
}

use super::{bad, triple, u32_in};

impl Hparams {
    pub fn from_gguf(g: &GgufFile) -> Result<Hparams> {
        let proj = g.get_str(key::PROJECTOR_TYPE)?;
        if proj == super::names::PROJECTOR_GEMMA4V {
            return Err(bad(format!(
                "{} = {proj:?}: a Gemma 4 projector; images into Gemma 4's language model are not supported yet (the library encodes them: vision::Projector)",
                key::PROJECTOR_TYPE
            )));
        }
        if proj != PROJECTOR_GEMMA3 {
            return Err(bad(format!("{} = {proj:?}: only Gemma 3's (\"gemma3\") is supported", key::PROJECTOR_TYPE)));
        }
        if !g.get_bool(key::HAS_VISION_ENCODER)? {
            return Err(bad(format!("{} is false", key::HAS_VISION_ENCODER)));
        }
        // Without use_gelu clip.cpp runs quick-GELU, which SigLIP does not use.
        if !matches!(g.get(key::USE_GELU), Some(GgufValue::Bool(true))) {
            return Err(bad(format!("{} must be true (SigLIP's tanh GELU)", key::USE_GELU)));
        }
        let n_embd = u32_in(g, key::EMBEDDING_LENGTH, 1, MAX_EMBD)?;
        let n_head = u32_in(g, key::HEAD_COUNT, 1, n_embd)?;
        if n_embd % n_head != 0 {
            return Err(bad(format!("{n_embd} wide is not a multiple of {n_head} heads")));
        }
        let image_size = u32_in(g, key::IMAGE_SIZE, 1, MAX_IMAGE_SIZE)?;
        let patch_size = u32_in(g, key::PATCH_SIZE, 1, image_size)?;
        let pool = match g.get(key::PROJ_SCALE_FACTOR) {
            None => DEFAULT_POOL,
            Some(_) => u32_in(g, key::PROJ_SCALE_FACTOR, 1, image_size)?,
        };
        let side = image_size / patch_size;
        if image_size % patch_size != 0 || side % pool != 0 {
            return Err(bad(format!(
                "image {image_size} px, patch {patch_size}, pooling {pool}: the patch grid must tile the image and the pooling the grid"
            )));
        }
        let eps = g.get_f32(key::LAYER_NORM_EPS)?;
        if !(eps.is_finite() && eps > 0.0) {
            return Err(bad(format!("{} = {eps} must be > 0", key::LAYER_NORM_EPS)));
        }
        let (mean, std) = (triple(g, key::IMAGE_MEAN)?, triple(g, key::IMAGE_STD)?);
        if std.iter().any(|&s| s <= 0.0) {
            return Err(bad(format!("{} must be > 0", key::IMAGE_STD)));
        }
        Ok(Hparams {
            n_embd,
            n_ff: u32_in(g, key::FEED_FORWARD_LENGTH, 1, MAX_FF)?,
            n_layer: u32_in(g, key::BLOCK_COUNT, 1, MAX_LAYERS)?,
            n_head,
            eps,
            patch_size,
            pool,
            n_embd_text: u32_in(g, key::PROJECTION_DIM, 1, 1 << 17)?,
            pixels: PixelSpec { size: image_size, mean, std },
        })
    }

    /// Patches per side of the encoder's grid.
    pub fn side(&self) -> u32 {
        self.pixels.size / self.patch_size
    }

    /// Image tokens per image (256 for Gemma 3).
    pub fn n_tokens(&self) -> u32 {
        (self.side() / self.pool).pow(2)
    }
}

/// One encoder block: weight and bias of each norm and linear layer.
#[derive(Debug, Clone)]
pub struct Layer {
    pub ln1: [TensorId; 2],
    pub attn_q: [TensorId; 2],
    pub attn_k: [TensorId; 2],
    pub attn_v: [TensorId; 2],
    pub attn_out: [TensorId; 2],
    pub ln2: [TensorId; 2],
    pub ffn_up: [TensorId; 2],
    pub ffn_down: [TensorId; 2],
}

#[derive(Debug, Clone)]
pub struct Weights {
    pub patch_embd: TensorId,
    pub patch_bias: TensorId,
    pub position_embd: TensorId,
    pub layers: Vec<Layer>,
    pub post_ln: [TensorId; 2],
    pub soft_emb_norm: TensorId,
    pub input_projection: TensorId,
}

impl Weights {
    pub(crate) fn declare(d: &mut WeightDecl<'_>, hp: &Hparams) -> Result<Weights> {
        let (e, f, p) = (hp.n_embd as u64, hp.n_ff as u64, hp.patch_size as u64);
        let mut lin = |il: usize, role: &str, ne: [u64; 2]| -> Result<[TensorId; 2]> {
            let w = if ne[1] == 0 {
                d.tensor(&tn::block(il, role, "weight"), &[ne[0]])?
            } else {
                d.tensor(&tn::block(il, role, "weight"), &ne)?
            };
            let b = d.tensor(&tn::block(il, role, "bias"), &[if ne[1] == 0 { ne[0] } else { ne[1] }])?;
            Ok([w, b])
        };
        let mut layers = Vec::with_capacity(hp.n_layer as usize);
        for il in 0..hp.n_layer as usize {
            layers.push(Layer {
                ln1: lin(il, tn::LN1, [e, 0])?,
                attn_q: lin(il, tn::ATTN_Q, [e, e])?,
                attn_k: lin(il, tn::ATTN_K, [e, e])?,
                attn_v: lin(il, tn::ATTN_V, [e, e])?,
                attn_out: lin(il, tn::ATTN_OUT, [e, e])?,
                ln2: lin(il, tn::LN2, [e, 0])?,
                ffn_up: lin(il, tn::FFN_UP, [e, f])?,
                ffn_down: lin(il, tn::FFN_DOWN, [f, e])?,
            });
        }
        let n_patches = (hp.side() as u64).pow(2);
        Ok(Weights {
            patch_embd: d.tensor(tn::PATCH_EMBD, &[p, p, 3, e])?,
            patch_bias: d.tensor(tn::PATCH_BIAS, &[e])?,
            position_embd: d.tensor(tn::POSITION_EMBD, &[e, n_patches])?,
            layers,
            post_ln: [
                d.tensor(&format!("{}.weight", tn::POST_LN), &[e])?,
                d.tensor(&format!("{}.bias", tn::POST_LN), &[e])?,
            ],
            soft_emb_norm: d.tensor(tn::MM_SOFT_EMB_NORM, &[e])?,
            input_projection: d.tensor(tn::MM_INPUT_PROJECTION, &[hp.n_embd_text as u64, e])?,
        })
    }
}

/// A loaded projector: weights copied onto a backend.
pub struct VisionModel {
    pub hp: Hparams,
    /// The attention over the patches through ggml's fused kernel (keys and values in f16;
    /// libmtmd's default on the CPU) rather than as f32 scores (libmtmd's `-fa off`): on
    /// after loading.
    pub flash_attn: bool,
    backend: Backend,
    wctx: Context,
    w: Weights,
}

impl VisionModel {
    /// Loads a projector file on the CPU with `threads` threads (all cores if `None`).
    pub fn load(path: impl AsRef<Path>, threads: Option<usize>) -> Result<VisionModel> {
        let file = GgufFile::open(path.as_ref())?;
        let hp = Hparams::from_gguf(&file)?;
        let (backend, wctx, w) = super::load_weights(&file, threads, |d| Weights::declare(d, &hp), |w| w.patch_embd)?;
        Ok(VisionModel { hp, flash_attn: true, backend, wctx, w })
    }

    /// Refuses a projector made for another language model (its output width differs).
    pub fn check_text_width(&self, n_embd_text: u32) -> Result<()> {
        if self.hp.n_embd_text != n_embd_text {
            return Err(bad(format!(
                "it projects to {} dimensions but the language model's embedding has {n_embd_text}: use the mmproj file made from the same checkpoint",
                self.hp.n_embd_text
            )));
        }
        Ok(())
    }

    /// Refuses a language model this projector cannot feed: not Gemma 3 (Gemma 3n and 4 have
    /// their own vision towers), or another embedding width.
    pub fn check_model(&self, model: &crate::model::Model) -> Result<()> {
        if !matches!(model.arch(), crate::model::Arch::Gemma3 { .. }) {
            return Err(bad(format!(
                "a Gemma 3 projector cannot feed a {} model: use a Gemma 3 (4B or larger) language model",
                model.arch().name()
            )));
        }
        self.check_text_width(model.dims().n_embd)
    }

    /// Image bytes (PNG, JPEG, WebP; at most `max_pixels` pixels) → its embeddings, as
    /// [`encode`](Self::encode).
    pub fn embed_image(&self, bytes: &[u8], max_pixels: u64) -> Result<Vec<f32>> {
        let pixels = super::preprocess::preprocess(bytes, &self.hp.pixels, max_pixels)?;
        self.encode(&pixels)
    }

    /// One image's pixel tensor (`[3][size][size]`, see [`super::preprocess`]) →
    /// `n_tokens` embeddings of `n_embd_text` values, row by row.
    pub fn encode(&self, pixels: &[f32]) -> Result<Vec<f32>> {
        let hp = &self.hp;
        let (s, p, side) = (hp.pixels.size as usize, hp.patch_size as usize, hp.side() as usize);
        if pixels.len() != 3 * s * s {
            return Err(Error::Length { what: "pixel tensor".into(), expected: 3 * s * s, actual: pixels.len() });
        }
        // Patches as rows `[p·p·3]` in the kernel's order (x fastest, then y, then channel):
        // ggml_conv_2d's im2col for a stride-p, p×p kernel (clip.cpp's `build_inp`), made here.
        let row = p * p * 3;
        let mut patches = vec![0f32; row * side * side];
        for (i, out) in patches.chunks_exact_mut(row).enumerate() {
            let (py, px) = (i / side, i % side);
            for c in 0..3 {
                for ky in 0..p {
                    let src = c * s * s + (py * p + ky) * s + px * p;
                    out[(c * p + ky) * p..(c * p + ky + 1) * p].copy_from_slice(&pixels[src..src + p]);
                }
            }
        }
        let n_nodes = 64 * hp.n_layer as usize + 256;
        let ctx = Context::new(n_nodes, n_nodes)?;
        // The patches in the kernel's type, as ggml_conv_2d's im2col makes them.
        let ty = self.wctx.tensor(self.w.patch_embd)?.ty();
        let inp = ctx.new_tensor(ty, &[row as i64, (side * side) as i64])?.set_input();
        let out =
            Graph { ctx: &ctx, wctx: &self.wctx, w: &self.w, hp, flash_attn: self.flash_attn }.build(inp)?.set_output();
        super::run_encoder(&ctx, &self.backend, n_nodes, (inp, &patches), out, || Ok(()))
    }
}

/// The graph builder's borrowed state.
struct Graph<'a> {
    ctx: &'a Context,
    wctx: &'a Context,
    w: &'a Weights,
    hp: &'a Hparams,
    flash_attn: bool,
}

impl<'a> Graph<'a> {
    fn t(&self, id: TensorId) -> Result<Tensor<'a>> {
        self.wctx.tensor(id)
    }

    /// `x · Wᵀ + b` for a linear layer `[w, b]`.
    fn linear(&self, x: Tensor<'a>, wb: [TensorId; 2]) -> Result<Tensor<'a>> {
        let c = self.ctx;
        c.add(c.mul_mat(self.t(wb[0])?, x)?, self.t(wb[1])?)
    }

    /// LayerNorm with weight and bias.
    fn layer_norm(&self, x: Tensor<'a>, wb: [TensorId; 2]) -> Result<Tensor<'a>> {
        let c = self.ctx;
        c.add(c.mul(c.norm(x, self.hp.eps)?, self.t(wb[0])?)?, self.t(wb[1])?)
    }

    /// Patches `[p·p·3, n_patches]` → image embeddings `[n_embd_text, n_tokens]`.
    fn build(&self, patches: Tensor<'a>) -> Result<Tensor<'a>> {
        let (c, hp) = (self.ctx, self.hp);
        let (e, n_head) = (hp.n_embd as i64, hp.n_head as i64);
        let (d_head, side) = (e / n_head, hp.side() as i64);
        let n_pos = side * side;
        let kq_scale = 1.0 / (d_head as f32).sqrt();

        // patch embedding, operands in ggml_conv_2d's order (im2col first): [n_pos, e] → [e, n_pos]
        let kernel = c.reshape(self.t(self.w.patch_embd)?, &[patches.ne()[0], e])?;
        let embd = c.cont(c.permute(c.mul_mat(patches, kernel)?, [1, 0, 2, 3])?)?;
        let mut cur = c.add(embd, self.t(self.w.patch_bias)?)?;
        cur = c.add(cur, self.t(self.w.position_embd)?)?;

        for l in &self.w.layers {
            let residual = cur;
            let x = self.layer_norm(cur, l.ln1)?;
            // q, k, v: [d_head, n_head, n_pos]; full (bidirectional) attention → [e, n_pos]
            let heads = |t: Tensor<'a>| c.reshape(t, &[d_head, n_head, n_pos]);
            let qkv = (
                heads(self.linear(x, l.attn_q)?)?,
                heads(self.linear(x, l.attn_k)?)?,
                heads(self.linear(x, l.attn_v)?)?,
            );
            let attn = super::attention(c, qkv, kq_scale, self.flash_attn)?;
            cur = c.add(self.linear(attn, l.attn_out)?, residual)?;

            let residual = cur;
            let x = self.layer_norm(cur, l.ln2)?;
            let x = c.gelu(self.linear(x, l.ffn_up)?)?;
            cur = c.add(self.linear(x, l.ffn_down)?, residual)?;
        }
        cur = self.layer_norm(cur, self.w.post_ln)?;

        // projector: [e, n_pos] → [side, side, e] → avg-pool → [e, n_tok]
        let grid = c.reshape(c.cont(c.permute(cur, [1, 0, 2, 3])?)?, &[side, side, e])?;
        let pooled = c.pool_2d_avg(grid, hp.pool as i32)?;
        let n_tok = pooled.ne()[0] * pooled.ne()[1];
        let tokens = c.cont(c.permute(c.reshape(pooled, &[n_tok, e])?, [1, 0, 2, 3])?)?;
        // RMS norm (weight stored as 1 + w), then x · W with W [n_embd_text, e] in ggml order
        let normed = c.mul(c.rms_norm(tokens, hp.eps)?, self.t(self.w.soft_emb_norm)?)?;
        let proj_t = c.cont(c.permute(self.t(self.w.input_projection)?, [1, 0, 2, 3])?)?;
        c.mul_mat(proj_t, normed)
    }
}
