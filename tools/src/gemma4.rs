//! Gemma 4 (`Gemma4ForCausalLM`, and the text model of `Gemma4ForConditionalGeneration`) →
//! llama.cpp's `gemma4` dialect: config fields → keys, checkpoint tensors → GGUF tensors.
//!
//! References (read, not copied): llama.cpp's loader `src/models/gemma4.cpp` and
//! `src/llama-model.cpp` (llama-cpp-sys-2 0.1.161), upstream llama.cpp's converter
//! (`conversion/gemma.py`, `Gemma4Model`), and transformers 5.24.0's
//! `models/gemma4/{configuration,modeling}_gemma4.py`. Differences from Gemma 3:
//!
//! - RMSNorm multiplies by `w` (`Gemma4RMSNorm`), so norms are written as they are (no +1).
//! - Sliding and full layers have their own head dims (`head_dim`, `global_head_dim`), and
//!   may have their own kv-head counts (`num_global_key_value_heads` with
//!   `attention_k_eq_v`): written as `*_swa` keys and per-layer arrays.
//! - transformers 5 saves `global_head_dim` / `num_global_key_value_heads` as a
//!   `per_layer_config` (layer index → overrides) instead: both forms are read.
//! - Full layers use "proportional" RoPE: only the first `partial_rotary_factor · hd / 2`
//!   frequencies turn. llama.cpp's NEOX rope rotates all pairs, so the converter writes
//!   `rope_freqs` = `factor` for the turning pairs and 1e30 (frequency ~0) for the rest.
//! - K=V (`attention_k_eq_v`): full layers have no `v_proj`; llama.cpp then uses K as V.
//! - The last `num_kv_shared_layers` layers have no K/V weights and read the caches of the
//!   last non-shared sliding and full layers. llama.cpp assumes those are layers
//!   `n_kv_start − 2` (sliding) and `n_kv_start − 1` (full) (`llama_model::create_memory`,
//!   llama-model.cpp ~L2796); other layouts are refused rather than converted wrongly.
//! - Per-layer embeddings (PLE), MoE blocks beside the dense MLP, and `layer_scalar`.
use crate::checkpoint::{Checkpoint, SourceTensor};
use crate::config::{self, Arch, Fields, ModelConfig, CAPS};
use crate::error::{Error, Result};
use gemma_gguf::gguf::{GgufArray, GgufValue};
use gemma_gguf::names::{arch_key, llm, tensor as tn};
use serde_json::{Map, Value};

/// Defaults of transformers' `Gemma4TextConfig` (configuration_gemma4.py, 5.24.0) for the
/// fields real configs may leave out.
pub(crate) const TEXT_DEFAULTS: &[(&str, f64)] = &[
    ("rms_norm_eps", 1e-6),
    ("max_position_embeddings", 131_072.0),
    ("num_kv_shared_layers", 0.0),
    ("hidden_size_per_layer_input", 256.0),
    ("vocab_size_per_layer_input", 262_144.0),
    // `kwargs.pop("global_head_dim", 512)` in `Gemma4TextConfig.__post_init__`.
    ("global_head_dim", 512.0),
];

/// Far above the released models (128 experts in 26B-A4B).
const MAX_EXPERTS: u64 = 4096;

/// Unrotated pairs get this frequency factor: θ / 1e30 ≈ 0, as upstream's converter writes
/// (`Gemma4Model.generate_extra_tensors`).
const NO_ROTATION: f32 = 1e30;

/// A mixture-of-experts block (on every layer when `enable_moe_block`).
#[derive(Clone, Debug, PartialEq)]
pub struct Moe {
    pub n_expert: usize,
    pub n_expert_used: usize,
    pub n_ff_exp: usize,
}

/// Gemma 4's hyper-parameters beyond the common ones in [`ModelConfig`].
#[derive(Clone, Debug, PartialEq)]
pub struct Gemma4Config {
    /// Head dim of the sliding layers (`head_dim`) and of the full layers (`global_head_dim`).
    pub head_dim_swa: usize,
    pub head_dim_full: usize,
    /// Per layer.
    pub n_head_kv: Vec<usize>,
    /// Per layer (doubled on KV-shared layers with `use_double_wide_mlp`).
    pub n_ff: Vec<usize>,
    /// Full layers have no V projection (V = K).
    pub k_eq_v: bool,
    pub n_kv_shared: usize,
    /// PLE width per layer; 0 = no per-layer embeddings.
    pub n_embd_per_layer: usize,
    pub vocab_per_layer: usize,
    pub moe: Option<Moe>,
    /// Full layers: the share of rotated pairs and the scaling factor of proportional RoPE.
    pub rope_partial_full: f32,
    pub rope_factor_full: f32,
}

