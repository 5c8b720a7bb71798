//! Gemma 3n (text): hyper-parameters from GGUF, weights, and the forward graph.
//!
//! Template: llama.cpp's `src/models/gemma3n.cpp` (llama-cpp-sys-2 0.1.161), op for op, so
//! the logits are bit-identical where the same kernels run; Hugging Face's
//! `modeling_gemma3n.py` (transformers 5.24) for the semantics. What 3n adds to Gemma 3,
//! each settled at load time:
//! - **AltUp**: the residual is `n_altup` streams. Before each layer a router over the
//!   active stream mixes them (predict); the layer runs on the active stream's prediction;
//!   after it the innovation (output − prediction) is added to every stream with routed
//!   weights (correct). The extra streams start as projections of the embedding and end as
//!   un-projections averaged with the first, each rescaled to the first's magnitude;
//! - **LAuReL**: a low-rank residual `h + norm(R·L·h)` beside attention;
//! - **per-layer embeddings** (PLE) as in Gemma 4: the token-indexed table only gathered
//!   (it stays in the mapped file), mixed into the streams after each layer;
//! - **activation sparsity**: on layers with a multiplier `m`, the FFN gate keeps only
//!   `relu(g − mean(g) − m·std(g))` (a Gaussian top-k);
//! - shared KV for the last layers, a weightless RMS norm on V, no query scaling, the final
//!   soft-cap.
//!
//! libllama reads none of 3n's own keys; it hard-codes 4 streams, active stream 0, PLE width
//! 256, KV on layers < 20, sparsity 1.6448533 on layers < 10, soft-cap 30 (gemma3n.cpp,
//! models.h, llama-hparams.h). We read the keys the converters write and fall back to those
//! values when a key is absent. Two choices differ from transformers by design, to stay
//! bit-identical with libllama: the top-k's standard deviation divides by n − 1 (llama.cpp's
//! `gaussian_topk`; transformers' `torch.std(unbiased=False)` divides by n), and the
//! magnitudes are L2 norms without transformers' epsilon floor (the ratio is the same).
//!
//! ggml's dim 0 is the row length and `mul_mat(a, b) = b·aᵀ`; shapes below are in ggml order.
use super::names::{arch_key, llm, tensor};
use super::WeightDecl;
use super::{optional_positive_f32, optional_u32, required_u32, rope_base_and_scale, swa_layers, Dims, Heads, Pass};
use crate::error::{Error, Result};
use crate::ggml::{Graph, Rope, Tensor, TensorId};
use crate::gguf::{GgufArray, GgufFile, GgufValue};

const ARCH: &str = "gemma3n";
/// Defaults for keys libllama does not read (llama-hparams.h: `n_altup = 4`,
/// `i_altup_act = 0`, `n_embd_altup = 256`; gemma3n.cpp `n_layer_kv_from_start = 20`,
/// models.h `n_layer_sparsity = 10`, `f_sparsity_std_mul = 1.6448533535003662f`,
/// llama-hparams.h `f_final_logit_softcapping = 30.0f`; rope base swa 10 000).
const DEFAULT_N_ALTUP: u32 = 4;
const DEFAULT_ALTUP_ACTIVE: u32 = 0;
const DEFAULT_PLE_WIDTH: u32 = 256;
const DEFAULT_KV_LAYERS: u32 = 20;
const DEFAULT_SPARSE_LAYERS: usize = 10;
const DEFAULT_SPARSITY_STD_MUL: f32 = 1.644_853_4;
const DEFAULT_FINAL_SOFTCAP: f32 = 30.0;
const DEFAULT_ROPE_BASE_SWA: f32 = 10_000.0;
/// Sliding-window period when the file has no pattern (gemma3n.cpp `load_swa_pattern(ml, 5)`).
const DEFAULT_SWA_PERIOD: u32 = 5;
/// More streams than this is not a Gemma 3n (the published models have 4).
const MAX_ALTUP: u32 = 16;

