//! Gemma 4's checkpoint tensors → GGUF tensors, and the `gemma4.*` keys.
use crate::checkpoint::{Checkpoint, SourceTensor};
use crate::config::{Arch, ModelConfig};
use crate::error::{Error, Result};
use gemma_gguf::gguf::{GgufArray, GgufValue};
use gemma_gguf::names::{arch_key, llm, tensor as tn};

/// Where a GGUF tensor's values come from.
pub(crate) enum From {
    Tensor(SourceTensor),
    /// Made by the converter (`rope_freqs`).
    Values(Vec<f32>),
    /// Checkpoint matrices of one shape stacked along a new last ggml dimension (Gemma 3n's
    /// AltUp projections, `crate::gemma3n`).
    Stacked(Vec<SourceTensor>),
    /// A token-indexed table with fewer rows than the GGUF's: the rows past the source's
    /// are copies of its row 0 (Gemma 3n's per-layer embeddings, `crate::gemma3n`).
    PadRows(SourceTensor),
}

/// A planned GGUF tensor.
pub(crate) struct Mapped {
    pub gguf_name: String,
    pub ne: Vec<u64>,
    pub src: From,
}

/// The GGUF tensors of a Gemma 4 text model, with their sources. `n_vocab` is the
/// tokenizer's vocabulary, to which both embedding tables are trimmed.
pub(crate) fn map_tensors(ckpt: &Checkpoint, c: &ModelConfig, prefix: &str, n_vocab: usize) -> Result<Vec<Mapped>> {
    let g = c.gemma4.as_ref().expect("a Gemma 4 config");
    let (e, l, v) = (c.n_embd as u64, c.n_layer, n_vocab as u64);
    let p = g.n_embd_per_layer as u64;
    let mut m = Maps { ckpt, prefix, out: Vec::new() };

    m.embedding(tn::TOKEN_EMBD, "embed_tokens", e, v)?;
    if p > 0 {
        m.embedding(tn::PER_LAYER_TOKEN_EMBD, "embed_tokens_per_layer", p * l as u64, v)?;
        m.matrix(tn::global(tn::PER_LAYER_MODEL_PROJ), "per_layer_model_projection", e, p * l as u64)?;
        m.vector(tn::global(tn::PER_LAYER_PROJ_NORM), "per_layer_projection_norm", p)?;
    }
    m.out.push(Mapped {
        gguf_name: tn::global(tn::ROPE_FREQS),
        ne: vec![g.head_dim_full as u64 / 2],
        src: From::Values(g.rope_freqs()),
    });
    for il in 0..l {
        let swa = c.swa_layers[il];
        let hd = g.head_dim(swa) as u64;
        let (q, kv) = (c.n_head as u64 * hd, g.n_head_kv[il] as u64 * hd);
        let f = g.n_ff[il] as u64;
        let b = |name: &str| tn::block(il, name);
        let h = |name: &str| format!("layers.{il}.{name}");
        m.vector(b(tn::ATTN_NORM), &h("input_layernorm"), e)?;
        m.matrix(b(tn::ATTN_Q), &h("self_attn.q_proj"), e, q)?;
        if il < g.n_kv_start() {
            m.matrix(b(tn::ATTN_K), &h("self_attn.k_proj"), e, kv)?;
            // K=V: full layers have no V projection.
            if swa || !g.k_eq_v {
                m.matrix(b(tn::ATTN_V), &h("self_attn.v_proj"), e, kv)?;
            }
        }
        m.vector(b(tn::ATTN_Q_NORM), &h("self_attn.q_norm"), hd)?;
        if il < g.n_kv_start() {
            m.vector(b(tn::ATTN_K_NORM), &h("self_attn.k_norm"), hd)?;
        }
        m.matrix(b(tn::ATTN_OUTPUT), &h("self_attn.o_proj"), q, e)?;
        m.vector(b(tn::POST_ATTENTION_NORM), &h("post_attention_layernorm"), e)?;
        m.vector(b(tn::FFN_NORM), &h("pre_feedforward_layernorm"), e)?;
        m.matrix(b(tn::FFN_GATE), &h("mlp.gate_proj"), e, f)?;
        m.matrix(b(tn::FFN_UP), &h("mlp.up_proj"), e, f)?;
        m.matrix(b(tn::FFN_DOWN), &h("mlp.down_proj"), f, e)?;
        m.vector(b(tn::POST_FFW_NORM), &h("post_feedforward_layernorm"), e)?;
        if let Some(moe) = &g.moe {
            let (n, fe) = (moe.n_expert as u64, moe.n_ff_exp as u64);
            m.matrix(b(tn::FFN_GATE_INP), &h("router.proj"), e, n)?;
            m.vector(tn::block_scale(il, tn::FFN_GATE_INP), &h("router.scale"), e)?;
            m.vector(b(tn::FFN_PRE_NORM_2), &h("pre_feedforward_layernorm_2"), e)?;
            m.vector(b(tn::FFN_POST_NORM_1), &h("post_feedforward_layernorm_1"), e)?;
            m.vector(b(tn::FFN_POST_NORM_2), &h("post_feedforward_layernorm_2"), e)?;
            // [E, 2f, d] and [E, d, f] in HF order: ggml's [d, 2f, E] and [f, d, E].
            m.tensor(b(tn::FFN_GATE_UP_EXPS), &h("experts.gate_up_proj"), vec![e, 2 * fe, n])?;
            m.tensor(b(tn::FFN_DOWN_EXPS), &h("experts.down_proj"), vec![fe, e, n])?;
            m.vector(tn::block_scale(il, tn::FFN_DOWN_EXPS), &h("router.per_expert_scale"), n)?;
        }
        if p > 0 {
            m.matrix(b(tn::PER_LAYER_INP_GATE), &h("per_layer_input_gate"), e, p)?;
            m.matrix(b(tn::PER_LAYER_PROJ), &h("per_layer_projection"), p, e)?;
            m.vector(b(tn::PER_LAYER_POST_NORM), &h("post_per_layer_input_norm"), e)?;
        }
        m.vector(b(tn::LAYER_OUT_SCALE), &h("layer_scalar"), 1)?;
    }
    m.vector(tn::global(tn::OUTPUT_NORM), "norm", e)?;
    Ok(m.out)
}

