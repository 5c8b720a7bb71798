//! Gemma 4's vision tower and embedder (llama.cpp's `gemma4v` projector file) as a ggml
//! graph: one image of any size whose sides are multiples of patch × pooling kernel →
//! `(w/p/k)·(h/p/k)` embeddings of the language model's width.
//!
//! Template, op for op: llama.cpp's `tools/mtmd/models/gemma4v.cpp` (`clip_graph_gemma4v::build`)
//! with `clip_graph::build_vit` and `build_attn` of `tools/mtmd/clip.cpp` for
//! `NORM_TYPE_RMS` (llama-cpp-sys-2 0.1.161); transformers' `Gemma4VisionModel` and
//! `Gemma4MultimodalEmbedder` (modeling_gemma4.py, 5.24.0) for the semantics:
//!
//! 1. pixels (`[0, 1]`) → `2x − 1`; patch embedding (a p×p stride-p convolution, no bias);
//!    plus the x and y position tables (`v.position_embd.weight` `[n_embd, n_pos, 2]`).
//! 2. per block: RMS norm (ln1); q, k, v (clipped linears); per-head RMS norms on q and k,
//!    weightless on v; 2-D RoPE (base 100, NEOX pairs), first half of each head by the x
//!    position, second by y; attention with scale 1; o; post-attention norm; residual; RMS
//!    norm (ln2); GEGLU MLP (tanh GELU of gate × up, down); post-MLP norm; residual.
//! 3. k×k average pooling over the patch grid, × √n_embd; `(x − std_bias) · std_scale`
//!    when present; weightless RMS norm; projection to the text width (clipped linear).
use super::names::{key, tensor as tn, PROJECTOR_GEMMA4V};
use crate::arch::WeightDecl;
use crate::error::{Error, Result};
use crate::ggml::{Backend, Context, Rope, Tensor, TensorId, Type};
use crate::gguf::{GgmlType, GgufFile, GgufValue};
use std::path::Path;

/// clip.cpp `load_hparams` for GEMMA4V: `n_merge = 3` unless
/// `clip.vision.projector.scale_factor` says otherwise; `rope_theta = 100`.
const DEFAULT_POOL: u32 = 3;
const ROPE_THETA: f32 = 100.0;
const MAX_EMBD: u32 = 1 << 15;
const MAX_FF: u32 = 1 << 18;
const MAX_LAYERS: u32 = 256;
/// `Gemma4ImageProcessor.max_soft_tokens`'s default (image_processing_pil_gemma4.py, 5.24.0).
const DEFAULT_SOFT_TOKENS: u32 = 280;
/// The largest budget transformers accepts (`_SUPPORTED_SOFT_TOKENS`) times 4.
const MAX_SOFT_TOKENS: u64 = 4480;
/// Patches per image side the graph accepts (the position tables bound it too).
const MAX_SIDE: u32 = 1 << 12;

use super::{bad, triple, u32_in};

/// A `gemma4v` projector's hyper-parameters, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Gemma4Hparams {
    pub n_embd: u32,
    pub n_ff: u32,
    pub n_layer: u32,
    pub n_head: u32,
    pub eps: f32,
    pub patch_size: u32,
    /// Pooling kernel (patches per side of one image token).
    pub pool: u32,
    /// Entries of each position table (the largest patch index + 1 per axis).
    pub n_pos: u32,
    pub n_embd_text: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// The preprocessing's token budget per image (Gemma4ImageProcessor's `max_soft_tokens`):
    /// from `clip.vision.image_max_pixels` / (patch × kernel)² when present, else 280,
    /// transformers' default.
    pub max_soft_tokens: u32,
}

