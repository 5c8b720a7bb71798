//! Gemma 4's config.json: both layouts (the hub's `global_head_dim` /
//! `num_global_key_value_heads`, transformers 5's `per_layer_config`), checked.
use super::{Gemma4Config, Moe, MAX_EXPERTS};
use crate::config::{self, Arch, Fields, ModelConfig, CAPS};
use crate::error::Result;
use serde_json::{Map, Value};

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
        bidirectional_vision: f.str("use_bidirectional_attention")? == Some("vision"),
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
        gemma3n: None,
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
