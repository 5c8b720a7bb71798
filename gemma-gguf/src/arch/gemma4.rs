//! Gemma 4 (text): hyper-parameters from GGUF, weights, and the forward graph.
//!
//! Template: llama.cpp's `src/models/gemma4.cpp` and `build_moe_ffn` in `llama-graph.cpp`
//! (llama-cpp-sys-2 0.1.161); Hugging Face's `modeling_gemma4.py` for the semantics. What is
//! new against Gemma 3, each settled at load time:
//! - per-layer head shapes: sliding layers use `key_length_swa`, full layers `key_length`;
//! - full layers rotate with frequency factors (`rope_freqs`, proportional rope: factors of
//!   1e30 leave the high pairs unrotated) and their own base;
//! - no query scaling (scale 1), a weightless RMS norm on V, V = K when `attn_v` is absent;
//! - shared KV: the last `shared_kv_layers` layers compute no K/V and read the cache of the
//!   last earlier layer of their kind;
//! - per-layer embeddings (PLE): a token-indexed table, only gathered (it stays in the mapped
//!   file: only the rows of the tokens seen become resident), mixed into every layer;
//! - mixture of experts beside the dense FFN on layers that have a router;
//! - `layer_output_scale`, and a final soft-cap of 30 when the key is absent.
//!
//! Images (input embeddings from a `gemma4v` projector), as both references feed them:
//! - the rows are used as they are (no √n_embd), and the per-layer projection is taken of them:
//!   transformers' `Gemma4Model.forward` scatters the image features into `inputs_embeds`
//!   before `project_per_layer_inputs`; llama.cpp's `project_per_layer_inputs(inpL, …)` on the
//!   embedding input (src/models/gemma4.cpp);
//! - the token part of the per-layer input is the padding token's row at every image position
//!   (transformers replaces image ids by `pad_token_id` in `llm_input_ids`; llama.cpp's
//!   `build_inp_per_layer` takes row 0, Gemma 4's pad id);
//! - fed with causal attention off, an image's tokens see each other both ways on sliding
//!   layers only, full layers staying causal (transformers' `create_masks_for_vision_model`;
//!   llama.cpp's `LLAMA_NON_CAUSAL_TYPE_SWA_ONLY`). Whether a model's images are fed so is
//!   [`Hparams::image_bidirectional`].
//!
//! ggml's dim 0 is the row length and `mul_mat(a, b) = b·aᵀ`; shapes below are in ggml order.
use super::names::{arch_key, llm, tensor};
use super::{optional_positive_f32, required_u32, rope_base_and_scale, swa_layers, Dims, Heads, Pass, WeightDecl};
use crate::error::{Error, Result};
use crate::ggml::{Graph, Rope, Tensor, TensorId};
use crate::gguf::{GgufArray, GgufError, GgufFile, GgufValue};

const ARCH: &str = "gemma4";
/// Final soft-cap when `final_logit_softcapping` is absent (llama-hparams.h:
/// `f_final_logit_softcapping = 30.0f`); a stored 0 turns it off, as in llama.cpp.
const DEFAULT_FINAL_SOFTCAP: f32 = 30.0;
/// Sliding-layer rope base when `rope.freq_base_swa` is absent (llama-hparams.h: 10 000).
const DEFAULT_ROPE_BASE_SWA: f32 = 10_000.0;
/// llama.cpp's limit on experts (llama-hparams.h `LLAMA_MAX_EXPERTS`).
const MAX_EXPERTS: u32 = 1024;
/// Router weights are divided by their sum, floored at f16's smallest normal
/// (llama-graph.cpp `build_moe_ffn`, `norm_w`).
const MIN_WEIGHT_SUM: f32 = 6.103_515_6e-5;

/// One layer's shape.
#[derive(Debug, Clone)]
pub struct LayerHp {
    pub local: bool,
    pub heads: Heads,
    pub n_rot: u32,
    pub n_ff: u32,
    /// The earlier layer whose KV cache this one reads; `None`: it has its own.
    pub shared_from: Option<usize>,
}

/// Gemma 4 hyper-parameters.
#[derive(Debug, Clone)]
pub struct Hparams {
    /// The largest per-layer sizes (head count and size, FFN), for memory estimates.
    pub dims: Dims,
    pub layers: Vec<LayerHp>,
    /// Width of each layer's slice of the per-layer embeddings; 0: the model has none.
    pub n_embd_per_layer: u32,
    pub sliding_window: u32,
    pub rope_base: f32,
    pub rope_freq_scale: f32,
    pub rope_base_swa: f32,
    pub n_expert: u32,
    pub n_expert_used: u32,
    /// Expert FFN width per layer (0 where the key is absent).
    pub n_ff_exp: Vec<u32>,
    pub final_softcap: Option<f32>,
    /// Whether images are fed with causal attention off (see [`image_bidirectional`]).
    pub image_bidirectional: bool,
    /// The per-layer table's row at image positions: the padding token's.
    pub pad_token: u32,
}