impl Gemma4Hparams {
    pub fn from_gguf(g: &GgufFile) -> Result<Gemma4Hparams> {
        let proj = g.get_str(key::PROJECTOR_TYPE)?;
        if proj != PROJECTOR_GEMMA4V {
            return Err(bad(format!("{} = {proj:?}: expected \"{PROJECTOR_GEMMA4V}\"", key::PROJECTOR_TYPE)));
        }
        if !g.get_bool(key::HAS_VISION_ENCODER)? {
            return Err(bad(format!("{} is false", key::HAS_VISION_ENCODER)));
        }
        if !matches!(g.get(key::USE_GELU), Some(GgufValue::Bool(true))) {
            return Err(bad(format!("{} must be true (Gemma 4's tanh GELU)", key::USE_GELU)));
        }
        let n_embd = u32_in(g, key::EMBEDDING_LENGTH, 1, MAX_EMBD)?;
        let n_head = u32_in(g, key::HEAD_COUNT, 1, n_embd)?;
        if n_embd % n_head != 0 || (n_embd / n_head) % 4 != 0 {
            return Err(bad(format!(
                "{n_embd} wide with {n_head} heads: the head size must be a whole multiple of 4 (2-D RoPE)"
            )));
        }
        if let Some(GgufValue::U32(kv)) = g.get(key::HEAD_COUNT_KV) {
            if *kv != n_head {
                return Err(bad(format!("{} = {kv} ≠ {n_head} heads", key::HEAD_COUNT_KV)));
            }
        }
        let patch_size = u32_in(g, key::PATCH_SIZE, 1, 1024)?;
        let pool = match g.get(key::PROJ_SCALE_FACTOR) {
            None => DEFAULT_POOL,
            Some(_) => u32_in(g, key::PROJ_SCALE_FACTOR, 1, 64)?,
        };
        let eps = g.get_f32(key::LAYER_NORM_EPS)?;
        if !(eps.is_finite() && eps > 0.0) {
            return Err(bad(format!("{} = {eps} must be > 0", key::LAYER_NORM_EPS)));
        }
        let (mean, std) = (triple(g, key::IMAGE_MEAN)?, triple(g, key::IMAGE_STD)?);
        if std.iter().any(|&s| s <= 0.0) {
            return Err(bad(format!("{} must be > 0", key::IMAGE_STD)));
        }
        let pos = g.tensor(tn::POSITION_EMBD).ok_or_else(|| Error::MissingTensor { name: tn::POSITION_EMBD.into() })?;
        let n_pos = match pos.dims[..] {
            [e, n, 2] if e == n_embd as u64 && n >= 1 && n <= MAX_SIDE as u64 => n as u32,
            _ => {
                return Err(Error::TensorShape {
                    name: tn::POSITION_EMBD.into(),
                    expected: vec![n_embd as u64, 0, 2],
                    actual: pos.dims.clone(),
                })
            }
        };
        let cell = (patch_size * pool) as u64 * (patch_size * pool) as u64;
        let max_soft_tokens = match g.get(key::IMAGE_MAX_PIXELS) {
            None => DEFAULT_SOFT_TOKENS,
            Some(_) => {
                let px = g.get_u32(key::IMAGE_MAX_PIXELS)? as u64;
                if !px.is_multiple_of(cell) || px / cell == 0 || px / cell > MAX_SOFT_TOKENS {
                    return Err(bad(format!(
                        "{} = {px} must be 1..={MAX_SOFT_TOKENS} cells of (patch × kernel)² = {cell} pixels",
                        key::IMAGE_MAX_PIXELS
                    )));
                }
                (px / cell) as u32
            }
        };
        Ok(Gemma4Hparams {
            max_soft_tokens,
            n_embd,
            n_ff: u32_in(g, key::FEED_FORWARD_LENGTH, 1, MAX_FF)?,
            n_layer: u32_in(g, key::BLOCK_COUNT, 1, MAX_LAYERS)?,
            n_head,
            eps,
            patch_size,
            pool,
            n_pos,
            n_embd_text: u32_in(g, key::PROJECTION_DIM, 1, 1 << 17)?,
            mean,
            std,
        })
    }

    pub fn d_head(&self) -> u32 {
        self.n_embd / self.n_head
    }

    /// Image side multiple: patch × pooling kernel.
    pub fn align(&self) -> u32 {
        self.patch_size * self.pool
    }
}

/// A clipped linear: the matrix and its optional input and output ranges
/// (`Gemma4ClippableLinear`; clip.cpp's `clamp_info_map`, ±FLT_MAX when absent).
#[derive(Debug, Clone)]
pub struct Linear {
    pub w: TensorId,
    pub input: Option<(f32, f32)>,
    pub output: Option<(f32, f32)>,
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub ln1: TensorId,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub q_norm: TensorId,
    pub k_norm: TensorId,
    pub attn_post_norm: TensorId,
    pub ln2: TensorId,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
    pub ffn_post_norm: TensorId,
}