struct Maps<'a> {
    ckpt: &'a Checkpoint,
    prefix: &'a str,
    out: Vec<Mapped>,
}

impl Maps<'_> {
    /// The checkpoint tensor `{prefix}{hf}.weight`, or `{prefix}{hf}` (parameters such as
    /// `experts.gate_up_proj`, `router.scale` and the `layer_scalar` buffer have no suffix).
    fn find(&self, hf: &str, gguf: &str) -> Result<SourceTensor> {
        let with = format!("{}{hf}.weight", self.prefix);
        let without = format!("{}{hf}", self.prefix);
        let t = self
            .ckpt
            .get(&with)
            .or_else(|| self.ckpt.get(&without))
            .ok_or_else(|| Error::MissingTensor { tensor: with, what: gguf.to_owned() })?
            .clone();
        if t.dtype.is_none() {
            return Err(self.ckpt.unsupported(&t));
        }
        Ok(t)
    }

    /// A tensor whose HF shape is `ne` reversed.
    fn tensor(&mut self, gguf_name: String, hf: &str, ne: Vec<u64>) -> Result<()> {
        let src = self.find(hf, &gguf_name)?;
        let want: Vec<usize> = ne.iter().rev().map(|&d| d as usize).collect();
        // A one-element tensor may be saved as a scalar (shape []).
        let ok = src.shape == want || (ne == [1] && src.shape.is_empty());
        if !ok {
            return Err(Error::Shape {
                tensor: src.name.clone(),
                what: format!("shape {:?}, but config.json implies {want:?}", src.shape),
            });
        }
        self.out.push(Mapped { gguf_name, ne, src: From::Tensor(src) });
        Ok(())
    }

    fn vector(&mut self, gguf_name: String, hf: &str, n: u64) -> Result<()> {
        self.tensor(gguf_name, hf, vec![n])
    }

    fn matrix(&mut self, gguf_name: String, hf: &str, ne0: u64, ne1: u64) -> Result<()> {
        self.tensor(gguf_name, hf, vec![ne0, ne1])
    }

    /// An embedding table `[rows ≥ n_vocab, width]`, trimmed to the first `n_vocab` rows.
    fn embedding(&mut self, role: &str, hf: &str, width: u64, n_vocab: u64) -> Result<()> {
        let gguf_name = tn::global(role);
        let src = self.find(hf, &gguf_name)?;
        match src.shape.as_slice() {
            [rows, cols] if *cols as u64 == width && *rows as u64 >= n_vocab => {
                self.out.push(Mapped { gguf_name, ne: vec![width, n_vocab], src: From::Tensor(src) });
                Ok(())
            }
            _ => Err(Error::Shape {
                tensor: src.name.clone(),
                what: format!("shape {:?}, expected [≥{n_vocab} (the tokenizer's vocabulary), {width}]", src.shape),
            }),
        }
    }
}

