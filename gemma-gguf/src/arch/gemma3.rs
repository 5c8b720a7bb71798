//! Gemma 3 (text): hyper-parameters from GGUF, weights, and the forward graph.
//!
//! Template: llama.cpp's `src/models/gemma3.cpp` (llama-cpp-sys-2 0.1.161); Hugging Face's
//! `modeling_gemma3.py` for the reference semantics. ggml's dim 0 is the row length and
//! `mul_mat(a, b) = b·aᵀ`; shapes below are in ggml order.
use super::names::{arch_key, llm, tensor};
use super::{optional_positive_f32, required_u32, rope_base_and_scale, swa_layers, Dims, Pass, WeightDecl};
use crate::error::Result;
use crate::ggml::{Graph, Rope, Tensor, TensorId};
use crate::gguf::GgufFile;

const ARCH: &str = "gemma3";
/// Local-layer rope base when `rope.freq_base_swa` is absent (llama-hparams.h: 10 000).
const DEFAULT_ROPE_BASE_SWA: f32 = 10_000.0;
/// Sliding-window period when `attention.sliding_window_pattern` is absent: 5 local
/// layers, then 1 global (llama.cpp's gemma3 loader: `load_swa_pattern(ml, 6)`).
const DEFAULT_SWA_PERIOD: u32 = 6;
/// The 27B model (62 layers) scales queries by 1/√(n_embd/n_head), not 1/√head_dim
/// (gemma_pytorch config.py `query_pre_attn_scalar`; llama.cpp's gemma3 loader).
const N_LAYER_27B: u32 = 62;

/// Gemma 3 hyper-parameters, every quirk settled here.
#[derive(Debug, Clone)]
pub struct Hparams {
    pub dims: Dims,
    /// Rope base and frequency scale (1/linear factor) on global layers.
    pub rope_base: f32,
    pub rope_freq_scale: f32,
    /// Rope base on local (sliding-window) layers; no scaling there.
    pub rope_base_swa: f32,
    /// Sliding window in tokens, `None` when the model has none.
    pub sliding_window: Option<u32>,
    /// `true` for local (sliding-window) layers.
    pub is_local: Vec<bool>,
    /// Query scale applied before attention.
    pub attn_scale: f32,
    pub final_softcap: Option<f32>,
}

impl Hparams {
    pub fn from_gguf(g: &GgufFile) -> Result<Hparams> {
        let dims = Dims::from_gguf(g, ARCH)?;
        let sliding_window = match g.get(&arch_key(ARCH, llm::SLIDING_WINDOW)) {
            None => None,
            Some(_) => Some(required_u32(g, ARCH, llm::SLIDING_WINDOW)?),
        };
        // No window: every layer is global, whatever the pattern says.
        let is_local = match sliding_window {
            Some(_) => swa_layers(g, ARCH, dims.n_layer, DEFAULT_SWA_PERIOD)?,
            None => vec![false; dims.n_layer as usize],
        };
        let (rope_base, rope_freq_scale) = rope_base_and_scale(g, ARCH)?;
        Ok(Hparams {
            attn_scale: dims.attn_scale(N_LAYER_27B),
            dims,
            rope_base,
            rope_freq_scale,
            rope_base_swa: optional_positive_f32(g, ARCH, llm::ROPE_FREQ_BASE_SWA)?.unwrap_or(DEFAULT_ROPE_BASE_SWA),
            sliding_window,
            is_local,
            final_softcap: optional_positive_f32(g, ARCH, llm::FINAL_LOGIT_SOFTCAPPING)?,
        })
    }
}

/// One block's weights (ids in the weights context).
#[derive(Debug, Clone)]
pub struct Layer {
    pub attn_norm: TensorId,
    pub attn_q: TensorId,
    pub attn_k: TensorId,
    pub attn_v: TensorId,
    pub attn_q_norm: TensorId,
    pub attn_k_norm: TensorId,
    pub attn_output: TensorId,
    pub post_attention_norm: TensorId,
    pub ffn_norm: TensorId,
    pub ffn_gate: TensorId,
    pub ffn_up: TensorId,
    pub ffn_down: TensorId,
    pub post_ffw_norm: TensorId,
}

/// All weights. Gemma ties the output projection to `token_embd` unless `output` exists.
#[derive(Debug, Clone)]
pub struct Weights {
    pub token_embd: TensorId,
    pub output_norm: TensorId,
    pub output: TensorId,
    pub layers: Vec<Layer>,
}

