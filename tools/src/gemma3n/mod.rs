//! Gemma 3n (`Gemma3nForCausalLM`, and the text model of `Gemma3nForConditionalGeneration`;
//! its vision and audio towers are skipped with a note) → llama.cpp's `gemma3n` dialect.
//!
//! References (read, not copied): llama.cpp's loader `src/models/gemma3n.cpp`
//! (llama-cpp-sys-2 0.1.161), upstream llama.cpp's converter (`conversion/gemma.py`,
//! `Gemma3NModel`) and transformers 5.24.0's `models/gemma3n/{configuration,modeling}_gemma3n.py`.
//! What differs from Gemma 3:
//!
//! - RMSNorm multiplies by `w` (`Gemma3nRMSNorm`): norms are written as they are (no +1).
//! - `intermediate_size` may be one per layer: written as a per-layer array then.
//! - The AltUp stream projections (`altup_projections.{i}`, `altup_unembed_projections.{i}`)
//!   are stacked into one `[n_embd, n_embd, n_altup − 1]` tensor each.
//! - The per-layer embedding table covers `vocab_size_per_layer_input` tokens (262 144),
//!   fewer than the vocabulary (262 400). transformers gives the tokens above it the table's
//!   row 0 (`Gemma3nTextModel.get_per_layer_inputs`); upstream's converter pads with zero
//!   rows instead. We pad with copies of row 0, so that both libllama and our runtime compute
//!   what transformers does for those tokens.
//! - `activation_sparsity_pattern` (a fraction per layer) becomes
//!   `activation_sparsity_scale`, the normal quantile of it (−∞ for 0), as upstream writes.
//! - Shared KV layers: transformers reads the last non-shared layer of each kind; libllama
//!   hard-codes KV on layers < 20 and layer 18 (sliding) / 19 (full) for the rest. It also
//!   hard-codes 4 streams, PLE 256, LAuReL rank 64 and sparsity on layers < 10. Files of
//!   other shapes (transformers' own test shapes) are converted, since our runtime reads the
//!   keys, with a warning that libllama computes them differently ([`libllama_warnings`]).
mod tensors;

pub(crate) use tensors::{arch_keys, map_tensors};

use crate::config::{Fields, ModelConfig, CAPS};
use crate::error::Result;
use serde_json::{Map, Value};

/// Defaults of transformers' `Gemma3nTextConfig` (configuration_gemma3n.py, 5.24.0) for
/// the fields real configs may leave out (the E4B shape).
pub(crate) const TEXT_DEFAULTS: &[(&str, f64)] = &[
    ("vocab_size", 262_400.0),
    ("hidden_size", 2048.0),
    ("num_hidden_layers", 35.0),
    ("num_attention_heads", 8.0),
    ("num_key_value_heads", 2.0),
    ("head_dim", 256.0),
    ("max_position_embeddings", 32_768.0),
    ("rms_norm_eps", 1e-6),
    ("sliding_window", 512.0),
    ("vocab_size_per_layer_input", 262_144.0),
    ("hidden_size_per_layer_input", 256.0),
    ("altup_active_idx", 0.0),
    ("altup_num_inputs", 4.0),
    ("num_kv_shared_layers", 15.0),
    ("laurel_rank", 64.0),
];

/// Gemma 3n's hyper-parameters beyond the common ones in [`ModelConfig`].
#[derive(Clone, Debug, PartialEq)]
pub struct Gemma3nConfig {
    /// FFN width per layer.
    pub n_ff: Vec<usize>,
    pub n_kv_shared: usize,
    pub n_embd_per_layer: usize,
    pub vocab_per_layer: usize,
    pub n_altup: usize,
    pub altup_active: usize,
    pub laurel_rank: usize,
    /// `activation_sparsity_pattern`: the share of each layer's gate activations dropped.
    pub sparsity: Vec<f64>,
}

impl Gemma3nConfig {
    /// `activation_sparsity_scale`: per layer, the standard-normal quantile of the sparsity
    /// target (−∞ for a dense layer, p = 0), as upstream's converter writes it. Computed in
    /// double precision and rounded to f32, which is what transformers uses at run time
    /// (`Normal(0, 1).icdf` of a float32 tensor: 1.6448536 for 0.95, measured by
    /// scripts/make_tiny_gemma3n.py); libllama ignores the key and uses 1.6448533, two f32
    /// steps lower (models.h `f_sparsity_std_mul`).
    pub fn sparsity_scale(&self) -> Vec<f32> {
        self.sparsity.iter().map(|&p| if p == 0.0 { f32::NEG_INFINITY } else { ppnd16(p) as f32 }).collect()
    }
}