/// Text widths of Gemma 4 E2B and E4B, whose images libmtmd feeds causally
/// (mtmd.cpp `mtmd_decode_use_non_causal`, gemma4v: non-causal unless the width is one of these).
const CAUSAL_IMAGE_WIDTHS: [u32; 2] = [1536, 2560];

/// Whether an image's tokens attend to each other both ways (on sliding layers): our
/// converter's `attention.bidirectional_vision`, transformers' `use_bidirectional_attention ==
/// "vision"` (Gemma4Model.forward); for files without it (llama.cpp's converter), libmtmd's rule
/// by width.
fn image_bidirectional(g: &GgufFile, n_embd: u32) -> Result<bool> {
    let key = arch_key(ARCH, llm::BIDIRECTIONAL_VISION);
    match g.get(&key) {
        Some(_) => Ok(g.get_bool(&key)?),
        None => Ok(!CAUSAL_IMAGE_WIDTHS.contains(&n_embd)),
    }
}

/// The padding token (`tokenizer.ggml.padding_token_id`, 0 when absent as llama.cpp's row 0),
/// below `n_vocab`.
fn pad_token(g: &GgufFile, n_vocab: u32) -> Result<u32> {
    let key = crate::names::tokenizer::PAD_ID;
    let pad = match g.get(key) {
        Some(_) => g.get_u32(key)?,
        None => 0,
    };
    if pad >= n_vocab {
        let why = "the padding token is outside the vocabulary";
        return Err(Error::BadHparam { key: key.into(), value: pad.to_string(), why });
    }
    Ok(pad)
}

/// `{arch}.{suffix}` as one u32 for every layer, or an array of one per layer (llama.cpp's
/// `get_key_or_arr`); `default` when absent. Each value must lie in `1..=max`.
fn per_layer_u32(g: &GgufFile, suffix: &str, n_layer: u32, default: Option<&[u32]>, max: u32) -> Result<Vec<u32>> {
    let key = arch_key(ARCH, suffix);
    let bad = |value: String, why| Error::BadHparam { key: key.clone(), value, why };
    let v: Vec<u32> = match g.get(&key) {
        None => match default {
            Some(d) => return Ok(d.to_vec()),
            None => return Err(Error::Gguf(GgufError::MissingKey { key })),
        },
        Some(GgufValue::Array(GgufArray::U32(a))) => a.clone(),
        Some(GgufValue::Array(GgufArray::I32(a))) => a
            .iter()
            .map(|&x| u32::try_from(x).map_err(|_| bad(x.to_string(), "must not be negative")))
            .collect::<Result<_>>()?,
        Some(_) => vec![g.get_u32(&key)?; n_layer as usize],
    };
    if v.len() != n_layer as usize {
        return Err(bad(format!("{} entries", v.len()), "needs one entry per layer"));
    }
    if let Some(&x) = v.iter().find(|&&x| x == 0 || x > max) {
        return Err(bad(x.to_string(), "out of range for this model"));
    }
    Ok(v)
}

/// An even head or rope size in `1..=max`.
fn even_size(g: &GgufFile, suffix: &str, default: Option<u32>, max: u32) -> Result<u32> {
    let key = arch_key(ARCH, suffix);
    let v = match (g.get(&key), default) {
        (None, Some(d)) => d,
        _ => required_u32(g, ARCH, suffix)?,
    };
    if v == 0 || v % 2 != 0 || v > max {
        return Err(Error::BadHparam { key, value: v.to_string(), why: "must be even, > 0 and at most the head size" });
    }
    Ok(v)
}