impl Weights {
    /// Declares every weight in `d`'s context with the shape the hyper-parameters imply.
    pub(crate) fn declare(d: &mut WeightDecl<'_>, hp: &Hparams) -> Result<Weights> {
        let dm = &hp.dims;
        let (e, ff, hd) = (dm.n_embd as u64, dm.n_ff as u64, dm.head_dim as u64);
        let (q, kv) = ((dm.n_head * dm.head_dim) as u64, (dm.n_head_kv * dm.head_dim) as u64);
        let (token_embd, output_norm, output) = d.embeddings(e, dm.n_vocab as u64)?;
        let mut layers = Vec::with_capacity(dm.n_layer as usize);
        for il in 0..dm.n_layer as usize {
            let mut t = |name: &str, dims: &[u64]| d.tensor(&tensor::block(il, name), dims);
            layers.push(Layer {
                attn_norm: t(tensor::ATTN_NORM, &[e])?,
                attn_q: t(tensor::ATTN_Q, &[e, q])?,
                attn_k: t(tensor::ATTN_K, &[e, kv])?,
                attn_v: t(tensor::ATTN_V, &[e, kv])?,
                attn_q_norm: t(tensor::ATTN_Q_NORM, &[hd])?,
                attn_k_norm: t(tensor::ATTN_K_NORM, &[hd])?,
                attn_output: t(tensor::ATTN_OUTPUT, &[q, e])?,
                post_attention_norm: t(tensor::POST_ATTENTION_NORM, &[e])?,
                ffn_norm: t(tensor::FFN_NORM, &[e])?,
                ffn_gate: t(tensor::FFN_GATE, &[e, ff])?,
                ffn_up: t(tensor::FFN_UP, &[e, ff])?,
                ffn_down: t(tensor::FFN_DOWN, &[ff, e])?,
                post_ffw_norm: t(tensor::POST_FFW_NORM, &[e])?,
            });
        }
        Ok(Weights { token_embd, output_norm, output, layers })
    }
}

/// One forward pass of Gemma 3 over a batch.
pub(crate) struct Forward<'s, 'm> {
    pub pass: Pass<'s, 'm>,
    pub w: &'m Weights,
    pub hp: &'m Hparams,
    /// Embeddings fed instead of token ids (an image's, from the projector): `[n_embd,
    /// n_tokens]`, used as they are.
    pub embd: Option<Tensor<'s>>,
}

impl<'s> Forward<'s, '_> {
    /// The whole forward pass: token ids (or embeddings) → logits `[n_vocab, n_out]`.
    pub fn build(&self, gf: &mut Graph<'s>) -> Result<Tensor<'s>> {
        let (hp, d) = (self.hp, &self.hp.dims);
        // x = embd[tokens] · √n_embd, or the given embeddings unscaled (llama.cpp's
        // `build_inp_embd` scales token rows only; transformers' Gemma3Model scales in
        // `embed_tokens` and scatters image features in after): [n_embd, n_tokens]
        let mut x = match self.embd {
            Some(e) => e,
            None => self.pass.embed(self.w.token_embd, d.n_embd)?,
        };
        for il in 0..d.n_layer as usize {
            x = self.layer(gf, x, il)?;
        }
        // logits = rmsnorm(x)·output_norm · token_embdᵀ (+ softcap): [n_vocab, n_out]
        self.pass.logits(x, (self.w.output_norm, self.w.output), d.rms_eps, hp.final_softcap)
    }

    fn layer(&self, gf: &mut Graph<'s>, x: Tensor<'s>, il: usize) -> Result<Tensor<'s>> {
        let (hp, d, p, l) = (self.hp, &self.hp.dims, &self.pass, &self.w.layers[il]);
        let (ctx, n_tokens, eps) = (p.ctx, x.ne()[1], d.rms_eps);
        let (hd, nh, nkv) = (d.head_dim as i64, d.n_head as i64, d.n_head_kv as i64);
        let h = p.norm(x, l.attn_norm, eps, "attn_norm", il)?;
        // q: [head_dim, n_head, n_tokens]; k: [head_dim, n_head_kv, n_tokens]; v: [head_dim·n_head_kv, n_tokens]
        let q = ctx.reshape(p.mm(l.attn_q, h)?, &[hd, nh, n_tokens])?;
        let k = ctx.reshape(p.mm(l.attn_k, h)?, &[hd, nkv, n_tokens])?;
        let v = p.mm(l.attn_v, h)?;
        let q = p.norm(q, l.attn_q_norm, eps, "Qcur_normed", il)?;
        let k = p.norm(k, l.attn_k_norm, eps, "Kcur_normed", il)?;
        let local = hp.is_local[il];
        let (base, scale) = if local { (hp.rope_base_swa, 1.0) } else { (hp.rope_base, hp.rope_freq_scale) };
        let rope = Rope {
            n_dims: d.n_rot as i32,
            neox: true,
            freq_base: base,
            freq_scale: scale,
            n_ctx_orig: d.n_ctx_train as i32,
        };
        let (q, k) = p.rope(q, k, rope, il)?;
        let q = ctx.scale(q, hp.attn_scale)?;
        // attention over the cache (the window on local layers is in the mask), then the
        // output projection and its norm: [n_embd, n_tokens]
        let attn = p.attend(gf, (q, k, v), d, None, il)?;
        let mut cur = p.mm(l.attn_output, attn)?;
        let mut x = x;
        if il + 1 == d.n_layer as usize {
            (cur, x) = p.keep_outputs(cur, x)?;
        }
        let cur = p.norm(cur, l.post_attention_norm, eps, "attn_post_norm", il)?;
        let sa_out = ctx.add(cur, x)?;

        // FFN: post_norm(down(gelu(gate(h)) · up(h)))
        let h = p.norm(sa_out, l.ffn_norm, eps, "ffn_norm", il)?;
        let ff = p.geglu(p.mm(l.ffn_gate, h)?, p.mm(l.ffn_up, h)?)?;
        let ff = p.norm(p.mm(l.ffn_down, ff)?, l.post_ffw_norm, eps, "ffn_post_norm", il)?;
        ctx.add(ff, sa_out)?.set_name(&format!("l_out-{il}"))
    }
}