/// Gemma 3n hyper-parameters.
#[derive(Debug, Clone)]
pub struct Hparams {
    /// The largest FFN width in `n_ff`, for memory estimates.
    pub dims: Dims,
    /// FFN width per layer.
    pub n_ff: Vec<u32>,
    pub is_local: Vec<bool>,
    /// The earlier layer whose KV cache a layer reads; `None`: its own.
    pub shared_from: Vec<Option<usize>>,
    pub sliding_window: u32,
    pub rope_base: f32,
    pub rope_freq_scale: f32,
    pub rope_base_swa: f32,
    /// AltUp streams, and the one the layers run on.
    pub n_altup: u32,
    pub altup_active: u32,
    pub n_embd_per_layer: u32,
    /// LAuReL's rank, from the file's `blk.0.laurel_l` (libllama requires 64).
    pub laurel_rank: u32,
    /// The Gaussian top-k's standard-deviation multiplier per layer; `None`: no sparsity.
    pub sparsity: Vec<Option<f32>>,
    pub final_softcap: Option<f32>,
}

/// `{arch}.feed_forward_length`: one u32, or one per layer (llama.cpp's `get_key_or_arr`).
fn ff_lengths(g: &GgufFile, n_layer: u32) -> Result<Vec<u32>> {
    let key = arch_key(ARCH, llm::FEED_FORWARD_LENGTH);
    let bad = |value: String, why| Error::BadHparam { key: key.clone(), value, why };
    let v = match g.get(&key) {
        Some(GgufValue::Array(GgufArray::U32(a))) => a.clone(),
        Some(GgufValue::Array(GgufArray::I32(a))) => a
            .iter()
            .map(|&x| u32::try_from(x).map_err(|_| bad(x.to_string(), "must not be negative")))
            .collect::<Result<_>>()?,
        _ => vec![required_u32(g, ARCH, llm::FEED_FORWARD_LENGTH)?; n_layer as usize],
    };
    if v.len() != n_layer as usize {
        return Err(bad(format!("{} entries", v.len()), "needs one entry per layer"));
    }
    match v.iter().find(|&&x| x == 0 || x > 1 << 24) {
        Some(x) => Err(bad(x.to_string(), "out of range for this model")),
        None => Ok(v),
    }
}

/// `activation_sparsity_scale`: one f32 per layer, finite (sparse) or −∞ (dense), as the
/// converters write the normal quantile of the sparsity target (0 → −∞). Absent: libllama's
/// multiplier on its first 10 layers.
fn sparsity(g: &GgufFile, n_layer: u32) -> Result<Vec<Option<f32>>> {
    let key = arch_key(ARCH, llm::ACTIVATION_SPARSITY_SCALE);
    if g.get(&key).is_none() {
        return Ok((0..n_layer as usize)
            .map(|il| (il < DEFAULT_SPARSE_LAYERS).then_some(DEFAULT_SPARSITY_STD_MUL))
            .collect());
    }
    let v = g.get_f32_array(&key)?;
    let bad = |value: String, why| Error::BadHparam { key: key.clone(), value, why };
    if v.len() != n_layer as usize {
        return Err(bad(format!("{} entries", v.len()), "needs one entry per layer"));
    }
    v.iter()
        .map(|&m| {
            if m.is_finite() {
                Ok(Some(m))
            } else if m == f32::NEG_INFINITY {
                Ok(None)
            } else {
                Err(bad(m.to_string(), "must be finite, or −∞ for a dense layer"))
            }
        })
        .collect()
}