impl Hparams {
    pub fn from_gguf(g: &GgufFile) -> Result<Hparams> {
        let bad = |suffix: &str, value: String, why| Error::BadHparam { key: arch_key(ARCH, suffix), value, why };
        let n_layer = required_u32(g, ARCH, llm::BLOCK_COUNT)?;
        if n_layer > super::MAX_LAYERS {
            return Err(bad(llm::BLOCK_COUNT, n_layer.to_string(), "absurd layer count"));
        }
        let n_embd = required_u32(g, ARCH, llm::EMBEDDING_LENGTH)?;
        let n_head = per_layer_u32(g, llm::HEAD_COUNT, n_layer, None, 1 << 16)?;
        let n_head_kv = per_layer_u32(g, llm::HEAD_COUNT_KV, n_layer, Some(&n_head), 1 << 16)?;
        let n_ff = per_layer_u32(g, llm::FEED_FORWARD_LENGTH, n_layer, None, 1 << 24)?;
        // Head sizes: llama.cpp requires key = value length on both kinds (gemma4.cpp).
        let hd_full = even_size(g, llm::KEY_LENGTH, Some(n_embd / n_head[0].max(1)), 1 << 16)?;
        let hd_swa = even_size(g, llm::KEY_LENGTH_SWA, None, 1 << 16)?;
        for (suffix, k, v) in [
            (llm::VALUE_LENGTH, hd_full, even_size(g, llm::VALUE_LENGTH, Some(hd_full), 1 << 16)?),
            (llm::VALUE_LENGTH_SWA, hd_swa, even_size(g, llm::VALUE_LENGTH_SWA, None, 1 << 16)?),
        ] {
            if k != v {
                return Err(bad(suffix, v.to_string(), "must equal the key length"));
            }
        }
        // Rope sizes default as in llama_model_base::load_hparams: full = key length, swa = full.
        let n_rot_full = even_size(g, llm::ROPE_DIMENSION_COUNT, Some(hd_full), hd_full)?;
        let n_rot_swa = even_size(g, llm::ROPE_DIMENSION_COUNT_SWA, Some(n_rot_full), hd_swa)?;
        if g.get(&arch_key(ARCH, llm::SLIDING_WINDOW_PATTERN)).is_none() {
            return Err(Error::Gguf(GgufError::MissingKey { key: arch_key(ARCH, llm::SLIDING_WINDOW_PATTERN) }));
        }
        let is_local = swa_layers(g, ARCH, n_layer, 0)?;
        let n_shared = super::optional_u32(g, ARCH, llm::SHARED_KV_LAYERS, 0)?;
        if n_shared >= n_layer {
            return Err(bad(llm::SHARED_KV_LAYERS, n_shared.to_string(), "must be fewer than the layers"));
        }
        let n_kv_layers = (n_layer - n_shared) as usize;
        let mut layers = Vec::with_capacity(n_layer as usize);
        for il in 0..n_layer as usize {
            let local = is_local[il];
            let head_dim = if local { hd_swa } else { hd_full };
            if n_head_kv[il] > n_head[il] || n_head[il] % n_head_kv[il] != 0 {
                return Err(bad(llm::HEAD_COUNT_KV, n_head_kv[il].to_string(), "must divide head_count"));
            }
            // A shared layer reads the last layer of its kind that has a cache (transformers'
            // `kv_sharing`; llama.cpp's fixed choice of layer n−2 / n−1 is the same in every
            // published model).
            let shared_from = match il >= n_kv_layers {
                false => None,
                true => Some((0..n_kv_layers).rev().find(|&j| is_local[j] == local).ok_or_else(|| {
                    bad(llm::SHARED_KV_LAYERS, n_shared.to_string(), "a shared layer has no earlier layer of its kind")
                })?),
            };
            if let Some(src) = shared_from {
                if n_head_kv[src] != n_head_kv[il] {
                    return Err(bad(llm::HEAD_COUNT_KV, n_head_kv[il].to_string(), "differs from the shared layer's"));
                }
            }
            layers.push(LayerHp {
                local,
                heads: Heads { head_dim, n_head: n_head[il], n_head_kv: n_head_kv[il] },
                n_rot: if local { n_rot_swa } else { n_rot_full },
                n_ff: n_ff[il],
                shared_from,
            });
        }
        let n_expert = super::optional_u32(g, ARCH, llm::EXPERT_COUNT, 0)?;
        let n_expert_used = super::optional_u32(g, ARCH, llm::EXPERT_USED_COUNT, 0)?;
        if n_expert > MAX_EXPERTS {
            return Err(bad(llm::EXPERT_COUNT, n_expert.to_string(), "at most 1024 experts"));
        }
        if n_expert_used > n_expert {
            return Err(bad(llm::EXPERT_USED_COUNT, n_expert_used.to_string(), "more than expert_count"));
        }
        let no_exp = vec![0; n_layer as usize];
        let n_ff_exp = match n_expert {
            0 => no_exp,
            _ => per_layer_u32(g, llm::EXPERT_FEED_FORWARD_LENGTH, n_layer, None, 1 << 24)?,
        };
        let n_embd_per_layer = required_per_layer_width(g)?;
        let sliding_window = required_u32(g, ARCH, llm::SLIDING_WINDOW)?;
        let (rope_base, rope_freq_scale) = rope_base_and_scale(g, ARCH)?;
        let final_softcap = match g.get(&arch_key(ARCH, llm::FINAL_LOGIT_SOFTCAPPING)) {
            None => Some(DEFAULT_FINAL_SOFTCAP),
            Some(_) => {
                let c = g.get_f32(&arch_key(ARCH, llm::FINAL_LOGIT_SOFTCAPPING))?;
                if !(c.is_finite() && c >= 0.0) {
                    return Err(bad(llm::FINAL_LOGIT_SOFTCAPPING, c.to_string(), "must be finite and ≥ 0"));
                }
                (c > 0.0).then_some(c)
            }
        };
        let max = |f: fn(&LayerHp) -> u32| layers.iter().map(f).max().unwrap_or(0);
        let rms_eps = g.get_f32(&arch_key(ARCH, llm::RMS_EPS))?;
        if !(rms_eps.is_finite() && rms_eps > 0.0) {
            return Err(bad(llm::RMS_EPS, rms_eps.to_string(), "must be finite and > 0"));
        }
        let dims = Dims {
            n_vocab: g.get_str_array(crate::names::tokenizer::TOKENS).map(|t| t.len() as u32)?,
            n_ctx_train: required_u32(g, ARCH, llm::CONTEXT_LENGTH)?,
            n_embd,
            n_layer,
            n_ff: max(|l| l.n_ff),
            n_head: max(|l| l.heads.n_head),
            n_head_kv: max(|l| l.heads.n_head_kv),
            head_dim: max(|l| l.heads.head_dim),
            n_rot: n_rot_full,
            rms_eps,
        };
        Ok(Hparams {
            image_bidirectional: image_bidirectional(g, n_embd)?,
            pad_token: pad_token(g, dims.n_vocab)?,
            dims,
            layers,
            n_embd_per_layer,
            sliding_window,
            rope_base,
            rope_freq_scale,
            rope_base_swa: optional_positive_f32(g, ARCH, llm::ROPE_FREQ_BASE_SWA)?.unwrap_or(DEFAULT_ROPE_BASE_SWA),
            n_expert,
            n_expert_used,
            n_ff_exp,
            final_softcap,
        })
    }
}

