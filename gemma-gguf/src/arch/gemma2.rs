//! Gemma 2: hyper-parameters from GGUF, weights, and the forward graph.
//!
//! Template: llama.cpp's `src/models/gemma2.cpp` (llama-cpp-sys-2 0.1.161); Hugging Face's
//! `modeling_gemma2.py` for the reference semantics. Gemma 1 plus: post-attention and
//! post-FFN norms, attention scores soft-capped at 50·tanh(s/50) and logits at 30·tanh(l/30),
//! a 4096-token sliding window on every other layer (even layers, starting with the first),
//! and a query scale of 1/√(n_embd/n_head) on the 27B model. ggml's dim 0 is the row length
//! and `mul_mat(a, b) = b·aᵀ`; shapes in ggml order.
use super::names::{arch_key, llm, tensor};
use super::{optional_positive_f32, optional_u32, rope_base_and_scale, swa_layers, Dims, Pass, WeightDecl};
use crate::error::{Error, Result};
use crate::ggml::{Graph, Rope, Tensor, TensorId};
use crate::gguf::GgufFile;

const ARCH: &str = "gemma2";
/// Sliding window when `attention.sliding_window` is absent (llama.cpp's gemma2 loader:
/// "default value of gemma 2").
const DEFAULT_SLIDING_WINDOW: u32 = 4096;
/// Sliding-window period when `attention.sliding_window_pattern` is absent: local, global,
/// local, … (llama.cpp's gemma2 loader: `load_swa_pattern(ml, 2)`).
const DEFAULT_SWA_PERIOD: u32 = 2;
/// Soft-caps when their keys are absent (llama-hparams.h: `f_attn_logit_softcapping = 50`,
/// `f_final_logit_softcapping = 30`; Gemma 2's config.json has the same).
const DEFAULT_ATTN_SOFTCAP: f32 = 50.0;
const DEFAULT_FINAL_SOFTCAP: f32 = 30.0;
/// The 27B model (46 layers) scales queries by 1/√(n_embd/n_head) = 1/√144, not 1/√head_dim
/// (gemma_pytorch config.py `query_pre_attn_scalar`; llama.cpp's gemma2 loader).
const N_LAYER_27B: u32 = 46;

/// Gemma 2 hyper-parameters, every quirk settled here.
#[derive(Debug, Clone)]
pub struct Hparams {
    pub dims: Dims,
    /// Rope base and frequency scale (1/linear factor) on global layers.
    pub rope_base: f32,
    pub rope_freq_scale: f32,
    /// Rope base on local layers: `rope.freq_base_swa`, else the global base (llama.cpp's
    /// gemma2 loader; the scale is the same on both kinds).
    pub rope_base_swa: f32,
    /// Sliding window in tokens on local layers.
    pub sliding_window: u32,
    /// `true` for local (sliding-window) layers.
    pub is_local: Vec<bool>,
    /// Query scale applied before attention.
    pub attn_scale: f32,
    /// Attention scores become `c·tanh(s/c)` before the mask and softmax.
    pub attn_softcap: f32,
    /// Logits become `c·tanh(l/c)`.
    pub final_softcap: f32,
}