impl Hparams {
    pub fn from_gguf(g: &GgufFile) -> Result<Hparams> {
        let bad = |suffix: &str, value: String, why| Error::BadHparam { key: arch_key(ARCH, suffix), value, why };
        let n_layer = required_u32(g, ARCH, llm::BLOCK_COUNT)?;
        if n_layer > super::MAX_LAYERS {
            return Err(bad(llm::BLOCK_COUNT, n_layer.to_string(), "absurd layer count"));
        }
        let n_embd = required_u32(g, ARCH, llm::EMBEDDING_LENGTH)?;
        let n_head = required_u32(g, ARCH, llm::HEAD_COUNT)?;
        let n_head_kv = optional_u32(g, ARCH, llm::HEAD_COUNT_KV, n_head)?;
        if n_head_kv == 0 || n_head % n_head_kv != 0 || n_head > 1 << 16 {
            return Err(bad(llm::HEAD_COUNT_KV, n_head_kv.to_string(), "must divide head_count"));
        }
        let head_dim = optional_u32(g, ARCH, llm::KEY_LENGTH, n_embd / n_head)?;
        let head_dim_v = optional_u32(g, ARCH, llm::VALUE_LENGTH, head_dim)?;
        if head_dim == 0 || head_dim % 2 != 0 || head_dim > 1 << 16 || head_dim_v != head_dim {
            let why = "key and value length must be equal, even and in 2..=65536";
            return Err(bad(llm::KEY_LENGTH, format!("{head_dim}/{head_dim_v}"), why));
        }
        let n_rot = optional_u32(g, ARCH, llm::ROPE_DIMENSION_COUNT, head_dim)?;
        if n_rot == 0 || n_rot % 2 != 0 || n_rot > head_dim {
            return Err(bad(
                llm::ROPE_DIMENSION_COUNT,
                n_rot.to_string(),
                "must be even, > 0 and at most the head size",
            ));
        }
        let rms_eps = g.get_f32(&arch_key(ARCH, llm::RMS_EPS))?;
        if !(rms_eps.is_finite() && rms_eps > 0.0) {
            return Err(bad(llm::RMS_EPS, rms_eps.to_string(), "must be finite and > 0"));
        }
        let n_ff = ff_lengths(g, n_layer)?;
        let is_local = swa_layers(g, ARCH, n_layer, DEFAULT_SWA_PERIOD)?;
        let default_shared = n_layer.saturating_sub(DEFAULT_KV_LAYERS);
        let n_shared = optional_u32(g, ARCH, llm::SHARED_KV_LAYERS, default_shared)?;
        if n_shared >= n_layer {
            return Err(bad(llm::SHARED_KV_LAYERS, n_shared.to_string(), "must be fewer than the layers"));
        }
        // A shared layer reads the last earlier layer of its kind with a cache (transformers'
        // `kv_shared_layer_index`; libllama's fixed n_kv − 2 (sliding) / n_kv − 1 (full) is
        // the same layer in the published models, where those two are sliding and full).
        let n_kv_layers = (n_layer - n_shared) as usize;
        let shared_from = (0..n_layer as usize)
            .map(|il| match il >= n_kv_layers {
                false => Ok(None),
                true => (0..n_kv_layers).rev().find(|&j| is_local[j] == is_local[il]).map(Some).ok_or_else(|| {
                    bad(llm::SHARED_KV_LAYERS, n_shared.to_string(), "a shared layer has no earlier layer of its kind")
                }),
            })
            .collect::<Result<Vec<_>>>()?;
        let n_altup = optional_u32(g, ARCH, llm::ALTUP_NUM_INPUTS, DEFAULT_N_ALTUP)?;
        if !(2..=MAX_ALTUP).contains(&n_altup) {
            return Err(bad(llm::ALTUP_NUM_INPUTS, n_altup.to_string(), "must be 2 to 16 streams"));
        }
        let altup_active = optional_u32(g, ARCH, llm::ALTUP_ACTIVE_IDX, DEFAULT_ALTUP_ACTIVE)?;
        if altup_active >= n_altup {
            return Err(bad(llm::ALTUP_ACTIVE_IDX, altup_active.to_string(), "must be below altup.num_inputs"));
        }
        let n_embd_per_layer = optional_u32(g, ARCH, llm::EMBEDDING_LENGTH_PER_LAYER_INPUT, DEFAULT_PLE_WIDTH)?;
        if n_embd_per_layer == 0 || n_embd_per_layer > 1 << 16 {
            let why = "must be 1 to 65536 (Gemma 3n always has per-layer embeddings)";
            return Err(bad(llm::EMBEDDING_LENGTH_PER_LAYER_INPUT, n_embd_per_layer.to_string(), why));
        }
        let laurel_l = tensor::block(0, tensor::LAUREL_L);
        let laurel_rank = match g.tensor(&laurel_l) {
            Some(t) if t.dims.len() == 2 && (1..=1 << 16).contains(&t.dims[1]) => t.dims[1] as u32,
            Some(t) => {
                return Err(Error::TensorShape {
                    name: laurel_l,
                    expected: vec![n_embd as u64, 64],
                    actual: t.dims.clone(),
                })
            }
            None => return Err(Error::MissingTensor { name: laurel_l }),
        };
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
        let (rope_base, rope_freq_scale) = rope_base_and_scale(g, ARCH)?;
        let dims = Dims {
            n_vocab: g.get_str_array(crate::names::tokenizer::TOKENS).map(|t| t.len() as u32)?,
            n_ctx_train: required_u32(g, ARCH, llm::CONTEXT_LENGTH)?,
            n_embd,
            n_layer,
            n_ff: n_ff.iter().copied().max().unwrap_or(0),
            n_head,
            n_head_kv,
            head_dim,
            n_rot,
            rms_eps,
        };
        Ok(Hparams {
            dims,
            n_ff,
            is_local,
            shared_from,
            sliding_window: required_u32(g, ARCH, llm::SLIDING_WINDOW)?,
            rope_base,
            rope_freq_scale,
            rope_base_swa: optional_positive_f32(g, ARCH, llm::ROPE_FREQ_BASE_SWA)?.unwrap_or(DEFAULT_ROPE_BASE_SWA),
            n_altup,
            altup_active,
            n_embd_per_layer,
            laurel_rank,
            sparsity: sparsity(g, n_layer)?,
            final_softcap,
        })
    }
}