#[derive(Debug, Clone)]
pub struct Gemma4Weights {
    pub patch_embd: TensorId,
    pub position_embd: TensorId,
    pub layers: Vec<Layer>,
    pub std: Option<(TensorId, TensorId)>,
    pub proj: Linear,
}

/// One f32 scalar tensor `name` (a 1-element vector), if the file has it.
fn scalar(g: &GgufFile, name: &str) -> Result<Option<f32>> {
    let Some(info) = g.tensor(name) else { return Ok(None) };
    if info.ggml_type != GgmlType::F32 || info.dims.iter().product::<u64>() != 1 {
        return Err(Error::TensorShape { name: name.into(), expected: vec![1], actual: info.dims.clone() });
    }
    let b = g.tensor_data(info)?;
    let v =
        f32::from_le_bytes(b.get(..4).and_then(|s| s.try_into().ok()).ok_or_else(|| bad(format!("{name}: short")))?);
    if v.is_nan() {
        return Err(bad(format!("{name} is NaN")));
    }
    Ok(Some(v))
}

/// The (min, max) pair of `base.{which}_min/max`; absent halves are ±FLT_MAX as in clip.cpp.
fn range(g: &GgufFile, base: &str, which: &str) -> Result<Option<(f32, f32)>> {
    let lo = scalar(g, &format!("{base}.{which}_min"))?;
    let hi = scalar(g, &format!("{base}.{which}_max"))?;
    if lo.is_none() && hi.is_none() {
        return Ok(None);
    }
    let (lo, hi) = (lo.unwrap_or(f32::MIN), hi.unwrap_or(f32::MAX));
    if lo > hi {
        return Err(bad(format!("{base}: {which} range {lo} > {hi}")));
    }
    Ok(Some((lo, hi)))
}

impl Gemma4Weights {
    pub(crate) fn declare(d: &mut WeightDecl<'_>, g: &GgufFile, hp: &Gemma4Hparams) -> Result<Gemma4Weights> {
        let (e, f, p, dh) = (hp.n_embd as u64, hp.n_ff as u64, hp.patch_size as u64, hp.d_head() as u64);
        let lin = |d: &mut WeightDecl<'_>, name: String, ne: [u64; 2]| -> Result<Linear> {
            let w = d.tensor(&name, &ne)?;
            let base = name.trim_end_matches(".weight").to_owned();
            Ok(Linear { w, input: range(g, &base, "input")?, output: range(g, &base, "output")? })
        };
        let mut layers = Vec::with_capacity(hp.n_layer as usize);
        for il in 0..hp.n_layer as usize {
            let w = |role: &str| tn::block(il, role, "weight");
            layers.push(Layer {
                ln1: d.tensor(&w(tn::LN1), &[e])?,
                q: lin(d, w(tn::ATTN_Q), [e, e])?,
                k: lin(d, w(tn::ATTN_K), [e, e])?,
                v: lin(d, w(tn::ATTN_V), [e, e])?,
                o: lin(d, w(tn::ATTN_OUT), [e, e])?,
                q_norm: d.tensor(&w(tn::ATTN_Q_NORM), &[dh])?,
                k_norm: d.tensor(&w(tn::ATTN_K_NORM), &[dh])?,
                attn_post_norm: d.tensor(&w(tn::ATTN_POST_NORM), &[e])?,
                ln2: d.tensor(&w(tn::LN2), &[e])?,
                gate: lin(d, w(tn::FFN_GATE), [e, f])?,
                up: lin(d, w(tn::FFN_UP), [e, f])?,
                down: lin(d, w(tn::FFN_DOWN), [f, e])?,
                ffn_post_norm: d.tensor(&w(tn::FFN_POST_NORM), &[e])?,
            });
        }
        // clip.cpp uses the standardisation only when both tensors are there.
        let std = match (g.tensor(tn::STD_BIAS), g.tensor(tn::STD_SCALE)) {
            (Some(_), Some(_)) => Some((d.tensor(tn::STD_BIAS, &[e])?, d.tensor(tn::STD_SCALE, &[e])?)),
            _ => None,
        };
        Ok(Gemma4Weights {
            patch_embd: d.tensor(tn::PATCH_EMBD, &[p, p, 3, e])?,
            position_embd: d.tensor(tn::POSITION_EMBD, &[e, hp.n_pos as u64, 2])?,
            layers,
            std,
            proj: lin(d, tn::MM_INPUT_PROJECTION.into(), [e, hp.n_embd_text as u64])?,
        })
    }
}