impl Hparams {
    pub fn from_gguf(g: &GgufFile) -> Result<Hparams> {
        let dims = Dims::from_gguf(g, ARCH)?;
        let (rope_base, rope_freq_scale) = rope_base_and_scale(g, ARCH)?;
        let sliding_window = optional_u32(g, ARCH, llm::SLIDING_WINDOW, DEFAULT_SLIDING_WINDOW)?;
        if sliding_window == 0 {
            return Err(Error::BadHparam {
                key: arch_key(ARCH, llm::SLIDING_WINDOW),
                value: "0".into(),
                why: "must be at least 1",
            });
        }
        let softcap = |suffix, default| optional_positive_f32(g, ARCH, suffix).map(|v| v.unwrap_or(default));
        Ok(Hparams {
            is_local: swa_layers(g, ARCH, dims.n_layer, DEFAULT_SWA_PERIOD)?,
            attn_scale: dims.attn_scale(N_LAYER_27B),
            dims,
            rope_base,
            rope_freq_scale,
            rope_base_swa: optional_positive_f32(g, ARCH, llm::ROPE_FREQ_BASE_SWA)?.unwrap_or(rope_base),
            sliding_window,
            attn_softcap: softcap(llm::ATTN_LOGIT_SOFTCAPPING, DEFAULT_ATTN_SOFTCAP)?,
            final_softcap: softcap(llm::FINAL_LOGIT_SOFTCAPPING, DEFAULT_FINAL_SOFTCAP)?,
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
    pub attn_output: TensorId,
    pub post_attention_norm: TensorId,
    pub ffn_norm: TensorId,
    pub ffn_gate: TensorId,
    pub ffn_up: TensorId,
    pub ffn_down: TensorId,
    pub post_ffw_norm: TensorId,
}

/// All weights. The output projection is `token_embd` unless the file has `output`.
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
        let hd = &hp.dims;
        let (e, ff) = (hd.n_embd as u64, hd.n_ff as u64);
        let (q, kv) = ((hd.n_head * hd.head_dim) as u64, (hd.n_head_kv * hd.head_dim) as u64);
        let (token_embd, output_norm, output) = d.embeddings(e, hd.n_vocab as u64)?;
        let mut layers = Vec::with_capacity(hd.n_layer as usize);
        for il in 0..hd.n_layer as usize {
            let mut t = |name: &str, dims: &[u64]| d.tensor(&tensor::block(il, name), dims);
            layers.push(Layer {
                attn_norm: t(tensor::ATTN_NORM, &[e])?,
                attn_q: t(tensor::ATTN_Q, &[e, q])?,
                attn_k: t(tensor::ATTN_K, &[e, kv])?,
                attn_v: t(tensor::ATTN_V, &[e, kv])?,
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

/// One forward pass of Gemma 2 over a batch.
pub(crate) struct Forward<'s, 'm> {
    pub pass: Pass<'s, 'm>,
    pub w: &'m Weights,
    pub hp: &'m Hparams,
}

impl<'s> Forward<'s, '_> {
    /// The whole forward pass: token ids → logits `[n_vocab, n_out]`.
    pub fn build(&self, gf: &mut Graph<'s>) -> Result<Tensor<'s>> {
        let (hp, d) = (self.hp, &self.hp.dims);
        // x = embd[tokens] · √n_embd: [n_embd, n_tokens]
        let mut x = self.pass.embed(self.w.token_embd, d.n_embd)?;
        for il in 0..d.n_layer as usize {
            x = self.layer(gf, x, il)?;
        }
        // logits = 30·tanh(rmsnorm(x)·output_norm · token_embdᵀ / 30): [n_vocab, n_out]
        self.pass.logits(x, (self.w.output_norm, self.w.output), d.rms_eps, Some(hp.final_softcap))
    }

    fn layer(&self, gf: &mut Graph<'s>, x: Tensor<'s>, il: usize) -> Result<Tensor<'s>> {
        let (hp, d, p, l) = (self.hp, &self.hp.dims, &self.pass, &self.w.layers[il]);
        let (ctx, n_tokens) = (p.ctx, x.ne()[1]);
        let (hd, nh, nkv) = (d.head_dim as i64, d.n_head as i64, d.n_head_kv as i64);
        let h = p.norm(x, l.attn_norm, d.rms_eps, "attn_norm", il)?;
        // q: [head_dim, n_head, n_tokens]; k: [head_dim, n_head_kv, n_tokens]; v: [head_dim·n_head_kv, n_tokens]
        let q = ctx.reshape(p.mm(l.attn_q, h)?, &[hd, nh, n_tokens])?;
        let k = ctx.reshape(p.mm(l.attn_k, h)?, &[hd, nkv, n_tokens])?;
        let v = p.mm(l.attn_v, h)?;
        let rope = Rope {
            n_dims: d.n_rot as i32,
            neox: true,
            freq_base: if hp.is_local[il] { hp.rope_base_swa } else { hp.rope_base },
            freq_scale: hp.rope_freq_scale,
            n_ctx_orig: d.n_ctx_train as i32,
        };
        let (q, k) = p.rope(q, k, rope, il)?;
        let q = ctx.scale(q, hp.attn_scale)?;
        // soft-capped attention over the cache (the window on local layers is in the mask),
        // then the output projection and its norm: [n_embd, n_tokens]
        let attn = p.attend(gf, (q, k, v), d, Some(hp.attn_softcap), il)?;
        let mut cur = p.mm(l.attn_output, attn)?;
        let mut x = x;
        if il + 1 == d.n_layer as usize {
            (cur, x) = p.keep_outputs(cur, x)?;
        }
        let cur = p.norm(cur, l.post_attention_norm, d.rms_eps, "attn_post_norm", il)?;
        let sa_out = ctx.add(cur, x)?.set_name(&format!("sa_out-{il}"))?;

        // FFN: post_norm(down(gelu(gate(h)) · up(h)))
        let h = p.norm(sa_out, l.ffn_norm, d.rms_eps, "ffn_norm", il)?;
        let ff = p.geglu(p.mm(l.ffn_gate, h)?, p.mm(l.ffn_up, h)?)?;
        let ff = p.norm(p.mm(l.ffn_down, ff)?, l.post_ffw_norm, d.rms_eps, "ffn_post_norm", il)?;
        ctx.add(ff, sa_out)?.set_name(&format!("l_out-{il}"))
    }
}