fn u32v(n: usize) -> GgufValue {
    GgufValue::U32(n as u32)
}

/// A per-layer value: one number when all layers agree, else an array (llama.cpp's
/// `get_key_or_arr`).
fn scalar_or_array(v: &[usize]) -> GgufValue {
    if v.windows(2).all(|w| w[0] == w[1]) {
        u32v(v[0])
    } else {
        GgufValue::Array(GgufArray::U32(v.iter().map(|&n| n as u32).collect()))
    }
}

/// The `gemma4.*` keys.
pub(crate) fn arch_keys(c: &ModelConfig) -> Vec<(String, GgufValue)> {
    let g = c.gemma4.as_ref().expect("a Gemma 4 config");
    let k = |s: &str| arch_key(Arch::Gemma4.gguf_name(), s);
    let mut m = vec![
        (k(llm::CONTEXT_LENGTH), u32v(c.context_length)),
        (k(llm::EMBEDDING_LENGTH), u32v(c.n_embd)),
        (k(llm::BLOCK_COUNT), u32v(c.n_layer)),
        (k(llm::FEED_FORWARD_LENGTH), scalar_or_array(&g.n_ff)),
        (k(llm::HEAD_COUNT), u32v(c.n_head)),
        (k(llm::HEAD_COUNT_KV), scalar_or_array(&g.n_head_kv)),
        (k(llm::KEY_LENGTH), u32v(g.head_dim_full)),
        (k(llm::VALUE_LENGTH), u32v(g.head_dim_full)),
        (k(llm::KEY_LENGTH_SWA), u32v(g.head_dim_swa)),
        (k(llm::VALUE_LENGTH_SWA), u32v(g.head_dim_swa)),
        (k(llm::RMS_EPS), GgufValue::F32(c.rms_eps)),
        (k(llm::ROPE_FREQ_BASE), GgufValue::F32(c.rope_base)),
        (k(llm::ROPE_FREQ_BASE_SWA), GgufValue::F32(c.rope_base_swa.unwrap_or(c.rope_base))),
        // Full layers rotate all pairs, the unrotated ones with a ~0 frequency (rope_freqs).
        (k(llm::ROPE_DIMENSION_COUNT), u32v(g.head_dim_full)),
        (k(llm::ROPE_DIMENSION_COUNT_SWA), u32v(g.head_dim_swa)),
        (k(llm::SLIDING_WINDOW), u32v(c.sliding_window.unwrap_or(0))),
        (k(llm::SLIDING_WINDOW_PATTERN), GgufValue::Array(GgufArray::Bool(c.swa_layers.clone()))),
        (k(llm::SHARED_KV_LAYERS), u32v(g.n_kv_shared)),
        (k(llm::EMBEDDING_LENGTH_PER_LAYER_INPUT), u32v(g.n_embd_per_layer)),
        // llama.cpp's default when the key is missing is 30 (llama-hparams.h), transformers'
        // is none: 0 says "none" to llama.cpp (src/models/gemma4.cpp tests it for 0).
        (k(llm::FINAL_LOGIT_SOFTCAPPING), GgufValue::F32(c.final_softcap.unwrap_or(0.0))),
        // Ours (libllama ignores it): how images attend, which llama.cpp decides by width.
        (k(llm::BIDIRECTIONAL_VISION), GgufValue::Bool(g.bidirectional_vision)),
    ];
    if let Some(moe) = &g.moe {
        m.extend([
            (k(llm::EXPERT_COUNT), u32v(moe.n_expert)),
            (k(llm::EXPERT_USED_COUNT), u32v(moe.n_expert_used)),
            (k(llm::EXPERT_FEED_FORWARD_LENGTH), u32v(moe.n_ff_exp)),
        ]);
    }
    m
}
