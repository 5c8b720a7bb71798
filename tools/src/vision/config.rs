//! `config.json` (`vision_config`, `mm_tokens_per_image`, `text_config.hidden_size`) and
//! `preprocessor_config.json` → the projector's hyper-parameters, each checked with a named
//! error.
use crate::config::Fields;
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// Far above SigLIP-So400m (1152 wide, 27 layers, 896 px) and low enough that nothing
/// downstream overflows.
const MAX_EMBD: u64 = 1 << 15;
const MAX_LAYERS: u64 = 256;
const MAX_IMAGE_SIZE: u64 = 8192;

/// Defaults of transformers' `SiglipVisionConfig` (models/siglip/configuration_siglip.py,
/// 5.24.0) for the fields the hub's Gemma 3 configs leave out.
const SIGLIP_DEFAULTS: &[(&str, f64)] = &[("layer_norm_eps", 1e-6), ("num_channels", 3.0)];

/// `Gemma3Config.mm_tokens_per_image`'s default (configuration_gemma3.py, 5.24.0).
const DEFAULT_MM_TOKENS: f64 = 256.0;

/// The projector's hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct VisionConfig {
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub eps: f32,
    pub image_size: usize,
    pub patch_size: usize,
    /// Image tokens per image after pooling (a square number).
    pub mm_tokens: usize,
    /// The language model's embedding width.
    pub n_embd_text: usize,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

impl VisionConfig {
    /// Patches per side of the encoder's grid.
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    pub fn n_patches(&self) -> usize {
        self.patches_per_side() * self.patches_per_side()
    }

    /// The average-pooling kernel: patches per side / tokens per side (4 for Gemma 3).
    pub fn pool_kernel(&self) -> usize {
        self.patches_per_side() / (self.mm_tokens as f64).sqrt() as usize
    }