/// One block's weights. K and V (and the K norm) only on layers with their own cache.
#[derive(Debug, Clone)]
pub struct Layer {
    pub attn_norm: TensorId,
    pub attn_q: TensorId,
    pub attn_kv: Option<(TensorId, TensorId, TensorId)>,
    pub attn_q_norm: TensorId,
    pub attn_output: TensorId,
    pub post_attention_norm: TensorId,
    pub ffn_norm: TensorId,
    pub ffn_gate: TensorId,
    pub ffn_up: TensorId,
    pub ffn_down: TensorId,
    pub post_ffw_norm: TensorId,
    pub inp_gate: TensorId,
    pub proj: TensorId,
    pub post_norm: TensorId,
    pub altup_correct_coef: TensorId,
    pub altup_correct_scale: TensorId,
    pub altup_predict_coef: TensorId,
    pub altup_router: TensorId,
    pub altup_router_norm: TensorId,
    pub laurel_l: TensorId,
    pub laurel_r: TensorId,
    pub laurel_post_norm: TensorId,
}

/// All weights. The output projection is `token_embd` unless the file has `output`.
#[derive(Debug, Clone)]
pub struct Weights {
    pub token_embd: TensorId,
    pub output_norm: TensorId,
    pub output: TensorId,
    pub altup_proj: TensorId,
    pub altup_unembd_proj: TensorId,
    pub per_layer_token_embd: TensorId,
    pub per_layer_model_proj: TensorId,
    pub per_layer_proj_norm: TensorId,
    pub layers: Vec<Layer>,
}