impl Gemma4Config {
    pub fn head_dim(&self, swa: bool) -> usize {
        if swa {
            self.head_dim_swa
        } else {
            self.head_dim_full
        }
    }

    /// The first layer whose K/V come from an earlier layer.
    pub fn n_kv_start(&self) -> usize {
        self.n_head_kv.len() - self.n_kv_shared
    }

    /// `rope_freqs`: one factor per pair of the full layers' heads.
    pub fn rope_freqs(&self) -> Vec<f32> {
        let pairs = self.head_dim_full / 2;
        let turning = (self.rope_partial_full as f64 * self.head_dim_full as f64 / 2.0) as usize;
        (0..pairs).map(|i| if i < turning { self.rope_factor_full } else { NO_ROTATION }).collect()
    }
}

/// Parses a Gemma 4 text config (`f`: the text model's object; `top`: the whole file).
pub(crate) fn parse_config(
    f: &Fields,
    top: &Map<String, Value>,
    hf_architecture: String,
    tensor_prefix: &str,
) -> Result<ModelConfig> {
    let n_embd = f.uint("hidden_size", 1, CAPS.embd)?;
    let n_layer = f.uint("num_hidden_layers", 1, CAPS.layers)?;
    let n_head = f.uint("num_attention_heads", 1, CAPS.heads)?;
    let n_head_kv_base = f.uint("num_key_value_heads", 1, CAPS.heads)?;
    let head_dim = f.uint("head_dim", 1, CAPS.head_dim)?;
    let n_ff_base = f.uint("intermediate_size", 1, CAPS.embd * 16)?;
    let swa = config::swa_layers(f, Arch::Gemma4, n_layer)?;
    if swa[n_layer - 1] {
        return Err(f.bad("layer_types", "the last layer must be full_attention (transformers forces it)"));
    }
    let k_eq_v = f.bool("attention_k_eq_v", false)?;
    refuse_unsupported(f, top)?;

    // Per-layer head dims and kv heads: transformers 5's `per_layer_config`, or the hub's
    // `global_head_dim` / `num_global_key_value_heads`.
    let overrides = per_layer_overrides(f, &swa, k_eq_v)?;
    let dims: Vec<usize> = overrides.iter().map(|o| o.0.unwrap_or(head_dim)).collect();
    let n_head_kv: Vec<usize> = overrides.iter().map(|o| o.1.unwrap_or(n_head_kv_base)).collect();
    let dim_of = |want_swa: bool| -> Result<usize> {
        let mut it = (0..n_layer).filter(|&il| swa[il] == want_swa).map(|il| dims[il]);
        let first = it.next().unwrap_or(head_dim);
        if it.any(|d| d != first) {
            return Err(
                f.bad("per_layer_config", "layers of one type have different head dims (llama.cpp has one per type)")
            );
        }
        if first % 2 != 0 {
            return Err(f.bad("head_dim", format!("{first} is odd; rope needs pairs")));
        }
        Ok(first)
    };
    let (head_dim_swa, head_dim_full) = (dim_of(true)?, dim_of(false)?);
    if let Some((il, kv)) = n_head_kv.iter().enumerate().find(|(_, &kv)| kv == 0 || n_head % kv != 0) {
        return Err(f.bad(
            "num_key_value_heads",
            format!("layer {il}: {n_head} attention heads are not a multiple of {kv} kv heads"),
        ));
    }

    let n_kv_shared = f.uint("num_kv_shared_layers", 0, CAPS.layers)?;
    if n_kv_shared > 0 {
        let start = n_layer.checked_sub(n_kv_shared).filter(|&s| s >= 2).ok_or_else(|| {
            f.bad("num_kv_shared_layers", format!("{n_kv_shared} of {n_layer} layers: at least 2 must keep their KV"))
        })?;
        // TF reads the last non-shared layer of each type; llama.cpp reads layer start−1
        // for full layers and start−2 for sliding ones. They agree only in this layout.
        if swa[start - 1] || !swa[start - 2] {
            return Err(f.bad(
                "num_kv_shared_layers",
                format!(
                    "llama.cpp's gemma4 reads shared KV from layer {} (must be full) and {} (must be sliding); layer_types differ",
                    start - 1,
                    start - 2
                ),
            ));
        }
    }
    let double_wide = f.bool("use_double_wide_mlp", false)?;
    let n_ff =
        (0..n_layer).map(|il| n_ff_base * if double_wide && il >= n_layer - n_kv_shared { 2 } else { 1 }).collect();

    let n_embd_per_layer = f.uint("hidden_size_per_layer_input", 0, CAPS.embd)?;
    let vocab_per_layer = f.uint("vocab_size_per_layer_input", 0, CAPS.vocab)?;
    let moe = if f.bool("enable_moe_block", false)? {
        let n_expert = f.uint("num_experts", 1, MAX_EXPERTS)?;
        let n_expert_used = f.uint("top_k_experts", 1, MAX_EXPERTS)?;
        if n_expert_used > n_expert {
            return Err(f.bad("top_k_experts", format!("{n_expert_used} is more than num_experts ({n_expert})")));
        }
        // Upstream's converter also accepts the name `expert_intermediate_size`.
        let key = if f.get("moe_intermediate_size").is_none() && f.get("expert_intermediate_size").is_some() {
            "expert_intermediate_size"
        } else {
            "moe_intermediate_size"
        };
        Some(Moe { n_expert, n_expert_used, n_ff_exp: f.uint(key, 1, CAPS.embd * 16)? })
    } else {
        None
    };
    let rope = rope(f)?;
    let final_softcap = match f.get("final_logit_softcapping") {
        Some(v) => Some(f.positive("final_logit_softcapping", v)? as f32),
        None => None,
    };
    let g = Gemma4Config {
        head_dim_swa,
        head_dim_full,
        n_head_kv,
        n_ff,
        k_eq_v,
        n_kv_shared,
        n_embd_per_layer,
        vocab_per_layer,
        moe,
        rope_partial_full: rope.partial_full,
        rope_factor_full: rope.factor_full,
    };
    Ok(ModelConfig {
        arch: Arch::Gemma4,
        hf_architecture,
        tensor_prefix: tensor_prefix.to_owned(),
        vocab_size: f.uint("vocab_size", 1, CAPS.vocab)?,
        n_embd,
        n_ff: n_ff_base,
        n_layer,
        n_head,
        n_head_kv: g.n_head_kv[0],
        head_dim: head_dim_swa,
        rms_eps: f.opt_positive("rms_norm_eps")?.unwrap_or(1e-6) as f32,
        context_length: f.uint("max_position_embeddings", 1, CAPS.context)?,
        rope_base: rope.theta_full,
        rope_base_swa: Some(rope.theta_swa),
        rope_linear_factor: None,
        sliding_window: Some(f.uint("sliding_window", 1, CAPS.context)?),
        swa_layers: swa,
        attn_softcap: None,
        final_softcap,
        query_pre_attn_scalar: None,
        bos_token_id: config::token_id(f, top, "bos_token_id")?,
        eos_token_id: config::token_id(f, top, "eos_token_id")?,
        pad_token_id: config::token_id(f, top, "pad_token_id")?,
        source_repo: config::source_repo(top),
        gemma4: Some(g),
    })
}