/// Φ⁻¹(p), the standard normal quantile, for 0 < p < 1: Wichura's algorithm AS 241
/// (PPND16, Applied Statistics 37 (1988) 477–484), relative error about 1e-16.
// The coefficients as AS 241 publishes them, digits beyond f64's included.
#[allow(clippy::excessive_precision)]
fn ppnd16(p: f64) -> f64 {
    let poly = |c: &[f64], r: f64| c.iter().rev().fold(0.0, |acc, &k| acc * r + k);
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        #[allow(clippy::excessive_precision)]
        const A: [f64; 8] = [
            3.387_132_872_796_366_5,
            133.141_667_891_784_38,
            1_971.590_950_306_551_4,
            13_731.693_765_509_461,
            45_921.953_931_549_87,
            67_265.770_927_008_7,
            33_430.575_583_588_13,
            2_509.080_928_730_122_7,
        ];
        #[allow(clippy::excessive_precision)]
        const B: [f64; 8] = [
            1.0,
            42.313_330_701_600_91,
            687.187_007_492_057_9,
            5_394.196_021_424_751,
            21_213.794_301_586_597,
            39_307.895_800_092_71,
            28_729.085_735_721_943,
            5_226.495_278_852_545,
        ];
        return q * poly(&A, r) / poly(&B, r);
    }
    let r = if q < 0.0 { p } else { 1.0 - p };
    let r = (-r.ln()).sqrt();
    let v = if r <= 5.0 {
        let r = r - 1.6;
        #[allow(clippy::excessive_precision)]
        const C: [f64; 8] = [
            1.423_437_110_749_683_5,
            4.630_337_846_156_546,
            5.769_497_221_460_691,
            3.647_848_324_763_204_5,
            1.270_458_252_452_368_4,
            0.241_780_725_177_450_6,
            0.022_723_844_989_269_184,
            7.745_450_142_783_414e-4,
        ];
        #[allow(clippy::excessive_precision)]
        const D: [f64; 8] = [
            1.0,
            2.053_191_626_637_759,
            1.676_384_830_183_803_8,
            0.689_767_334_985_1,
            0.148_103_976_427_480_08,
            0.015_198_666_563_616_457,
            5.475_938_084_995_345e-4,
            1.050_750_071_644_416_9e-9,
        ];
        poly(&C, r) / poly(&D, r)
    } else {
        let r = r - 5.0;
        #[allow(clippy::excessive_precision)]
        const E: [f64; 8] = [
            6.657_904_643_501_103,
            5.463_784_911_164_114,
            1.784_826_539_917_291_3,
            0.296_560_571_828_504_9,
            0.026_532_189_526_576_124,
            0.001_242_660_947_388_078_4,
            2.711_555_568_743_487_6e-5,
            2.010_334_399_292_288_1e-7,
        ];
        #[allow(clippy::excessive_precision)]
        const F: [f64; 8] = [
            1.0,
            0.599_832_206_555_888,
            0.136_929_880_922_735_8,
            0.014_875_361_290_850_615,
            7.868_691_311_456_133e-4,
            1.846_318_317_510_054_8e-5,
            1.421_511_758_316_446e-7,
            2.043_126_292_280_233_5e-15,
        ];
        poly(&E, r) / poly(&F, r)
    };
    if q < 0.0 {
        -v
    } else {
        v
    }
}