/// A loaded `gemma4v` projector on the CPU.
pub struct Gemma4VisionModel {
    pub hp: Gemma4Hparams,
    /// The attention over the patches through ggml's fused kernel (keys and values in f16;
    /// libmtmd's default on the CPU) rather than as f32 scores (libmtmd's `-fa off`): on
    /// after loading.
    pub flash_attn: bool,
    backend: Backend,
    wctx: Context,
    w: Gemma4Weights,
}

impl Gemma4VisionModel {
    pub fn load(path: impl AsRef<Path>, threads: Option<usize>) -> Result<Gemma4VisionModel> {
        let file = GgufFile::open(path.as_ref())?;
        let hp = Gemma4Hparams::from_gguf(&file)?;
        let (backend, wctx, w) =
            super::load_weights(&file, threads, |d| Gemma4Weights::declare(d, &file, &hp), |w| w.patch_embd)?;
        if wctx.tensor(w.position_embd)?.ty() != Type::F32 {
            return Err(bad(format!("{} must be f32", tn::POSITION_EMBD)));
        }
        Ok(Gemma4VisionModel { hp, flash_attn: true, backend, wctx, w })
    }

    /// Refuses a language model this projector cannot feed: not Gemma 4 (Gemma 3's and 3n's
    /// vision towers differ), or another embedding width.
    pub fn check_model(&self, model: &crate::model::Model) -> Result<()> {
        if !matches!(model.arch(), crate::model::Arch::Gemma4 { .. }) {
            return Err(bad(format!(
                "a Gemma 4 projector cannot feed a {} model: use the Gemma 4 language model it was made with",
                model.arch().name()
            )));
        }
        let n_embd = model.dims().n_embd;
        if self.hp.n_embd_text != n_embd {
            return Err(bad(format!(
                "it projects to {} dimensions but the language model's embedding has {n_embd}: use the mmproj file made from the same checkpoint",
                self.hp.n_embd_text
            )));
        }
        Ok(())
    }

    /// Image bytes (PNG, JPEG, WebP; at most `max_pixels` pixels) → (number of image tokens,
    /// embeddings): [`super::preprocess::preprocess_gemma4`] with this file's budget, then
    /// [`encode`](Self::encode). Fails with a typed error when the image's resized size
    /// exceeds the position tables.
    pub fn embed_image(&self, bytes: &[u8], max_pixels: u64) -> Result<(u32, Vec<f32>)> {
        let hp = &self.hp;
        let spec = super::preprocess::PixelSpec { size: 0, mean: hp.mean, std: hp.std };
        let (w, h, pixels) =
            super::preprocess::preprocess_gemma4(bytes, &spec, hp.patch_size, hp.pool, hp.max_soft_tokens, max_pixels)?;
        Ok((self.n_tokens(w, h), self.encode(w, h, &pixels)?))
    }

    /// Image tokens of a `width`×`height` image (sides multiples of [`Gemma4Hparams::align`]).
    pub fn n_tokens(&self, width: u32, height: u32) -> u32 {
        (width / self.hp.align()) * (height / self.hp.align())
    }