/// Settings transformers supports that llama.cpp's gemma4 graph does not compute.
fn refuse_unsupported(f: &Fields, top: &Map<String, Value>) -> Result<()> {
    // src/models/gemma4.cpp: GeGLU with tanh-GELU (`ggml_geglu_split`).
    if let Some(act) = f.str("hidden_activation")? {
        if act != "gelu_pytorch_tanh" {
            return Err(f.bad("hidden_activation", format!("{act:?}: llama.cpp's gemma4 computes gelu_pytorch_tanh")));
        }
    }
    // "all" makes every layer bidirectional (and changes the window); llama.cpp's gemma4 is
    // causal, with bidirectional image chunks on sliding layers only ("vision").
    if f.str("use_bidirectional_attention")? == Some("all") {
        return Err(f.bad("use_bidirectional_attention", "\"all\" (a non-causal model) is not supported"));
    }
    if f.bool("attention_bias", false)? {
        return Err(f.bad("attention_bias", "attention biases are not part of llama.cpp's gemma4"));
    }
    // The output projection is written as the embedding (tied), as llama.cpp reads it.
    let top_fields = Fields { obj: top, path: f.path, prefix: "", defaults: &[] };
    if !f.bool("tie_word_embeddings", true)? || !top_fields.bool("tie_word_embeddings", true)? {
        return Err(f.bad("tie_word_embeddings", "false: an untied output projection is not supported"));
    }
    Ok(())
}

