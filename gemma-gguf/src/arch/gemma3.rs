//! Gemma 3 (text): hyper-parameters from GGUF, weights, and the forward graph.
//!
//! Template: llama.cpp's `src/models/gemma3.cpp` (llama-cpp-sys-2 0.1.161); Hugging Face's
//! `modeling_gemma3.py` for the reference semantics. ggml's dim 0 is the row length and
//! `mul_mat(a, b) = b·aᵀ`; shapes below are in ggml order.
use super::names::{arch_key, llm, tensor};
use super::{attention, optional_positive_f32, optional_u32, required_u32, AttnShape, WeightDecl};
use crate::error::{Error, Result};
use crate::ggml::{Context, Graph, Rope, Tensor, TensorId};
use crate::gguf::GgufFile;
use crate::kv_cache::{BatchInputs, KvCache};

const ARCH: &str = "gemma3";
/// Local-layer rope base when `rope.freq_base_swa` is absent (llama-hparams.h: 10 000).
const DEFAULT_ROPE_BASE_SWA: f32 = 10_000.0;
/// Global rope base when `rope.freq_base` is absent (llama-model.cpp: 10 000).
const DEFAULT_ROPE_BASE: f32 = 10_000.0;
/// Sliding-window period when `attention.sliding_window_pattern` is absent: 5 local
/// layers, then 1 global (llama.cpp's gemma3 loader: `load_swa_pattern(ml, 6)`).
const DEFAULT_SWA_PERIOD: u32 = 6;
/// The 27B model (62 layers) scales queries by 1/√(n_embd/n_head), not 1/√head_dim
/// (gemma_pytorch config.py `query_pre_attn_scalar`; llama.cpp's gemma3 loader).
const N_LAYER_27B: u32 = 62;
/// Layers beyond this are not a real Gemma model (the largest has 62).
const MAX_LAYERS: u32 = 1024;

/// Gemma 3 hyper-parameters, every quirk settled here.
#[derive(Debug, Clone)]
pub struct Hparams {
    pub n_vocab: u32,
    pub n_ctx_train: u32,
    pub n_embd: u32,
    pub n_layer: u32,
    pub n_ff: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub head_dim: u32,
    pub n_rot: u32,
    pub rms_eps: f32,
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
        let n_layer = required_u32(g, ARCH, llm::BLOCK_COUNT)?;
        if n_layer > MAX_LAYERS {
            return Err(Error::BadHparam {
                key: arch_key(ARCH, llm::BLOCK_COUNT),
                value: n_layer.to_string(),
                why: "absurd layer count",
            });
        }
        let n_embd = required_u32(g, ARCH, llm::EMBEDDING_LENGTH)?;
        let n_head = required_u32(g, ARCH, llm::HEAD_COUNT)?;
        let n_head_kv = optional_u32(g, ARCH, llm::HEAD_COUNT_KV, n_head)?;
        if n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(Error::BadHparam {
                key: arch_key(ARCH, llm::HEAD_COUNT_KV),
                value: n_head_kv.to_string(),
                why: "must divide head_count",
            });
        }
        let head_dim = optional_u32(g, ARCH, llm::KEY_LENGTH, n_embd / n_head)?;
        let head_dim_v = optional_u32(g, ARCH, llm::VALUE_LENGTH, head_dim)?;
        if head_dim == 0 || head_dim_v != head_dim || head_dim % 2 != 0 || n_head.checked_mul(head_dim).is_none() {
            return Err(Error::BadHparam {
                key: arch_key(ARCH, llm::KEY_LENGTH),
                value: format!("{head_dim}/{head_dim_v}"),
                why: "key and value length must be equal, even, > 0 and fit head_count × key_length in u32",
            });
        }
        let n_rot = optional_u32(g, ARCH, llm::ROPE_DIMENSION_COUNT, head_dim)?;
        if n_rot == 0 || n_rot % 2 != 0 || n_rot > head_dim {
            return Err(Error::BadHparam {
                key: arch_key(ARCH, llm::ROPE_DIMENSION_COUNT),
                value: n_rot.to_string(),
                why: "must be even, > 0 and at most the head size",
            });
        }
        let rms_eps = g.get_f32(&arch_key(ARCH, llm::RMS_EPS))?;
        if !(rms_eps.is_finite() && rms_eps > 0.0) {
            return Err(Error::BadHparam {
                key: arch_key(ARCH, llm::RMS_EPS),
                value: rms_eps.to_string(),
                why: "must be finite and > 0",
            });
        }
        let sliding_window = match g.get(&arch_key(ARCH, llm::SLIDING_WINDOW)) {
            None => None,
            Some(_) => Some(required_u32(g, ARCH, llm::SLIDING_WINDOW)?),
        };
        let is_local = swa_layers(g, n_layer, sliding_window.is_some())?;
        let rope_scale = optional_positive_f32(g, ARCH, llm::ROPE_SCALING_FACTOR)?.unwrap_or(1.0);
        let n_vocab = g.get_str_array(super::names::tokenizer::TOKENS).map(|t| t.len() as u32)?;
        Ok(Hparams {
            n_vocab,
            n_ctx_train: required_u32(g, ARCH, llm::CONTEXT_LENGTH)?,
            n_embd,
            n_layer,
            n_ff: required_u32(g, ARCH, llm::FEED_FORWARD_LENGTH)?,
            n_head,
            n_head_kv,
            head_dim,
            n_rot,
            rms_eps,
            rope_base: optional_positive_f32(g, ARCH, llm::ROPE_FREQ_BASE)?.unwrap_or(DEFAULT_ROPE_BASE),
            rope_freq_scale: 1.0 / rope_scale,
            rope_base_swa: optional_positive_f32(g, ARCH, llm::ROPE_FREQ_BASE_SWA)?.unwrap_or(DEFAULT_ROPE_BASE_SWA),
            sliding_window,
            is_local,
            attn_scale: if n_layer == N_LAYER_27B {
                1.0 / ((n_embd / n_head) as f32).sqrt()
            } else {
                1.0 / (head_dim as f32).sqrt()
            },
            final_softcap: optional_positive_f32(g, ARCH, llm::FINAL_LOGIT_SOFTCAPPING)?,
        })
    }
}