    /// One image's pixel tensor (`[3][height][width]`, values `(x/255 − mean)/std` as
    /// [`super::preprocess::pixel_tensor`] makes them; sides multiples of patch × kernel)
    /// → its embeddings, `n_tokens` rows of `n_embd_text` values.
    pub fn encode(&self, width: u32, height: u32, pixels: &[f32]) -> Result<Vec<f32>> {
        let hp = &self.hp;
        let (a, p) = (hp.align(), hp.patch_size as usize);
        if width == 0 || height == 0 || !width.is_multiple_of(a) || !height.is_multiple_of(a) {
            return Err(bad(format!("a {width}×{height} image: both sides must be positive multiples of {a}")));
        }
        let (nx, ny) = ((width / hp.patch_size) as usize, (height / hp.patch_size) as usize);
        if nx > hp.n_pos as usize || ny > hp.n_pos as usize {
            return Err(bad(format!(
                "a {width}×{height} image has {nx}×{ny} patches; the position tables hold {}",
                hp.n_pos
            )));
        }
        let (w, h) = (width as usize, height as usize);
        if pixels.len() != 3 * w * h {
            return Err(Error::Length { what: "pixel tensor".into(), expected: 3 * w * h, actual: pixels.len() });
        }
        // 2(x − 0.5) = 2x − 1 (gemma4v.cpp's ggml_scale_bias(2, −1); 2x is exact, so one
        // rounding either way), then the patches as rows [p·p·3] in the kernel's order (x
        // fastest, then y, then channel), as ggml_conv_2d's im2col makes them.
        let row = p * p * 3;
        let n_patches = nx * ny;
        let mut patches = vec![0f32; row * n_patches];
        for (i, out) in patches.chunks_exact_mut(row).enumerate() {
            let (py, px) = (i / nx, i % nx);
            for c in 0..3 {
                for ky in 0..p {
                    let src = c * w * h + (py * p + ky) * w + px * p;
                    for (o, &v) in out[(c * p + ky) * p..(c * p + ky + 1) * p].iter_mut().zip(&pixels[src..src + p]) {
                        *o = v * 2.0 - 1.0;
                    }
                }
            }
        }
        let pos_x: Vec<i32> = (0..n_patches).map(|i| (i % nx) as i32).collect();
        let pos_y: Vec<i32> = (0..n_patches).map(|i| (i / nx) as i32).collect();

        let n_nodes = 96 * hp.n_layer as usize + 256;
        let ctx = Context::new(n_nodes, n_nodes)?;
        let ty = self.wctx.tensor(self.w.patch_embd)?.ty();
        let inp = ctx.new_tensor(ty, &[row as i64, n_patches as i64])?.set_input();
        let px_t = ctx.new_tensor(Type::I32, &[n_patches as i64])?.set_input();
        let py_t = ctx.new_tensor(Type::I32, &[n_patches as i64])?.set_input();
        let g = Graph { ctx: &ctx, wctx: &self.wctx, w: &self.w, hp, flash_attn: self.flash_attn };
        let out = g.build(inp, px_t, py_t, nx as i64, ny as i64)?.set_output();
        super::run_encoder(&ctx, &self.backend, n_nodes, (inp, &patches), out, || {
            px_t.set_i32(&pos_x)?;
            py_t.set_i32(&pos_y)
        })
    }
}

struct Graph<'a> {
    ctx: &'a Context,
    wctx: &'a Context,
    w: &'a Gemma4Weights,
    hp: &'a Gemma4Hparams,
    flash_attn: bool,
}