/// Per layer: (head_dim, num_key_value_heads) overrides.
fn per_layer_overrides(f: &Fields, swa: &[bool], k_eq_v: bool) -> Result<Vec<(Option<usize>, Option<usize>)>> {
    let n_layer = swa.len();
    let mut out = vec![(None, None); n_layer];
    let Some(plc) = f.get("per_layer_config") else {
        let global_dim = f.uint("global_head_dim", 1, CAPS.head_dim)?;
        // transformers applies `num_global_key_value_heads` only with `attention_k_eq_v`.
        let global_kv = if k_eq_v { f.opt_uint("num_global_key_value_heads", 1, CAPS.heads)? } else { None };
        for (il, o) in out.iter_mut().enumerate() {
            if !swa[il] {
                *o = (Some(global_dim), global_kv);
            }
        }
        return Ok(out);
    };
    let plc = plc.as_object().ok_or_else(|| f.bad("per_layer_config", "expected an object"))?;
    for (key, v) in plc {
        let what = format!("per_layer_config.{key}");
        let layers: Vec<usize> = match key.as_str() {
            "sliding_attention" => (0..n_layer).filter(|&il| swa[il]).collect(),
            "full_attention" => (0..n_layer).filter(|&il| !swa[il]).collect(),
            k => match k.parse::<usize>() {
                Ok(il) if il < n_layer => vec![il],
                _ => return Err(f.bad(&what, format!("not a layer index below {n_layer} or a layer type"))),
            },
        };
        let o = v.as_object().ok_or_else(|| f.bad(&what, "expected an object"))?;
        let sub = Fields { obj: o, path: f.path, prefix: f.prefix, defaults: &[] };
        let mut dims = (None, None);
        for k in o.keys() {
            match k.as_str() {
                "head_dim" => dims.0 = Some(sub.uint("head_dim", 1, CAPS.head_dim)?),
                "num_key_value_heads" => dims.1 = Some(sub.uint("num_key_value_heads", 1, CAPS.heads)?),
                other => return Err(f.bad(&format!("{what}.{other}"), "this per-layer override is not supported")),
            }
        }
        for il in layers {
            out[il] = (dims.0.or(out[il].0), dims.1.or(out[il].1));
        }
    }
    Ok(out)
}

struct Rope {
    theta_full: f32,
    theta_swa: f32,
    partial_full: f32,
    factor_full: f32,
}

/// `rope_parameters.{full_attention, sliding_attention}` (transformers' defaults when the
/// whole block is absent: sliding default θ 10 000, full proportional ¼ θ 1 000 000).
fn rope(f: &Fields) -> Result<Rope> {
    let Some(params) = f.get("rope_parameters") else {
        return Ok(Rope { theta_full: 1_000_000.0, theta_swa: 10_000.0, partial_full: 0.25, factor_full: 1.0 });
    };
    let params = params.as_object().ok_or_else(|| f.bad("rope_parameters", "expected an object"))?;
    let entry = |ty: &str| -> Result<(Fields, &Map<String, Value>, String)> {
        let key = format!("rope_parameters.{ty}");
        let o = params.get(ty).and_then(|v| v.as_object()).ok_or_else(|| f.bad(&key, "missing or not an object"))?;
        Ok((Fields { obj: o, path: f.path, prefix: f.prefix, defaults: &[] }, o, key))
    };
    let kind = |o: &Map<String, Value>| o.get("rope_type").and_then(|v| v.as_str()).unwrap_or("default").to_owned();
    let num = |sub: &Fields, key: &str, name: &str, default: Option<f64>| -> Result<f64> {
        match (sub.get(name), default) {
            (Some(v), _) => sub.positive(&format!("{key}.{name}"), v),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(f.bad(&format!("{key}.{name}"), "missing")),
        }
    };

    let (sub, o, key) = entry("sliding_attention")?;
    if kind(o) != "default" {
        return Err(f.bad(&format!("{key}.rope_type"), format!("{:?}: sliding layers use default RoPE", kind(o))));
    }
    // transformers' default RoPE ignores partial_rotary_factor; refuse one that would matter.
    if num(&sub, &key, "partial_rotary_factor", Some(1.0))? != 1.0 {
        return Err(f.bad(&format!("{key}.partial_rotary_factor"), "partial RoPE on sliding layers is not supported"));
    }
    let theta_swa = num(&sub, &key, "rope_theta", None)? as f32;

    let (sub, o, key) = entry("full_attention")?;
    let (partial_full, factor_full) = match kind(o).as_str() {
        "default" => (1.0, 1.0),
        "proportional" => {
            let p = num(&sub, &key, "partial_rotary_factor", Some(1.0))?;
            if p > 1.0 {
                return Err(f.bad(&format!("{key}.partial_rotary_factor"), format!("{p} is more than 1")));
            }
            (p as f32, num(&sub, &key, "factor", Some(1.0))? as f32)
        }
        other => {
            return Err(
                f.bad(&format!("{key}.rope_type"), format!("{other:?} is not supported (Gemma 4 uses proportional)"))
            )
        }
    };
    Ok(Rope { theta_full: num(&sub, &key, "rope_theta", None)? as f32, theta_swa, partial_full, factor_full })
}