impl Weights {
    /// Declares every weight with the shape the hyper-parameters imply.
    pub(crate) fn declare(d: &mut WeightDecl<'_>, hp: &Hparams) -> Result<Weights> {
        let dm = &hp.dims;
        let (e, n_vocab, p) = (dm.n_embd as u64, dm.n_vocab as u64, hp.n_embd_per_layer as u64);
        let (na, r, pl) = (hp.n_altup as u64, hp.laurel_rank as u64, p * dm.n_layer as u64);
        let (hd, q, kv) = (dm.head_dim as u64, (dm.n_head * dm.head_dim) as u64, (dm.n_head_kv * dm.head_dim) as u64);
        let (token_embd, output_norm, output) = d.embeddings(e, n_vocab)?;
        let global = |n: &str| tensor::global(n);
        let mut layers = Vec::with_capacity(dm.n_layer as usize);
        for il in 0..dm.n_layer as usize {
            let name = |t: &str| tensor::block(il, t);
            let ff = hp.n_ff[il] as u64;
            let attn_kv = match hp.shared_from[il] {
                Some(_) => None,
                None => Some((
                    d.tensor(&name(tensor::ATTN_K), &[e, kv])?,
                    d.tensor(&name(tensor::ATTN_V), &[e, kv])?,
                    d.tensor(&name(tensor::ATTN_K_NORM), &[hd])?,
                )),
            };
            layers.push(Layer {
                attn_norm: d.tensor(&name(tensor::ATTN_NORM), &[e])?,
                attn_q: d.tensor(&name(tensor::ATTN_Q), &[e, q])?,
                attn_kv,
                attn_q_norm: d.tensor(&name(tensor::ATTN_Q_NORM), &[hd])?,
                attn_output: d.tensor(&name(tensor::ATTN_OUTPUT), &[q, e])?,
                post_attention_norm: d.tensor(&name(tensor::POST_ATTENTION_NORM), &[e])?,
                ffn_norm: d.tensor(&name(tensor::FFN_NORM), &[e])?,
                ffn_gate: d.tensor(&name(tensor::FFN_GATE), &[e, ff])?,
                ffn_up: d.tensor(&name(tensor::FFN_UP), &[e, ff])?,
                ffn_down: d.tensor(&name(tensor::FFN_DOWN), &[ff, e])?,
                post_ffw_norm: d.tensor(&name(tensor::POST_FFW_NORM), &[e])?,
                inp_gate: d.tensor(&name(tensor::PER_LAYER_INP_GATE), &[e, p])?,
                proj: d.tensor(&name(tensor::PER_LAYER_PROJ), &[p, e])?,
                post_norm: d.tensor(&name(tensor::PER_LAYER_POST_NORM), &[e])?,
                altup_correct_coef: d.tensor(&name(tensor::ALTUP_CORRECT_COEF), &[na, na])?,
                altup_correct_scale: d.tensor(&name(tensor::ALTUP_CORRECT_SCALE), &[e])?,
                altup_predict_coef: d.tensor(&name(tensor::ALTUP_PREDICT_COEF), &[na, na * na])?,
                altup_router: d.tensor(&name(tensor::ALTUP_ROUTER), &[e, na])?,
                altup_router_norm: d.tensor(&name(tensor::ALTUP_ROUTER_NORM), &[e])?,
                laurel_l: d.tensor(&name(tensor::LAUREL_L), &[e, r])?,
                laurel_r: d.tensor(&name(tensor::LAUREL_R), &[r, e])?,
                laurel_post_norm: d.tensor(&name(tensor::LAUREL_POST_NORM), &[e])?,
            });
        }
        Ok(Weights {
            token_embd,
            output_norm,
            output,
            altup_proj: d.tensor(&global(tensor::ALTUP_PROJ), &[e, e, na - 1])?,
            altup_unembd_proj: d.tensor(&global(tensor::ALTUP_UNEMBD_PROJ), &[e, e, na - 1])?,
            per_layer_token_embd: d.gathered(&global(tensor::PER_LAYER_TOKEN_EMBD), &[pl, n_vocab])?,
            per_layer_model_proj: d.tensor(&global(tensor::PER_LAYER_MODEL_PROJ), &[e, pl])?,
            per_layer_proj_norm: d.tensor(&global(tensor::PER_LAYER_PROJ_NORM), &[p])?,
            layers,
        })
    }
}

/// One forward pass of Gemma 3n over a batch.
pub(crate) struct Forward<'s, 'm> {
    pub pass: Pass<'s, 'm>,
    pub w: &'m Weights,
    pub hp: &'m Hparams,
}