/// `embedding_length_per_layer_input`: required by llama.cpp's gemma4 loader, 0 for none.
fn required_per_layer_width(g: &GgufFile) -> Result<u32> {
    let key = arch_key(ARCH, llm::EMBEDDING_LENGTH_PER_LAYER_INPUT);
    let v = g.get_u32(&key)?;
    if v > 1 << 16 {
        return Err(Error::BadHparam { key, value: v.to_string(), why: "absurd per-layer embedding width" });
    }
    Ok(v)
}

/// The per-layer embeddings: the token-indexed table and the projection of the embedding.
#[derive(Debug, Clone)]
pub struct Ple {
    pub per_layer_token_embd: TensorId,
    pub per_layer_model_proj: TensorId,
    pub per_layer_proj_norm: TensorId,
}

/// A layer's use of the per-layer embeddings.
#[derive(Debug, Clone)]
pub struct PleLayer {
    pub inp_gate: TensorId,
    pub proj: TensorId,
    pub post_norm: TensorId,
}

/// Expert matrices: gate and up fused (`[n_embd, 2·n_ff_exp, n_expert]`) or separate.
#[derive(Debug, Clone)]
pub enum ExpertsIn {
    GateUp(TensorId),
    Split { gate: TensorId, up: TensorId },
}

/// A layer's mixture of experts.
#[derive(Debug, Clone)]
pub struct Moe {
    pub ffn_gate_inp: TensorId,
    pub ffn_gate_inp_scale: TensorId,
    pub pre_ffw_norm_2: TensorId,
    pub post_ffw_norm_1: TensorId,
    pub post_ffw_norm_2: TensorId,
    pub experts_in: ExpertsIn,
    pub ffn_down_exps: TensorId,
    pub ffn_down_exps_scale: Option<TensorId>,
}

/// One block's weights. `attn_k` is absent on shared layers; `attn_v` absent means V = K.
#[derive(Debug, Clone)]
pub struct Layer {
    pub attn_norm: TensorId,
    pub attn_q: TensorId,
    pub attn_k: Option<TensorId>,
    pub attn_v: Option<TensorId>,
    pub attn_q_norm: TensorId,
    pub attn_k_norm: Option<TensorId>,
    pub attn_output: TensorId,
    pub post_attention_norm: TensorId,
    /// Frequency factors of the full layers' rope (one tensor for all of them).
    pub rope_freqs: Option<TensorId>,
    pub ffn_norm: TensorId,
    pub ffn_gate: TensorId,
    pub ffn_up: TensorId,
    pub ffn_down: TensorId,
    pub post_ffw_norm: TensorId,
    pub moe: Option<Moe>,
    pub ple: Option<PleLayer>,
    pub layer_output_scale: Option<TensorId>,
}

/// All weights. Gemma ties the output projection to `token_embd` unless `output` exists.
#[derive(Debug, Clone)]
pub struct Weights {
    pub token_embd: TensorId,
    pub output_norm: TensorId,
    pub output: TensorId,
    pub ple: Option<Ple>,
    pub layers: Vec<Layer>,
}