/// Which layers use the sliding window: a bool array, a period (`il % p < p − 1` is local),
/// or the default period 6. None when the model has no window.
fn swa_layers(g: &GgufFile, n_layer: u32, has_window: bool) -> Result<Vec<bool>> {
    if !has_window {
        return Ok(vec![false; n_layer as usize]);
    }
    let key = arch_key(ARCH, llm::SLIDING_WINDOW_PATTERN);
    if let Some(crate::gguf::GgufValue::Array(crate::gguf::GgufArray::Bool(v))) = g.get(&key) {
        if v.len() != n_layer as usize {
            return Err(Error::BadHparam {
                key,
                value: format!("{} entries", v.len()),
                why: "needs one entry per layer",
            });
        }
        return Ok(v.clone());
    }
    let p = optional_u32(g, ARCH, llm::SLIDING_WINDOW_PATTERN, DEFAULT_SWA_PERIOD)?;
    Ok((0..n_layer).map(|il| p == 0 || il % p < p - 1).collect())
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
        let (e, v, ff) = (hp.n_embd as u64, hp.n_vocab as u64, hp.n_ff as u64);
        let (q, kv, hd) = ((hp.n_head * hp.head_dim) as u64, (hp.n_head_kv * hp.head_dim) as u64, hp.head_dim as u64);
        let token_embd = d.tensor(&tensor::global(tensor::TOKEN_EMBD), &[e, v])?;
        let output_norm = d.tensor(&tensor::global(tensor::OUTPUT_NORM), &[e])?;
        let output = match d.gguf.tensor(&tensor::global(tensor::OUTPUT)) {
            Some(_) => d.tensor(&tensor::global(tensor::OUTPUT), &[e, v])?,
            None => token_embd,
        };
        let mut layers = Vec::with_capacity(hp.n_layer as usize);
        for il in 0..hp.n_layer as usize {
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

/// What one forward pass reads: weights, cache, inputs.
pub(crate) struct Forward<'s, 'm> {
    pub ctx: &'s Context,
    pub wctx: &'s Context,
    pub w: &'m Weights,
    pub hp: &'m Hparams,
    pub kv: &'s KvCache,
    pub inp: &'m BatchInputs<'s>,
    pub flash_attn: bool,
}

impl<'s> Forward<'s, '_> {
    /// RMS norm of `x` times weight `w` (which already holds Gemma's `1 + w`).
    fn norm(&self, x: Tensor<'s>, w: TensorId, name: &str, il: usize) -> Result<Tensor<'s>> {
        let y = self.ctx.rms_norm(x, self.hp.rms_eps)?;
        self.ctx.mul(y, self.wctx.tensor(w)?)?.set_name(&format!("{name}-{il}"))
    }

    fn mm(&self, w: TensorId, x: Tensor<'s>) -> Result<Tensor<'s>> {
        self.ctx.mul_mat(self.wctx.tensor(w)?, x)
    }

    /// The whole forward pass: token ids → logits `[n_vocab, n_out]`.
    pub fn build(&self, gf: &mut Graph<'s>) -> Result<Tensor<'s>> {
        let (hp, ctx, inp) = (self.hp, self.ctx, self.inp);
        // x = embd[tokens] · √n_embd: [n_embd, n_tokens]
        let embd = ctx.get_rows(self.wctx.tensor(self.w.token_embd)?, inp.tokens)?;
        let mut x = ctx.scale(embd, (hp.n_embd as f32).sqrt())?.set_name("inp_scaled")?;
        for il in 0..hp.n_layer as usize {
            x = self.layer(gf, x, il)?;
        }
        let x = self.norm(x, self.w.output_norm, "result_norm", 0)?;
        // logits = x · token_embdᵀ: [n_vocab, n_out]
        let mut logits = self.mm(self.w.output, x)?;
        if let Some(cap) = hp.final_softcap {
            logits = ctx.scale(ctx.tanh(ctx.scale(logits, 1.0 / cap)?)?, cap)?;
        }
        logits.set_name("result_output")
    }

    fn layer(&self, gf: &mut Graph<'s>, x: Tensor<'s>, il: usize) -> Result<Tensor<'s>> {
        let (hp, ctx, l) = (self.hp, self.ctx, &self.w.layers[il]);
        let n_tokens = x.ne()[1];
        let (hd, nh, nkv) = (hp.head_dim as i64, hp.n_head as i64, hp.n_head_kv as i64);
        let h = self.norm(x, l.attn_norm, "attn_norm", il)?;
        // q: [head_dim, n_head, n_tokens]; k, v: [head_dim, n_head_kv, n_tokens]
        let q = ctx.reshape(self.mm(l.attn_q, h)?, &[hd, nh, n_tokens])?;
        let k = ctx.reshape(self.mm(l.attn_k, h)?, &[hd, nkv, n_tokens])?;
        let v = self.mm(l.attn_v, h)?;
        let q = self.norm(q, l.attn_q_norm, "Qcur_normed", il)?;
        let k = self.norm(k, l.attn_k_norm, "Kcur_normed", il)?;
        let local = hp.is_local[il];
        let (base, scale) = if local { (hp.rope_base_swa, 1.0) } else { (hp.rope_base, hp.rope_freq_scale) };
        let rope = Rope {
            n_dims: hp.n_rot as i32,
            neox: true,
            freq_base: base,
            freq_scale: scale,
            n_ctx_orig: hp.n_ctx_train as i32,
        };
        let q = ctx.rope(q, self.inp.pos, rope)?.set_name(&format!("Qcur-{il}"))?;
        let q = ctx.scale(q, hp.attn_scale)?;
        let k = ctx.rope(k, self.inp.pos, rope)?.set_name(&format!("Kcur-{il}"))?;

        // store k, v in this layer's cache rows, then attend over the cache
        let (kc, vc, kvi) = self.kv.layer(il, self.inp)?;
        gf.expand(ctx.set_rows(kc, ctx.reshape(k, &[hd * nkv, n_tokens])?, kvi.idx)?)?;
        gf.expand(ctx.set_rows(vc, v, kvi.idx)?)?;
        let shape = AttnShape {
            head_dim: hd,
            n_head: nh,
            n_head_kv: nkv,
            n_tokens,
            n_kv: kvi.n_kv,
            flash: self.flash_attn,
            logit_softcap: None,
            il,
        };
        let attn = attention(ctx, q, kc, vc, kvi.mask, shape)?.set_name(&format!("kqv_out-{il}"))?;
        let mut cur = self.mm(l.attn_output, attn)?;
        let mut x = x;
        if il + 1 == hp.n_layer as usize {
            // last layer: keep only the positions whose logits are read
            if let Some(out) = self.inp.out_ids {
                cur = ctx.get_rows(cur, out)?;
                x = ctx.get_rows(x, out)?;
            }
        }
        let cur = self.norm(cur, l.post_attention_norm, "attn_post_norm", il)?;
        let sa_out = ctx.add(cur, x)?;

        // FFN: down(gelu(gate(h)) · up(h))
        let h = self.norm(sa_out, l.ffn_norm, "ffn_norm", il)?;
        let ff = ctx.geglu_split(self.mm(l.ffn_gate, h)?, self.mm(l.ffn_up, h)?)?;
        let ff = self.norm(self.mm(l.ffn_down, ff)?, l.post_ffw_norm, "ffn_post_norm", il)?;
        ctx.add(ff, sa_out)?.set_name(&format!("l_out-{il}"))
    }
}