impl<'s> Forward<'s, '_> {
    /// The whole forward pass: token ids → logits `[n_vocab, n_out]`.
    pub fn build(&self, gf: &mut Graph<'s>) -> Result<Tensor<'s>> {
        let (hp, d, p) = (self.hp, &self.hp.dims, &self.pass);
        let ctx = p.ctx;
        // x = embd[tokens] · √n_embd: [n_embd, n_tokens]
        let x = p.embed(self.w.token_embd, d.n_embd)?;
        let n_tokens = x.ne()[1];
        // per-layer inputs: [P, n_tokens, n_layer]
        let ple = self.per_layer_inputs(x)?;
        // the streams: x, and x projected n_altup − 1 ways at x's magnitude: [n_embd, n_tokens, n_altup]
        let extra = ctx.repeat_4d(x, [d.n_embd as i64, n_tokens, hp.n_altup as i64 - 1, 1])?;
        let extra = self.rescaled(p.mm(self.w.altup_proj, extra)?, magnitude(p, x)?)?;
        let mut xs = ctx.concat(x, extra, 2)?.set_name("inp_stacked")?;
        // The layers that share an earlier layer's cache, to the last, need only the rows
        // whose logits are read (arch::Pass::read_rows_inputs).
        let tail = super::first_cacheless_tail(hp.shared_from.iter().map(Option::is_some));
        let read = match tail {
            Some(_) => p.read_rows_inputs()?,
            None => None,
        };
        for il in 0..d.n_layer as usize {
            let narrow = read.is_some() && tail.is_some_and(|t| il >= t);
            if narrow && tail == Some(il) {
                // each stream's rows: [n_embd, n_out, n_altup]
                let mut rows = p.read_rows(self.stream(xs, 0)?)?;
                for i in 1..hp.n_altup as usize {
                    rows = ctx.concat(rows, p.read_rows(self.stream(xs, i)?)?, 2)?;
                }
                xs = rows;
            }
            let slice = self.stream(ple, il)?;
            xs = match (&read, narrow) {
                (Some(inp), true) => self.layer(&p.with_inputs(inp), gf, xs, p.read_rows(slice)?, il)?,
                _ => self.layer(p, gf, xs, slice, il)?,
            };
        }
        // back to one stream: the mean of stream 0 and the others un-projected at stream 0's
        // magnitude (transformers' `Gemma3nTextModel.forward`; libllama's active stream is
        // always 0)
        let target = magnitude(p, self.stream(xs, 0)?)?;
        let rest = self.streams_after_first(xs)?;
        let rest = self.rescaled(p.mm(self.w.altup_unembd_proj, rest)?, target)?.set_name("altup_unembd")?;
        let mut x = self.stream(xs, 0)?;
        for i in 0..hp.n_altup as usize - 1 {
            x = ctx.add(x, self.stream(rest, i)?)?;
        }
        let x = ctx.scale(x, 1.0 / hp.n_altup as f32)?.set_name("unembd_merged")?;
        let x = match read {
            Some(_) => x,
            None => p.read_rows(x)?,
        };
        let x = p.norm(x, self.w.output_norm, d.rms_eps, "result_norm", 0)?;
        let logits = p.mm(self.w.output, x)?;
        p.final_softcap(logits, hp.final_softcap)?.set_name("result_output")
    }

    /// Stream `i` of `[n_embd, n_tokens, n]`: a `[n_embd, n_tokens]` view.
    fn stream(&self, xs: Tensor<'s>, i: usize) -> Result<Tensor<'s>> {
        let (ne, nb) = (xs.ne(), xs.nb());
        self.pass.ctx.view(xs, &ne[..2], [nb[1], 0], i * nb[2])
    }

    /// Streams 1.. of `[n_embd, n_tokens, n]`: a `[n_embd, n_tokens, n − 1]` view.
    fn streams_after_first(&self, xs: Tensor<'s>) -> Result<Tensor<'s>> {
        let (ne, nb) = (xs.ne(), xs.nb());
        self.pass.ctx.view(xs, &[ne[0], ne[1], ne[2] - 1], [nb[1], nb[2]], nb[2])
    }

    /// `s · target / |s|` for each column of each stream of `s`.
    fn rescaled(&self, s: Tensor<'s>, target: Tensor<'s>) -> Result<Tensor<'s>> {
        let ctx = self.pass.ctx;
        let m = magnitude(&self.pass, s)?;
        ctx.div(ctx.mul(s, target)?, m)
    }

    /// `(norm(W·x/√n_embd) + table[tokens]·√P) / √2`, one slice of width P per layer:
    /// `[P, n_tokens, n_layer]` (gemma3n.cpp `build_inp_per_layer`, `project_per_layer_inputs`).
    fn per_layer_inputs(&self, x: Tensor<'s>) -> Result<Tensor<'s>> {
        let (p, d, w) = (&self.pass, &self.hp.dims, self.w);
        let (ctx, n_tokens) = (p.ctx, x.ne()[1]);
        let (pw, nl) = (self.hp.n_embd_per_layer as i64, d.n_layer as i64);
        // table rows of the batch's tokens: [P, n_layer, n_tokens]
        let rows = ctx.get_rows(p.wctx.tensor(w.per_layer_token_embd)?, p.inp.tokens)?;
        let rows = ctx.scale(ctx.reshape(rows, &[pw, nl, n_tokens])?, (pw as f32).sqrt())?;
        let proj = ctx.scale(p.mm(w.per_layer_model_proj, x)?, 1.0 / (d.n_embd as f32).sqrt())?;
        let proj = ctx.reshape(proj, &[pw, nl, n_tokens])?;
        let proj = p.norm(proj, w.per_layer_proj_norm, d.rms_eps, "per_layer_proj", 0)?;
        let inp = ctx.scale(ctx.add(proj, rows)?, std::f32::consts::FRAC_1_SQRT_2)?.set_name("inp_per_layer")?;
        ctx.cont(ctx.permute(inp, [0, 2, 1, 3])?)
    }

    /// AltUp's router: `tanh(W·(norm(x)/n_embd))`, `[n_altup, n_tokens]`.
    fn modalities(&self, x: Tensor<'s>, l: &Layer, il: usize) -> Result<Tensor<'s>> {
        let (p, ctx) = (&self.pass, self.pass.ctx);
        let r = p.norm(x, l.altup_router_norm, self.hp.dims.rms_eps, "altup_router_norm", il)?;
        let r = ctx.scale(r, 1.0 / self.hp.dims.n_embd as f32)?;
        ctx.tanh(p.mm(l.altup_router, r)?)?.set_name(&format!("modalities-{il}"))
    }

    /// Predict: each stream plus a routed mix of all of them, `[n_embd, n_tokens, n_altup]`.
    fn predict(&self, xs: Tensor<'s>, l: &Layer, il: usize) -> Result<Tensor<'s>> {
        let (p, ctx, n) = (&self.pass, self.pass.ctx, self.hp.n_altup as i64);
        let n_tokens = xs.ne()[1];
        let m = self.modalities(self.stream(xs, self.hp.altup_active as usize)?, l, il)?;
        // coefficients: [n_altup, n_altup, n_tokens]
        let coefs = ctx.reshape(p.mm(l.altup_predict_coef, m)?, &[n, n, n_tokens])?;
        // streams as rows: [n_altup, n_embd, n_tokens]; mixed: [n_embd, n_altup, n_tokens]
        let rows = ctx.cont(ctx.permute(xs, [1, 2, 0, 3])?)?;
        let mixed = ctx.cont(ctx.permute(ctx.mul_mat(rows, coefs)?, [0, 2, 1, 3])?)?;
        ctx.add(mixed, xs)?.set_name(&format!("predictions-{il}"))
    }

    /// Correct: every prediction plus the innovation `y − prediction_active` times its routed
    /// weight + 1, `[n_embd, n_tokens, n_altup]`.
    fn correct(&self, pred: Tensor<'s>, y: Tensor<'s>, l: &Layer, il: usize) -> Result<Tensor<'s>> {
        let (p, ctx, n) = (&self.pass, self.pass.ctx, self.hp.n_altup as i64);
        let (n_embd, n_tokens) = (y.ne()[0], y.ne()[1]);
        let m = self.modalities(y, l, il)?;
        let innovation = ctx.sub(y, self.stream(pred, self.hp.altup_active as usize)?)?;
        let coefs = ctx.scale_bias(p.mm(l.altup_correct_coef, m)?, 1.0, 1.0)?;
        // [n_altup, n_tokens] → [1, n_tokens, n_altup]
        let coefs = ctx.reshape(ctx.cont(ctx.permute(coefs, [1, 0, 2, 3])?)?, &[1, n_tokens, n])?;
        let innovation = ctx.repeat_4d(innovation, [n_embd, n_tokens, n, 1])?;
        ctx.add(ctx.mul(innovation, coefs)?, pred)?.set_name(&format!("corrected-{il}"))
    }

    /// `relu(g − mean(g) − m·std(g))` over each row, std with n − 1 (gemma3n.cpp `gaussian_topk`).
    fn gaussian_topk(&self, g: Tensor<'s>, m: f32) -> Result<Tensor<'s>> {
        let ctx = self.pass.ctx;
        let mean = ctx.mean(g)?;
        let var = ctx.scale(ctx.sum_rows(ctx.sqr(ctx.sub(g, mean)?)?)?, 1.0 / (g.ne()[0] - 1) as f32)?;
        let cutoff = ctx.add(mean, ctx.scale(ctx.sqrt(var)?, m)?)?;
        ctx.relu(ctx.sub(g, cutoff)?)
    }

    /// Layer `il` over the rows of the streams `xs` (all the batch's, or those `p` narrows
    /// to), with its slice `ple` `[P, rows]` of the per-layer inputs for the same rows.
    fn layer(
        &self,
        p: &Pass<'s, '_>,
        gf: &mut Graph<'s>,
        xs: Tensor<'s>,
        ple: Tensor<'s>,
        il: usize,
    ) -> Result<Tensor<'s>> {
        let (hp, d, l) = (self.hp, &self.hp.dims, &self.w.layers[il]);
        let (ctx, n_tokens, eps) = (p.ctx, xs.ne()[1], d.rms_eps);
        let (hd, nh, nkv) = (d.head_dim as i64, d.n_head as i64, d.n_head_kv as i64);
        let pred = self.predict(xs, l, il)?;
        let active = self.stream(pred, hp.altup_active as usize)?;
        let h = p.norm(active, l.attn_norm, eps, "attn_norm", il)?;
        // LAuReL: h + norm(R·L·h)
        let lr = p.norm(p.mm(l.laurel_r, p.mm(l.laurel_l, h)?)?, l.laurel_post_norm, eps, "laurel_post_norm", il)?;
        let laurel = ctx.add(lr, h)?.set_name(&format!("laurel_out-{il}"))?;

        let (base, scale) = if hp.is_local[il] { (hp.rope_base_swa, 1.0) } else { (hp.rope_base, hp.rope_freq_scale) };
        let rope = Rope {
            n_dims: d.n_rot as i32,
            neox: true,
            freq_base: base,
            freq_scale: scale,
            n_ctx_orig: d.n_ctx_train as i32,
        };
        // q: [head_dim, n_head, n_tokens], normed and rotated; no query scaling
        let q = ctx.reshape(p.mm(l.attn_q, h)?, &[hd, nh, n_tokens])?;
        let q = p.norm(q, l.attn_q_norm, eps, "Qcur_normed", il)?;
        let q = ctx.rope_ext(q, p.inp.pos, None, rope)?.set_name(&format!("Qcur_pos-{il}"))?;
        // k, v: [head_dim, n_head_kv, n_tokens]; V gets a weightless norm
        let kv = match l.attn_kv {
            Some((wk, wv, k_norm)) => {
                let k = p.norm(ctx.reshape(p.mm(wk, h)?, &[hd, nkv, n_tokens])?, k_norm, eps, "Kcur_normed", il)?;
                let v = ctx.rms_norm(ctx.reshape(p.mm(wv, h)?, &[hd, nkv, n_tokens])?, eps)?;
                let k = ctx.rope_ext(k, p.inp.pos, None, rope)?.set_name(&format!("Kcur_pos-{il}"))?;
                Some((k, ctx.reshape(v, &[hd * nkv, n_tokens])?))
            }
            None => None,
        };
        let heads = Heads { head_dim: d.head_dim, n_head: d.n_head, n_head_kv: d.n_head_kv };
        let attn = p.attend_heads(gf, q, kv, heads, None, il)?;
        let cur = p.norm(p.mm(l.attn_output, attn)?, l.post_attention_norm, eps, "attn_post_norm", il)?;
        let cur = ctx.add(cur, active)?;
        let attn_laurel = ctx.scale(ctx.add(cur, laurel)?, std::f32::consts::FRAC_1_SQRT_2)?;

        // FFN: gelu(gate) ⊙ up, the gate sparsified on the layers that say so
        let h = p.norm(attn_laurel, l.ffn_norm, eps, "ffn_norm", il)?;
        let up = p.mm(l.ffn_up, h)?;
        let mut gate = p.mm(l.ffn_gate, h)?;
        if let Some(m) = hp.sparsity[il] {
            gate = self.gaussian_topk(gate, m)?;
        }
        let cur = p.mm(l.ffn_down, ctx.spread([up, gate], |[u, g]| ctx.mul(u, ctx.gelu(g)?))?)?;
        let cur = p.norm(cur, l.post_ffw_norm, eps, "ffn_post_norm", il)?;
        let y = ctx.add(cur, attn_laurel)?;

        let corrected = self.correct(pred, y, l, il)?;
        // per-layer embedding into streams 1..: post_norm(proj(gelu(inp_gate·(c_active ⊙
        // scale)) ⊙ slice_il))
        let first =
            ctx.mul(self.stream(corrected, hp.altup_active as usize)?, p.wctx.tensor(l.altup_correct_scale)?)?;
        let first = ctx.gelu(p.mm(l.inp_gate, first)?)?;
        let first = ctx.mul(first, ple)?;
        let first = p.norm(p.mm(l.proj, first)?, l.post_norm, eps, "per_layer_embd_out", il)?;
        let rest = ctx.add(self.streams_after_first(corrected)?, first)?;
        ctx.concat(self.stream(corrected, 0)?, rest, 2)?.set_name(&format!("l_out-{il}"))
    }
}

/// The L2 norm of each column: `[1, n_tokens, …]` (gemma3n.cpp `calc_magnitude`).
fn magnitude<'s>(p: &Pass<'s, '_>, x: Tensor<'s>) -> Result<Tensor<'s>> {
    p.ctx.sqrt(p.ctx.sum_rows(p.ctx.sqr(x)?)?)
}