impl Weights {
    /// Declares every weight with the shape the hyper-parameters imply.
    pub(crate) fn declare(d: &mut WeightDecl<'_>, hp: &Hparams) -> Result<Weights> {
        let dm = &hp.dims;
        let (e, n_vocab, p) = (dm.n_embd as u64, dm.n_vocab as u64, hp.n_embd_per_layer as u64);
        let (token_embd, output_norm, output) = d.embeddings(e, n_vocab)?;
        let ple = match p {
            0 => None,
            _ => {
                let pl = p * dm.n_layer as u64;
                Some(Ple {
                    per_layer_token_embd: d.gathered(&tensor::global(tensor::PER_LAYER_TOKEN_EMBD), &[pl, n_vocab])?,
                    per_layer_model_proj: d.tensor(&tensor::global(tensor::PER_LAYER_MODEL_PROJ), &[e, pl])?,
                    per_layer_proj_norm: d.tensor(&tensor::global(tensor::PER_LAYER_PROJ_NORM), &[p])?,
                })
            }
        };
        let mut rope_freqs = None;
        let mut layers = Vec::with_capacity(dm.n_layer as usize);
        for (il, lp) in hp.layers.iter().enumerate() {
            let (hd, h) = (lp.heads.head_dim as u64, lp.heads);
            let (q, kv, ff) = ((h.n_head as u64) * hd, (h.n_head_kv as u64) * hd, lp.n_ff as u64);
            let name = |t: &str| tensor::block(il, t);
            let own_kv = lp.shared_from.is_none();
            if !lp.local && rope_freqs.is_none() {
                rope_freqs = Some(d.tensor(&tensor::global(tensor::ROPE_FREQS), &[hd / 2])?);
            }
            let attn_k = match own_kv {
                true => Some(d.tensor(&name(tensor::ATTN_K), &[e, kv])?),
                false => None,
            };
            let moe = match d.gguf.tensor(&name(tensor::FFN_GATE_INP)) {
                None => None,
                Some(_) => Some(declare_moe(d, hp, il)?),
            };
            let ple = match p {
                0 => None,
                _ => Some(PleLayer {
                    inp_gate: d.tensor(&name(tensor::PER_LAYER_INP_GATE), &[e, p])?,
                    proj: d.tensor(&name(tensor::PER_LAYER_PROJ), &[p, e])?,
                    post_norm: d.tensor(&name(tensor::PER_LAYER_POST_NORM), &[e])?,
                }),
            };
            layers.push(Layer {
                attn_norm: d.tensor(&name(tensor::ATTN_NORM), &[e])?,
                attn_q: d.tensor(&name(tensor::ATTN_Q), &[e, q])?,
                attn_v: if own_kv { d.optional(&name(tensor::ATTN_V), &[e, kv])? } else { None },
                attn_k,
                attn_q_norm: d.tensor(&name(tensor::ATTN_Q_NORM), &[hd])?,
                attn_k_norm: if own_kv { Some(d.tensor(&name(tensor::ATTN_K_NORM), &[hd])?) } else { None },
                attn_output: d.tensor(&name(tensor::ATTN_OUTPUT), &[q, e])?,
                post_attention_norm: d.tensor(&name(tensor::POST_ATTENTION_NORM), &[e])?,
                rope_freqs: if lp.local { None } else { rope_freqs },
                ffn_norm: d.tensor(&name(tensor::FFN_NORM), &[e])?,
                ffn_gate: d.tensor(&name(tensor::FFN_GATE), &[e, ff])?,
                ffn_up: d.tensor(&name(tensor::FFN_UP), &[e, ff])?,
                ffn_down: d.tensor(&name(tensor::FFN_DOWN), &[ff, e])?,
                post_ffw_norm: d.tensor(&name(tensor::POST_FFW_NORM), &[e])?,
                moe,
                ple,
                layer_output_scale: d.optional(&name(tensor::LAYER_OUT_SCALE), &[1])?,
            });
        }
        Ok(Weights { token_embd, output_norm, output, ple, layers })
    }
}

