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
//!
//! `config`: config.json → [`Gemma4Config`]; `tensors`: the tensor map and the keys.
mod config;
mod tensors;

pub(crate) use config::parse_config;
pub(crate) use tensors::{arch_keys, map_tensors, From};

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

/// Gemma 4's hyper-parameters beyond the common ones in [`crate::config::ModelConfig`].
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
    /// transformers' `use_bidirectional_attention == "vision"`: an image's tokens attend to
    /// each other both ways on sliding layers (Gemma4Model.forward).
    pub bidirectional_vision: bool,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::error::Result;
    use gemma_gguf::gguf::GgufValue;
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