/// Where a GGUF tensor's values come from.
pub(crate) enum From {
    Tensor(SourceTensor),
    /// Made by the converter (`rope_freqs`).
    Values(Vec<f32>),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(cfg: serde_json::Value) -> Result<ModelConfig> {
        ModelConfig::parse(&cfg.to_string(), Path::new("config.json"))
    }

    /// E2B's published shape: 35 layers (4 sliding : 1 full), 20 sharing KV, PLE 256, the
    /// double-wide MLP on shared layers, in the hub's layout.
    fn e2b() -> serde_json::Value {
        let types: Vec<&str> =
            (0..35).map(|il| if (il + 1) % 5 == 0 { "full_attention" } else { "sliding_attention" }).collect();
        serde_json::json!({
            "architectures": ["Gemma4ForConditionalGeneration"],
            "text_config": {
                "vocab_size": 262144, "hidden_size": 1536, "intermediate_size": 6144,
                "num_hidden_layers": 35, "num_attention_heads": 8, "num_key_value_heads": 1,
                "head_dim": 256, "global_head_dim": 512, "layer_types": types,
                "sliding_window": 512, "num_kv_shared_layers": 20, "use_double_wide_mlp": true,
                "hidden_size_per_layer_input": 256, "vocab_size_per_layer_input": 262144,
                "final_logit_softcapping": 30.0, "max_position_embeddings": 131072,
                "rope_parameters": {
                    "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1e6},
                    "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}
                }
            }
        })
    }

    #[test]
    fn e2b_hub_config() {
        let c = parse(e2b()).unwrap();
        let g = c.gemma4.as_ref().unwrap();
        assert_eq!((g.head_dim_swa, g.head_dim_full, g.n_kv_start()), (256, 512, 15));
        assert_eq!(g.n_ff[14], 6144);
        assert_eq!(g.n_ff[15], 12288);
        assert_eq!(c.final_softcap, Some(30.0));
        let f = g.rope_freqs();
        assert_eq!(f.len(), 256);
        assert_eq!(f.iter().filter(|&&x| x == 1.0).count(), 64);
        let keys = arch_keys(&c);
        let get = |k: &str| keys.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("gemma4.attention.shared_kv_layers"), Some(GgufValue::U32(20)));
        assert_eq!(get("gemma4.attention.head_count_kv"), Some(GgufValue::U32(1)));
    }

    #[test]
    fn global_kv_heads_apply_only_with_k_eq_v() {
        let mut cfg = e2b();
        cfg["text_config"]["num_global_key_value_heads"] = serde_json::json!(2);
        cfg["text_config"]["num_key_value_heads"] = serde_json::json!(4);
        let g = parse(cfg.clone()).unwrap().gemma4.unwrap();
        assert!(g.n_head_kv.iter().all(|&kv| kv == 4), "transformers ignores it without attention_k_eq_v");
        cfg["text_config"]["attention_k_eq_v"] = serde_json::json!(true);
        let g = parse(cfg).unwrap().gemma4.unwrap();
        assert_eq!(&g.n_head_kv[..5], &[4, 4, 4, 4, 2]);
    }

    #[test]
    fn proportional_factor_goes_into_rope_freqs() {
        let mut cfg = e2b();
        cfg["text_config"]["rope_parameters"]["full_attention"]["factor"] = serde_json::json!(8.0);
        let g = parse(cfg).unwrap().gemma4.unwrap();
        let f = g.rope_freqs();
        assert!(f[..64].iter().all(|&x| x == 8.0) && f[64..].iter().all(|&x| x == NO_ROTATION));
    }

    #[test]
    fn missing_softcap_is_written_as_none() {
        let mut cfg = e2b();
        cfg["text_config"].as_object_mut().unwrap().remove("final_logit_softcapping");
        let c = parse(cfg).unwrap();
        let keys = arch_keys(&c);
        let v = keys.iter().find(|(n, _)| n == "gemma4.final_logit_softcapping").map(|(_, v)| v.clone());
        assert_eq!(v, Some(GgufValue::F32(0.0)));
    }
}