/// Declares layer `il`'s router and experts (present when the file has its router).
fn declare_moe(d: &mut WeightDecl<'_>, hp: &Hparams, il: usize) -> Result<Moe> {
    let (e, n_exp, f) = (hp.dims.n_embd as u64, hp.n_expert as u64, hp.n_ff_exp[il] as u64);
    if hp.n_expert == 0 || hp.n_expert_used == 0 {
        let key = arch_key(ARCH, llm::EXPERT_USED_COUNT);
        return Err(Error::BadHparam { key, value: hp.n_expert_used.to_string(), why: "a layer has a router" });
    }
    let name = |t: &str| tensor::block(il, t);
    let experts_in = match d.gguf.tensor(&name(tensor::FFN_GATE_UP_EXPS)) {
        Some(_) => ExpertsIn::GateUp(d.tensor(&name(tensor::FFN_GATE_UP_EXPS), &[e, 2 * f, n_exp])?),
        None => ExpertsIn::Split {
            gate: d.tensor(&name(tensor::FFN_GATE_EXPS), &[e, f, n_exp])?,
            up: d.tensor(&name(tensor::FFN_UP_EXPS), &[e, f, n_exp])?,
        },
    };
    Ok(Moe {
        ffn_gate_inp: d.tensor(&name(tensor::FFN_GATE_INP), &[e, n_exp])?,
        ffn_gate_inp_scale: d.tensor(&tensor::block_scale(il, tensor::FFN_GATE_INP), &[e])?,
        pre_ffw_norm_2: d.tensor(&name(tensor::FFN_PRE_NORM_2), &[e])?,
        post_ffw_norm_1: d.tensor(&name(tensor::FFN_POST_NORM_1), &[e])?,
        post_ffw_norm_2: d.tensor(&name(tensor::FFN_POST_NORM_2), &[e])?,
        experts_in,
        ffn_down_exps: d.tensor(&name(tensor::FFN_DOWN_EXPS), &[f, e, n_exp])?,
        ffn_down_exps_scale: d.optional(&tensor::block_scale(il, tensor::FFN_DOWN_EXPS), &[n_exp])?,
    })
}

/// One forward pass of Gemma 4 over a batch.
pub(crate) struct Forward<'s, 'm> {
    pub pass: Pass<'s, 'm>,
    pub w: &'m Weights,
    pub hp: &'m Hparams,
    /// Embeddings fed instead of token ids (an image's): `[n_embd, n_tokens]`, used as they are.
    pub embd: Option<Tensor<'s>>,
}