/// The 3n fields of a text config parsed by [`ModelConfig::parse`]; checks what llama.cpp's
/// `gemma3n` graph and transformers compute differently and refuses those.
pub(crate) fn complete_config(f: &Fields, top: &Map<String, Value>, mut cfg: ModelConfig) -> Result<ModelConfig> {
    let n_layer = cfg.n_layer;
    let n_ff: Vec<usize> = match f.get("intermediate_size") {
        Some(Value::Array(a)) => {
            if a.len() != n_layer {
                return Err(f.bad("intermediate_size", format!("{} entries for {n_layer} layers", a.len())));
            }
            a.iter().map(|v| f.uint_value("intermediate_size", v, 1, CAPS.embd * 16)).collect::<Result<_>>()?
        }
        Some(v) => vec![f.uint_value("intermediate_size", v, 1, CAPS.embd * 16)?; n_layer],
        None => vec![16_384; n_layer],
    };
    let n_kv_shared = f.uint("num_kv_shared_layers", 0, CAPS.layers)?;
    if n_kv_shared >= n_layer {
        return Err(f.bad("num_kv_shared_layers", format!("{n_kv_shared} of {n_layer} layers: none would keep its KV")));
    }
    let swa = &cfg.swa_layers;
    let start = n_layer - n_kv_shared;
    for il in start..n_layer {
        if !(0..start).any(|j| swa[j] == swa[il]) {
            return Err(f.bad("num_kv_shared_layers", format!("shared layer {il} has no earlier layer of its kind")));
        }
    }
    let n_altup = f.uint("altup_num_inputs", 2, 16)?;
    let altup_active = f.uint("altup_active_idx", 0, 15)?;
    if altup_active >= n_altup {
        return Err(f.bad("altup_active_idx", format!("{altup_active} is not below altup_num_inputs ({n_altup})")));
    }
    let sparsity = match f.get("activation_sparsity_pattern") {
        None => (0..n_layer).map(|il| if n_layer > 10 && il < 10 { 0.95 } else { 0.0 }).collect(),
        Some(Value::Array(a)) if a.len() == n_layer => a
            .iter()
            .map(|v| match v.as_f64() {
                Some(p) if (0.0..1.0).contains(&p) => Ok(p),
                _ => Err(f.bad("activation_sparsity_pattern", format!("{v} is not a fraction in [0, 1)"))),
            })
            .collect::<Result<_>>()?,
        Some(v) => return Err(f.bad("activation_sparsity_pattern", format!("expected {n_layer} fractions, found {v}"))),
    };
    refuse_unsupported(f, top)?;
    if cfg.rope_linear_factor.is_some() {
        return Err(f.bad("rope_scaling", "rope scaling is not part of llama.cpp's gemma3n"));
    }
    let g = Gemma3nConfig {
        n_ff,
        n_kv_shared,
        n_embd_per_layer: f.uint("hidden_size_per_layer_input", 1, CAPS.embd)?,
        vocab_per_layer: f.uint("vocab_size_per_layer_input", 1, CAPS.vocab)?,
        n_altup,
        altup_active,
        laurel_rank: f.uint("laurel_rank", 1, CAPS.embd)?,
        sparsity,
    };
    cfg.n_ff = g.n_ff.iter().copied().max().unwrap_or(0);
    cfg.gemma3n = Some(g);
    Ok(cfg)
}

/// Where libllama, which reads none of 3n's own keys, would run the file differently from
/// its keys (src/models/gemma3n.cpp, models.h, llama-hparams.h).
pub(crate) fn libllama_warnings(c: &ModelConfig) -> Vec<String> {
    let Some(g) = c.gemma3n.as_ref() else { return Vec::new() };
    let mut w = Vec::new();
    let mut differs = |what: String| {
        w.push(format!("libllama runs gemma3n files with {what}: it will compute this file differently (our runtime follows the file's keys)"))
    };
    if (g.n_altup, g.altup_active, g.n_embd_per_layer, g.laurel_rank) != (4, 0, 256, 64) {
        differs(format!(
            "4 AltUp streams (active 0), per-layer embeddings of 256 and LAuReL rank 64; this model has {} (active {}), {} and {}",
            g.n_altup, g.altup_active, g.n_embd_per_layer, g.laurel_rank
        ));
    }
    let n_kv = c.n_layer - g.n_kv_shared;
    let libllama_kv = c.n_layer.min(20);
    let sources_ok = n_kv < 2 || (!c.swa_layers[n_kv - 1] && c.swa_layers[n_kv - 2]);
    if n_kv != libllama_kv || (g.n_kv_shared > 0 && !sources_ok) {
        differs(format!("KV on layers below 20, shared ones reading layers 18 (sliding) and 19 (full); this model has {n_kv} layers with their own KV"));
    }
    let sparse: Vec<bool> = g.sparsity.iter().map(|&p| p > 0.0).collect();
    if sparse.iter().enumerate().any(|(il, &s)| s != (il < 10)) || g.sparsity.iter().any(|&p| p != 0.0 && p != 0.95) {
        differs("activation sparsity 0.95 on layers below 10 and none after".into());
    }
    if c.final_softcap != Some(30.0) {
        differs("a final soft-cap of 30".into());
    }
    w
}