    /// Reads `dir/config.json` and, when present, `dir/preprocessor_config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let mut cfg = Self::parse(&text, &path)?;
        let pre = dir.join("preprocessor_config.json");
        if pre.is_file() {
            let text = std::fs::read_to_string(&pre).map_err(|e| Error::io(&pre, e))?;
            cfg.read_preprocessor(&text, &pre)?;
        }
        Ok(cfg)
    }

    /// Parses a `Gemma3ForConditionalGeneration` `config.json`.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = |what: String| Error::BadConfig { path: path.to_owned(), what };
        let json: Value = serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let top = json.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
        let arch = top.get("architectures").and_then(|a| a.get(0)).and_then(|a| a.as_str()).unwrap_or("");
        if arch != "Gemma3ForConditionalGeneration" {
            return Err(bad(format!(
                "`architectures`: {arch:?}; a projector file is made from a Gemma3ForConditionalGeneration checkpoint (Gemma 3 4B, 12B, 27B)"
            )));
        }
        let obj = |key: &str| -> Result<&Map<String, Value>> {
            top.get(key).and_then(|v| v.as_object()).ok_or_else(|| bad(format!("`{key}`: missing or not an object")))
        };
        let v = Fields { obj: obj("vision_config")?, path, prefix: "vision_config.", defaults: SIGLIP_DEFAULTS };
        let t = Fields { obj: obj("text_config")?, path, prefix: "text_config.", defaults: &[] };
        let g = Fields { obj: top, path, prefix: "", defaults: &[("mm_tokens_per_image", DEFAULT_MM_TOKENS)] };

        let act = v.str("hidden_act")?.unwrap_or("gelu_pytorch_tanh");
        if act != "gelu_pytorch_tanh" {
            // clip.cpp's FFN_GELU is ggml_gelu, the tanh approximation.
            return Err(v.bad("hidden_act", format!("{act:?}; SigLIP in Gemma 3 uses gelu_pytorch_tanh")));
        }
        if v.uint("num_channels", 1, 16)? != 3 {
            return Err(v.bad("num_channels", "must be 3 (RGB)"));
        }
        let n_embd = v.uint("hidden_size", 1, MAX_EMBD)?;
        let n_head = v.uint("num_attention_heads", 1, 1024)?;
        if n_embd % n_head != 0 {
            return Err(v.bad("num_attention_heads", format!("hidden_size {n_embd} is not a multiple of {n_head}")));
        }
        let image_size = v.uint("image_size", 1, MAX_IMAGE_SIZE)?;
        let patch_size = v.uint("patch_size", 1, MAX_IMAGE_SIZE)?;
        if image_size % patch_size != 0 {
            return Err(v.bad("patch_size", format!("image_size {image_size} is not a multiple of {patch_size}")));
        }
        let mm_tokens = g.uint("mm_tokens_per_image", 1, 1 << 20)?;
        let side = (mm_tokens as f64).sqrt() as usize;
        let patches = image_size / patch_size;
        if side * side != mm_tokens || patches % side != 0 {
            return Err(g.bad(
                "mm_tokens_per_image",
                format!("{mm_tokens} must be a square whose side divides the {patches} patches per side"),
            ));
        }
        let eps = v.opt_positive("layer_norm_eps")?.unwrap_or(1e-6) as f32;
        Ok(VisionConfig {
            n_embd,
            n_ff: v.uint("intermediate_size", 1, MAX_EMBD * 16)?,
            n_layer: v.uint("num_hidden_layers", 1, MAX_LAYERS)?,
            n_head,
            eps,
            image_size,
            patch_size,
            mm_tokens,
            n_embd_text: t.uint("hidden_size", 1, 1 << 17)?,
            // Gemma3ImageProcessor's defaults (IMAGENET_STANDARD_MEAN/STD = 0.5, transformers
            // 5.24.0 image_processing_gemma3.py), as the hub's preprocessor_config.json has.
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
        })
    }

    /// `preprocessor_config.json`: mean and std; the rest of what the runtime assumes
    /// (rescale 1/255, bilinear, RGB, no pan-and-scan by default) is checked, not silently
    /// taken.
    pub fn read_preprocessor(&mut self, text: &str, path: &Path) -> Result<()> {
        let bad = |what: String| Error::BadConfig { path: path.to_owned(), what };
        let json: Value = serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let obj = json.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
        let f = Fields { obj, path, prefix: "", defaults: &[] };
        let triple = |key: &str, out: &mut [f32; 3]| -> Result<()> {
            let Some(v) = f.get(key) else { return Ok(()) };
            let a = v.as_array().filter(|a| a.len() == 3).ok_or_else(|| f.bad(key, "expected 3 numbers"))?;
            for (o, x) in out.iter_mut().zip(a) {
                let x =
                    x.as_f64().filter(|x| x.is_finite()).ok_or_else(|| f.bad(key, format!("{x} is not a number")))?;
                *o = x as f32;
            }
            Ok(())
        };
        triple("image_mean", &mut self.image_mean)?;
        triple("image_std", &mut self.image_std)?;
        if self.image_std.iter().any(|&s| s <= 0.0) {
            return Err(f.bad("image_std", "must be > 0"));
        }
        if let Some(r) = f.get("rescale_factor") {
            let r = f.positive("rescale_factor", r)?;
            if (r - 1.0 / 255.0).abs() > 1e-9 {
                return Err(f.bad("rescale_factor", format!("{r}; llama.cpp and this runtime scale pixels by 1/255")));
            }
        }
        if let Some(r) = f.get("resample") {
            if r.as_u64() != Some(2) {
                return Err(f.bad("resample", format!("{r}; Gemma 3 resizes bilinearly (2)")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// google/gemma-3-4b-it's config.json, its vision part as published.
    fn gemma3_4b() -> Value {
        serde_json::json!({
            "architectures": ["Gemma3ForConditionalGeneration"],
            "mm_tokens_per_image": 256,
            "text_config": {"hidden_size": 2560},
            "vision_config": {
                "hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
                "model_type": "siglip_vision_model", "num_attention_heads": 16,
                "num_hidden_layers": 27, "patch_size": 14, "vision_use_head": false
            }
        })
    }

    fn parse(v: Value) -> Result<VisionConfig> {
        VisionConfig::parse(&v.to_string(), Path::new("config.json"))
    }

    #[test]
    fn gemma3_4b_shape() {
        let c = parse(gemma3_4b()).unwrap();
        assert_eq!((c.patches_per_side(), c.n_patches(), c.pool_kernel()), (64, 4096, 4));
        assert_eq!((c.n_embd_text, c.eps), (2560, 1e-6));
    }

    #[test]
    fn bad_configs_name_the_key() {
        let cases: &[(&str, Value, &str)] = &[
            ("tokens not square", serde_json::json!({"mm_tokens_per_image": 200}), "mm_tokens_per_image"),
            ("side does not divide", serde_json::json!({"mm_tokens_per_image": 9}), "mm_tokens_per_image"),
        ];
        for (what, patch, key) in cases {
            let mut v = gemma3_4b();
            for (k, x) in patch.as_object().unwrap() {
                v[k] = x.clone();
            }
            let e = parse(v).unwrap_err().to_string();
            assert!(e.contains(key), "{what}: {e}");
        }
        let vision_cases: &[(&str, Value, &str)] = &[
            ("patch does not divide", serde_json::json!({"patch_size": 15}), "patch_size"),
            ("heads do not divide", serde_json::json!({"num_attention_heads": 7}), "num_attention_heads"),
            ("exact gelu", serde_json::json!({"hidden_act": "gelu"}), "hidden_act"),
            ("string size", serde_json::json!({"hidden_size": "1152"}), "hidden_size"),
            ("zero layers", serde_json::json!({"num_hidden_layers": 0}), "num_hidden_layers"),
            ("grey", serde_json::json!({"num_channels": 1}), "num_channels"),
        ];
        for (what, patch, key) in vision_cases {
            let mut v = gemma3_4b();
            for (k, x) in patch.as_object().unwrap() {
                v["vision_config"][k] = x.clone();
            }
            let e = parse(v).unwrap_err().to_string();
            assert!(e.contains(key), "{what}: {e}");
        }
        let mut v = gemma3_4b();
        v["architectures"] = serde_json::json!(["Gemma3ForCausalLM"]);
        assert!(parse(v).unwrap_err().to_string().contains("Gemma3ForConditionalGeneration"));
    }

    #[test]
    fn preprocessor_is_checked() {
        let mut c = parse(gemma3_4b()).unwrap();
        let p = Path::new("preprocessor_config.json");
        c.read_preprocessor(r#"{"image_mean": [0.1, 0.2, 0.3], "image_std": [0.5, 0.5, 0.5]}"#, p).unwrap();
        assert_eq!(c.image_mean, [0.1, 0.2, 0.3]);
        assert!(c.read_preprocessor(r#"{"image_std": [0.5, 0, 0.5]}"#, p).is_err());
        assert!(c.read_preprocessor(r#"{"rescale_factor": 1.0}"#, p).is_err());
        assert!(c.read_preprocessor(r#"{"resample": 3}"#, p).is_err());
        assert!(c.read_preprocessor(r#"{"image_mean": [0.5, 0.5]}"#, p).is_err());
    }
}