impl<'s> Forward<'s, '_> {
    /// The whole forward pass: token ids (or embeddings) → logits `[n_vocab, n_out]`.
    pub fn build(&self, gf: &mut Graph<'s>) -> Result<Tensor<'s>> {
        let (hp, d, p) = (self.hp, &self.hp.dims, &self.pass);
        // x = embd[tokens] · √n_embd, or the given embeddings unscaled: [n_embd, n_tokens]
        let mut x = match self.embd {
            Some(e) => e,
            None => p.embed(self.w.token_embd, d.n_embd)?,
        };
        // per-layer inputs: [n_embd_per_layer, n_tokens, n_layer]
        let ple = self.w.ple.as_ref().map(|w| self.per_layer_inputs(w, x)).transpose()?;
        // The layers that share an earlier layer's cache, to the last, need only the rows
        // whose logits are read (arch::Pass::read_rows_inputs).
        let tail = super::first_cacheless_tail(hp.layers.iter().map(|l| l.shared_from.is_some()));
        let read = match tail {
            Some(_) => p.read_rows_inputs()?,
            None => None,
        };
        let n_tokens = x.ne()[1];
        for il in 0..d.n_layer as usize {
            let narrow = read.is_some() && tail.is_some_and(|t| il >= t);
            if narrow && tail == Some(il) {
                x = p.read_rows(x)?;
            }
            // this layer's slice of the per-layer inputs: [P, n_tokens]
            let slice = match ple {
                Some(t) => {
                    let row = t.nb()[1];
                    let s = p.ctx.view(t, &[t.ne()[0], n_tokens], [row, 0], il * row * n_tokens as usize)?;
                    Some(if narrow { p.read_rows(s)? } else { s })
                }
                None => None,
            };
            x = match (&read, narrow) {
                (Some(inp), true) => self.layer(&p.with_inputs(inp), gf, x, slice, il)?,
                _ => self.layer(p, gf, x, slice, il)?,
            };
        }
        // llama.cpp runs the last layer on every row and keeps the rows read after the
        // output norm (gemma4.cpp with `embeddings_nextn_masked` off, its default).
        let x = p.norm(x, self.w.output_norm, d.rms_eps, "result_norm", 0)?;
        let x = match read {
            Some(_) => x,
            None => p.read_rows(x)?,
        };
        let logits = p.mm(self.w.output, x)?;
        p.final_softcap(logits, hp.final_softcap)?.set_name("result_output")
    }

    /// `(norm(W·x/√n_embd) + table[tokens]·√P) / √2`, one slice of width P per layer.
    fn per_layer_inputs(&self, w: &Ple, x: Tensor<'s>) -> Result<Tensor<'s>> {
        let (p, d) = (&self.pass, &self.hp.dims);
        let (ctx, n_tokens) = (p.ctx, x.ne()[1]);
        let (pw, nl) = (self.hp.n_embd_per_layer as i64, d.n_layer as i64);
        // table rows of the batch's tokens: [P, n_layer, n_tokens]; for embeddings the padding
        // token's row, [P, n_layer, 1], broadcast over the tokens below
        let table = p.wctx.tensor(w.per_layer_token_embd)?;
        let rows = match self.embd {
            None => ctx.reshape(ctx.get_rows(table, p.inp.tokens)?, &[pw, nl, n_tokens])?,
            Some(_) => {
                let pad = ctx.view(table, &[pw * nl], [0, 0], self.hp.pad_token as usize * table.nb()[1])?;
                ctx.reshape(ctx.to_f32(pad)?, &[pw, nl, 1])?
            }
        };
        let rows = ctx.scale(rows, (pw as f32).sqrt())?;
        // the embedding's projection: [P, n_layer, n_tokens]
        let proj = ctx.scale(p.mm(w.per_layer_model_proj, x)?, 1.0 / (d.n_embd as f32).sqrt())?;
        let proj = ctx.reshape(proj, &[pw, nl, n_tokens])?;
        let proj = p.norm(proj, w.per_layer_proj_norm, d.rms_eps, "per_layer_proj", 0)?;
        let inp = ctx.scale(ctx.add(proj, rows)?, std::f32::consts::FRAC_1_SQRT_2)?.set_name("inp_per_layer")?;
        // → [P, n_tokens, n_layer], so each layer's slice is one contiguous block
        ctx.cont(ctx.permute(inp, [0, 2, 1, 3])?)
    }

    /// Layer `il` over the rows of `x` (all the batch's, or those `p` narrows to), with its
    /// slice of the per-layer inputs for the same rows.
    fn layer(
        &self,
        p: &Pass<'s, '_>,
        gf: &mut Graph<'s>,
        x: Tensor<'s>,
        ple: Option<Tensor<'s>>,
        il: usize,
    ) -> Result<Tensor<'s>> {
        let (hp, d, l, lp) = (self.hp, &self.hp.dims, &self.w.layers[il], &self.hp.layers[il]);
        let (ctx, n_tokens, eps) = (p.ctx, x.ne()[1], d.rms_eps);
        let (hd, nh, nkv) = (lp.heads.head_dim as i64, lp.heads.n_head as i64, lp.heads.n_head_kv as i64);
        let h = p.norm(x, l.attn_norm, eps, "attn_norm", il)?;
        let (base, scale) = if lp.local { (hp.rope_base_swa, 1.0) } else { (hp.rope_base, hp.rope_freq_scale) };
        let rope = Rope {
            n_dims: lp.n_rot as i32,
            neox: true,
            freq_base: base,
            freq_scale: scale,
            n_ctx_orig: d.n_ctx_train as i32,
        };
        let factors = l.rope_freqs.map(|t| p.wctx.tensor(t)).transpose()?;
        // q: [head_dim, n_head, n_tokens], normed and rotated; no query scaling
        let q = ctx.reshape(p.mm(l.attn_q, h)?, &[hd, nh, n_tokens])?;
        let q = p.norm(q, l.attn_q_norm, eps, "Qcur_normed", il)?;
        let q = ctx.rope_ext(q, p.inp.pos, factors, rope)?.set_name(&format!("Qcur_pos-{il}"))?;
        // k, v: [head_dim, n_head_kv, n_tokens]; V = K without attn_v; V gets a weightless norm
        let kv = match (l.attn_k, l.attn_k_norm) {
            (Some(wk), Some(k_norm)) => {
                let k = p.mm(wk, h)?;
                let v = match l.attn_v {
                    Some(wv) => p.mm(wv, h)?,
                    None => k,
                };
                let k = p.norm(ctx.reshape(k, &[hd, nkv, n_tokens])?, k_norm, eps, "Kcur_normed", il)?;
                let v = ctx.rms_norm(ctx.reshape(v, &[hd, nkv, n_tokens])?, eps)?;
                let k = ctx.rope_ext(k, p.inp.pos, factors, rope)?.set_name(&format!("Kcur_pos-{il}"))?;
                Some((k, ctx.reshape(v, &[hd * nkv, n_tokens])?))
            }
            _ => None,
        };
        let attn = p.attend_heads(gf, q, kv, lp.heads, None, il)?;
        let cur = p.norm(p.mm(l.attn_output, attn)?, l.post_attention_norm, eps, "attn_post_norm", il)?;
        let attn_out = ctx.add(cur, x)?;

        // FFN: the dense GeGLU, beside the experts on router layers
        let cur = match &l.moe {
            None => self.ffn(p.norm(attn_out, l.ffn_norm, eps, "ffn_norm", il)?, l)?,
            Some(m) => {
                let mlp = self.ffn(p.norm(attn_out, l.ffn_norm, eps, "ffn_norm_1", il)?, l)?;
                let mlp = p.norm(mlp, m.post_ffw_norm_1, eps, "ffn_mlp", il)?;
                let moe = self.moe(attn_out, m, il)?;
                let moe = p.norm(moe, m.post_ffw_norm_2, eps, "ffn_moe", il)?;
                ctx.add(mlp, moe)?
            }
        };
        let cur = p.norm(cur, l.post_ffw_norm, eps, "ffn_post_norm", il)?;
        let mut cur = ctx.add(cur, attn_out)?;

        // per-layer embedding: x += post_norm(proj(gelu(inp_gate·x) ⊙ slice_il))
        if let (Some(w), Some(slice)) = (&l.ple, ple) {
            let g = ctx.mul(ctx.gelu(p.mm(w.inp_gate, cur)?)?, slice)?;
            let g = p.norm(p.mm(w.proj, g)?, w.post_norm, eps, "per_layer_embd_out", il)?;
            cur = ctx.add(cur, g)?;
        }
        if let Some(s) = l.layer_output_scale {
            cur = ctx.mul(cur, p.wctx.tensor(s)?)?;
        }
        cur.set_name(&format!("l_out-{il}"))
    }

    /// down(gelu(gate·h) ⊙ up·h)
    fn ffn(&self, h: Tensor<'s>, l: &Layer) -> Result<Tensor<'s>> {
        let p = &self.pass;
        p.mm(l.ffn_down, p.geglu(p.mm(l.ffn_gate, h)?, p.mm(l.ffn_up, h)?)?)
    }

    /// The experts: a router over `rms_norm(x)/√n_embd ⊙ scale` picks the top k by softmax,
    /// weights renormalised to sum 1; each expert's GeGLU output times its scale.
    fn moe(&self, x: Tensor<'s>, m: &Moe, il: usize) -> Result<Tensor<'s>> {
        let (hp, p) = (self.hp, &self.pass);
        let (ctx, n_tokens, eps) = (p.ctx, x.ne()[1], hp.dims.rms_eps);
        let (n_embd, n_exp, k) = (hp.dims.n_embd as i64, hp.n_expert as i64, hp.n_expert_used as i64);
        let h = p.norm(x, m.pre_ffw_norm_2, eps, "ffn_norm_2", il)?;
        // router: probs [n_expert, n_tokens], the top k of each token [k, n_tokens]
        let r = ctx.scale(ctx.rms_norm(x, eps)?, 1.0 / (n_embd as f32).sqrt())?;
        let r = ctx.mul(r, p.wctx.tensor(m.ffn_gate_inp_scale)?)?;
        let probs = ctx.soft_max_ext(p.mm(m.ffn_gate_inp, r)?, None, 1.0)?;
        let selected = ctx.argsort_top_k(probs, k as i32)?.set_name(&format!("ffn_moe_topk-{il}"))?;
        let w = ctx.get_rows(ctx.reshape(probs, &[1, n_exp, n_tokens])?, selected)?;
        let w = ctx.reshape(w, &[k, n_tokens])?;
        let sum = ctx.clamp(ctx.sum_rows(w)?, MIN_WEIGHT_SUM, f32::INFINITY)?;
        let w = ctx.reshape(ctx.div(w, sum)?, &[1, k, n_tokens])?;
        // experts: [n_ff_exp, k, n_tokens] → [n_embd, k, n_tokens]
        let h = ctx.reshape(h, &[n_embd, 1, n_tokens])?;
        let (gate, up) = match m.experts_in {
            ExpertsIn::GateUp(gu) => {
                let gu = ctx.mul_mat_id(p.wctx.tensor(gu)?, h, selected)?;
                let (f, nb) = (gu.ne()[0] / 2, gu.nb());
                let gate = ctx.view(gu, &[f, k, n_tokens], [nb[1], nb[2]], 0)?;
                (gate, ctx.view(gu, &[f, k, n_tokens], [nb[1], nb[2]], f as usize * nb[0])?)
            }
            ExpertsIn::Split { gate, up } => {
                (ctx.mul_mat_id(p.wctx.tensor(gate)?, h, selected)?, ctx.mul_mat_id(p.wctx.tensor(up)?, h, selected)?)
            }
        };
        let mut out = ctx.mul_mat_id(p.wctx.tensor(m.ffn_down_exps)?, ctx.geglu_split(gate, up)?, selected)?;
        if let Some(s) = m.ffn_down_exps_scale {
            let s = ctx.reshape(p.wctx.tensor(s)?, &[1, n_exp, 1])?;
            let s = ctx.get_rows(ctx.repeat_4d(s, [1, n_exp, n_tokens, 1])?, selected)?;
            out = ctx.mul(out, s)?;
        }
        let out = ctx.mul(out, w)?;
        // sum over the k chosen experts: [n_embd, n_tokens]
        let nb = out.nb();
        let mut sum = ctx.view(out, &[n_embd, n_tokens], [nb[2], 0], 0)?;
        for i in 1..k as usize {
            sum = ctx.add(sum, ctx.view(out, &[n_embd, n_tokens], [nb[2], 0], i * nb[1])?)?;
        }
        if k == 1 {
            sum = ctx.cont(sum)?;
        }
        sum.set_name(&format!("ffn_moe_out-{il}"))
    }
}