impl<'a> Graph<'a> {
    fn t(&self, id: TensorId) -> Result<Tensor<'a>> {
        self.wctx.tensor(id)
    }

    /// `Gemma4ClippableLinear` (gemma4v.cpp's `build_mm`): clamp the input, `x · Wᵀ`, clamp
    /// the output.
    fn linear(&self, x: Tensor<'a>, l: &Linear) -> Result<Tensor<'a>> {
        let c = self.ctx;
        let x = match l.input {
            Some((lo, hi)) => c.clamp(x, lo, hi)?,
            None => x,
        };
        let y = c.mul_mat(self.t(l.w)?, x)?;
        match l.output {
            Some((lo, hi)) => c.clamp(y, lo, hi),
            None => Ok(y),
        }
    }

    fn rms(&self, x: Tensor<'a>, w: TensorId) -> Result<Tensor<'a>> {
        self.ctx.mul(self.ctx.rms_norm(x, self.hp.eps)?, self.t(w)?)
    }

    /// gemma4v.cpp's `add_pos`: NEOX RoPE on dims [0, d/2) by x, then on [d/2, d) by y.
    fn rope2d(&self, x: Tensor<'a>, pos_x: Tensor<'a>, pos_y: Tensor<'a>) -> Result<Tensor<'a>> {
        let half = (self.hp.d_head() / 2) as i32;
        let r = Rope { n_dims: half, neox: true, freq_base: ROPE_THETA, freq_scale: 1.0, n_ctx_orig: 0 };
        let x = self.ctx.rope(x, pos_x, r)?;
        let y = self.ctx.rope(x, pos_y, r)?;
        self.ctx.rope_set_offset(y, half)
    }

    fn build(&self, patches: Tensor<'a>, pos_x: Tensor<'a>, pos_y: Tensor<'a>, nx: i64, ny: i64) -> Result<Tensor<'a>> {
        let (c, hp) = (self.ctx, self.hp);
        let (e, n_head, d) = (hp.n_embd as i64, hp.n_head as i64, hp.d_head() as i64);
        let n_pos = nx * ny;

        // patch embedding (ggml_conv_2d = im2col, then mul_mat with the kernel as [p·p·3, e]),
        // [n_pos, e] → [e, n_pos]; no bias
        let kernel = c.reshape(self.t(self.w.patch_embd)?, &[patches.ne()[0], e])?;
        let mut cur = c.cont(c.permute(c.mul_mat(patches, kernel)?, [1, 0, 2, 3])?)?;
        // position tables: views of [e, n_pos_tbl] at 0 and one table further
        let table = self.t(self.w.position_embd)?;
        let n_tbl = hp.n_pos as i64;
        let row_bytes = table.nb()[1];
        let tbl_x = c.view(table, &[e, n_tbl], [row_bytes, row_bytes * n_tbl as usize], 0)?;
        let tbl_y = c.view(table, &[e, n_tbl], [row_bytes, row_bytes * n_tbl as usize], row_bytes * n_tbl as usize)?;
        cur = c.add(cur, c.get_rows(tbl_x, pos_x)?)?;
        cur = c.add(cur, c.get_rows(tbl_y, pos_y)?)?;

        for l in &self.w.layers {
            let residual = cur;
            let x = self.rms(cur, l.ln1)?;
            let heads = |t: Tensor<'a>| c.reshape(t, &[d, n_head, n_pos]);
            // per-head norms (q_norm is d_head wide: build_vit's norm_per_head), then RoPE
            let q = self.rms(heads(self.linear(x, &l.q)?)?, l.q_norm)?;
            let k = self.rms(heads(self.linear(x, &l.k)?)?, l.k_norm)?;
            let v = heads(self.linear(x, &l.v)?)?;
            let q = self.rope2d(q, pos_x, pos_y)?;
            let k = self.rope2d(k, pos_x, pos_y)?;
            let v = c.rms_norm(v, hp.eps)?;
            // build_attn with scale 1 → [e, n_pos]
            let attn = super::attention(c, (q, k, v), 1.0, self.flash_attn)?;
            let attn = self.rms(self.linear(attn, &l.o)?, l.attn_post_norm)?;
            cur = c.add(attn, residual)?;

            let residual = cur;
            let x = self.rms(cur, l.ln2)?;
            let up = self.linear(x, &l.up)?;
            let gate = self.linear(x, &l.gate)?;
            let x = self.linear(c.geglu_split(gate, up)?, &l.down)?;
            let x = self.rms(x, l.ffn_post_norm)?;
            cur = c.add(residual, x)?;
        }

        // Gemma4VisionPooler: [e, n_pos] → [nx, ny, e] → k×k average → [e, n_tok], × √e
        let k = hp.pool as i64;
        let grid = c.reshape(c.cont(c.permute(cur, [1, 0, 2, 3])?)?, &[nx, ny, e])?;
        let pooled = c.pool_2d_avg(grid, k as i32)?;
        let n_tok = (nx / k) * (ny / k);
        let tokens = c.cont(c.permute(c.reshape(pooled, &[n_tok, e])?, [1, 0, 2, 3])?)?;
        let mut cur = c.scale(tokens, (e as f32).sqrt())?;
        if let Some((bias, scale)) = self.w.std {
            cur = c.mul(c.sub(cur, self.t(bias)?)?, self.t(scale)?)?;
        }
        // Gemma4MultimodalEmbedder: weightless RMS norm, projection
        let cur = c.rms_norm(cur, hp.eps)?;
        self.linear(cur, &self.w.proj)
    }
}