/// Settings transformers supports that llama.cpp's gemma3n graph does not compute.
fn refuse_unsupported(f: &Fields, top: &Map<String, Value>) -> Result<()> {
    // src/models/gemma3n.cpp: gelu (tanh approximation) on the gate.
    if let Some(act) = f.str("hidden_activation")? {
        if act != "gelu_pytorch_tanh" {
            return Err(f.bad("hidden_activation", format!("{act:?}: llama.cpp's gemma3n computes gelu_pytorch_tanh")));
        }
    }
    // gemma3n.cpp always scales the corrected active stream by `altup_correct_scale`.
    if !f.bool("altup_correct_scale", true)? {
        return Err(f.bad("altup_correct_scale", "false: llama.cpp's gemma3n always applies the correction scale"));
    }
    if f.bool("attention_bias", false)? {
        return Err(f.bad("attention_bias", "attention biases are not part of llama.cpp's gemma3n"));
    }
    let top_fields = Fields { obj: top, path: f.path, prefix: "", defaults: &[] };
    if !f.bool("tie_word_embeddings", true)? || !top_fields.bool("tie_word_embeddings", true)? {
        return Err(f.bad("tie_word_embeddings", "false: an untied output projection is not supported"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use gemma_gguf::gguf::GgufValue;
    use std::path::Path;

    /// E2B's published text config (30 layers, 4 sliding : 1 full, 10 sharing KV).
    fn e2b() -> serde_json::Value {
        serde_json::json!({
            "architectures": ["Gemma3nForConditionalGeneration"],
            "text_config": {
                "hidden_size": 2048, "intermediate_size": vec![8192; 30], "num_hidden_layers": 30,
                "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 256,
                "num_kv_shared_layers": 10, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
                "sliding_window": 512, "vocab_size": 262400, "vocab_size_per_layer_input": 262144,
                "hidden_size_per_layer_input": 256, "altup_num_inputs": 4, "laurel_rank": 64,
                "activation_sparsity_pattern": [0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95,
                    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                "final_logit_softcapping": 30.0
            },
            "vision_config": {}, "audio_config": {}
        })
    }

    #[test]
    fn e2b_config_and_keys() {
        let c = ModelConfig::parse(&e2b().to_string(), Path::new("config.json")).unwrap();
        let g = c.gemma3n.as_ref().unwrap();
        assert_eq!((c.n_ff, g.n_kv_shared, g.n_altup, g.n_embd_per_layer), (8192, 10, 4, 256));
        assert_eq!(c.swa_layers.iter().filter(|&&s| !s).count(), 6);
        let scale = g.sparsity_scale();
        // transformers' float32 icdf(0.95) (golden.json of tests/data/tiny/gemma3n-e2b).
        assert_eq!(scale[0].to_bits(), 1.644_853_6_f32.to_bits());
        assert_eq!(scale[10], f32::NEG_INFINITY);
        let keys = arch_keys(&c);
        let get = |k: &str| keys.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("gemma3n.attention.shared_kv_layers"), Some(GgufValue::U32(10)));
        // One width for all layers: one number (libllama reads both forms).
        assert_eq!(get("gemma3n.feed_forward_length"), Some(GgufValue::U32(8192)));
        assert_eq!(get("gemma3n.altup.num_inputs"), Some(GgufValue::U32(4)));
    }

    #[test]
    fn quantiles() {
        // Φ⁻¹ at a few points (double precision reference values).
        for (p, z) in [
            (0.5, 0.0),
            (0.975, 1.959_963_984_540_054),
            (0.999, 3.090_232_306_167_813_5),
            (1e-10, -6.361_340_902_404_056),
        ] {
            assert!((ppnd16(p) - z).abs() < 1e-12, "Φ⁻¹({p}) = {} ≠ {z}", ppnd16(p));
        }
    }

    #[test]
    fn refusals_name_the_field() {
        let mut cfg = e2b();
        cfg["text_config"]["altup_correct_scale"] = serde_json::json!(false);
        let e = ModelConfig::parse(&cfg.to_string(), Path::new("config.json")).unwrap_err().to_string();
        assert!(e.contains("altup_correct_scale"), "{e}");
        let mut cfg = e2b();
        cfg["text_config"]["activation_sparsity_pattern"] = serde_json::json!([0.95]);
        let e = ModelConfig::parse(&cfg.to_string(), Path::new("config.json")).unwrap_err().to_string();
        assert!(e.contains("activation_sparsity_pattern"), "{e}");
        let mut cfg = e2b();
        cfg["text_config"]["altup_active_idx"] = serde_json::json!(4);
        let e = ModelConfig::parse(&cfg.to_string(), Path::new("config.json")).unwrap_err().to_string();
        assert!(e.contains("altup_active_idx"), "{e}");
    }
}
