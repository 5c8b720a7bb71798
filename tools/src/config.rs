//! `config.json` → the hyper-parameters a GGUF needs, for Gemma 1, 2, 3 and 4 (Gemma 4's
//! own fields: [`crate::gemma4::Gemma4Config`]).
//!
//! Both layouts that occur in real checkpoints are read (GEMMA.md): the older one
//! (`rope_theta`, `rope_local_base_freq`, `rope_scaling`, `sliding_window_pattern`) and the
//! newer one (`rope_parameters`, flat or keyed by layer type, and `layer_types`). Values
//! must have their JSON type (`"2048"` is refused), be finite (serde_json refuses the
//! `NaN`/`Infinity` literals) and lie in a sane range; each refusal names the key.
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The GGUF architectures the converter writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Gemma,
    Gemma2,
    Gemma3,
    Gemma4,
    Gemma3n,
}

impl Arch {
    /// `general.architecture` (llama.cpp's `src/llama-arch.cpp`).
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Gemma => "gemma",
            Arch::Gemma2 => "gemma2",
            Arch::Gemma3 => "gemma3",
            Arch::Gemma4 => "gemma4",
            Arch::Gemma3n => "gemma3n",
        }
    }

    /// The period of llama.cpp's default sliding-window pattern: layer `il` is local iff
    /// `il % period < period - 1` (`load_swa_pattern(ml, 2)` in src/models/gemma2.cpp,
    /// `load_swa_pattern(ml, 6)` in gemma3.cpp, llama-cpp-sys-2 0.1.161). Gemma 1 has none.
    pub fn default_swa_period(self) -> Option<usize> {
        match self {
            Arch::Gemma => None,
            Arch::Gemma2 => Some(2),
            Arch::Gemma3 | Arch::Gemma4 => Some(6),
            // src/models/gemma3n.cpp: `load_swa_pattern(ml, 5)`.
            Arch::Gemma3n => Some(5),
        }
    }
}

/// What the GGUF needs from `config.json`.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub arch: Arch,
    /// `architectures[0]`, e.g. `Gemma3ForCausalLM`.
    pub hf_architecture: String,
    /// Prefix of the text model's tensors: `model.`, `language_model.model.` or
    /// `model.language_model.` (the two multimodal layouts).
    pub tensor_prefix: String,
    pub vocab_size: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub rms_eps: f32,
    pub context_length: usize,
    /// Rope base of the global (full-attention) layers; all layers for Gemma 1.
    pub rope_base: f32,
    /// Rope base of the local layers (Gemma 2 uses the global one).
    pub rope_base_swa: Option<f32>,
    /// Linear rope scaling factor of the global layers (Gemma 3 4B and up).
    pub rope_linear_factor: Option<f32>,
    pub sliding_window: Option<usize>,
    /// Per layer: is it a local (sliding-window) layer.
    pub swa_layers: Vec<bool>,
    pub attn_softcap: Option<f32>,
    pub final_softcap: Option<f32>,
    pub query_pre_attn_scalar: Option<f64>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    /// `_name_or_path` when it names a hub repository.
    pub source_repo: Option<String>,
    /// Gemma 4's own hyper-parameters (per-layer head dims and counts, PLE, MoE, KV sharing).
    pub gemma4: Option<crate::gemma4::Gemma4Config>,
    /// Gemma 3n's own hyper-parameters (AltUp, LAuReL, PLE, sparsity, KV sharing).
    pub gemma3n: Option<crate::gemma3n::Gemma3nConfig>,
}

// Sanity caps: far above any Gemma (262 144 vocabulary, 5376 hidden, 62 layers) and low
// enough that nothing downstream overflows or tries to allocate absurd sizes.
const MAX_VOCAB: u64 = 1 << 22;
const MAX_EMBD: u64 = 1 << 17;
const MAX_LAYERS: u64 = 4096;
const MAX_HEADS: u64 = 4096;
const MAX_HEAD_DIM: u64 = 8192;
const MAX_CONTEXT: u64 = 1 << 24;
pub(crate) const CAPS: Caps = Caps {
    vocab: MAX_VOCAB,
    embd: MAX_EMBD,
    layers: MAX_LAYERS,
    heads: MAX_HEADS,
    head_dim: MAX_HEAD_DIM,
    context: MAX_CONTEXT,
};

/// The sanity caps, for the per-architecture parsers.
pub(crate) struct Caps {
    pub vocab: u64,
    pub embd: u64,
    pub layers: u64,
    pub heads: u64,
    pub head_dim: u64,
    pub context: u64,
}

/// Defaults of transformers' `Gemma3TextConfig` (models/gemma3/configuration_gemma3.py,
/// transformers 5.24.0), used only inside a `Gemma3ForConditionalGeneration`'s
/// `text_config`, which real checkpoints (Gemma 3 4B, 12B, 27B) write sparsely.
const GEMMA3_TEXT_DEFAULTS: &[(&str, f64)] = &[
    ("vocab_size", 262_208.0),
    ("num_attention_heads", 8.0),
    ("num_key_value_heads", 4.0),
    ("head_dim", 256.0),
    ("rms_norm_eps", 1e-6),
    ("max_position_embeddings", 131_072.0),
    ("query_pre_attn_scalar", 256.0),
];

/// One JSON object of config.json, read field by field with typed, named errors.
pub(crate) struct Fields<'a> {
    pub obj: &'a Map<String, Value>,
    pub path: &'a Path,
    pub prefix: &'a str,
    pub defaults: &'a [(&'a str, f64)],
}

impl Fields<'_> {
    /// A boolean field (`default` when absent or null); `"true"` or `1` are refused.
    pub(crate) fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.bad(key, format!("expected true or false, found {v}"))),
        }
    }

    pub(crate) fn bad(&self, key: &str, what: impl std::fmt::Display) -> Error {
        Error::BadConfig { path: self.path.to_owned(), what: format!("`{}{key}`: {what}", self.prefix) }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn default(&self, key: &str) -> Option<f64> {
        self.defaults.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    pub(crate) fn uint(&self, key: &str, min: u64, max: u64) -> Result<usize> {
        match self.get(key) {
            Some(v) => self.uint_value(key, v, min, max),
            None => match self.default(key) {
                Some(d) => Ok(d as usize),
                None => Err(self.bad(key, "missing")),
            },
        }
    }

    pub(crate) fn uint_value(&self, key: &str, v: &Value, min: u64, max: u64) -> Result<usize> {
        let n = v.as_u64().ok_or_else(|| self.bad(key, format!("expected a whole number, found {v}")))?;
        if n < min || n > max {
            return Err(self.bad(key, format!("{n} is out of range ({min}..={max})")));
        }
        Ok(n as usize)
    }

    pub(crate) fn opt_uint(&self, key: &str, min: u64, max: u64) -> Result<Option<usize>> {
        self.get(key).map(|v| self.uint_value(key, v, min, max)).transpose()
    }

    pub(crate) fn positive(&self, key: &str, v: &Value) -> Result<f64> {
        let x = v.as_f64().ok_or_else(|| self.bad(key, format!("expected a number, found {v}")))?;
        if !(x.is_finite() && x > 0.0) {
            return Err(self.bad(key, format!("{x} must be a finite number > 0")));
        }
        Ok(x)
    }

    pub(crate) fn opt_positive(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            Some(v) => self.positive(key, v).map(Some),
            None => Ok(self.default(key)),
        }
    }

    pub(crate) fn str(&self, key: &str) -> Result<Option<&str>> {
        self.get(key)
            .map(|v| v.as_str().ok_or_else(|| self.bad(key, format!("expected a string, found {v}"))))
            .transpose()
    }
}

impl ModelConfig {
    /// Reads `dir/config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let mut cfg = Self::parse(&text, &path)?;
        // generation_config.json: special ids config.json leaves out (its eos may be a list,
        // e.g. [1, 106] for <eos> and <end_of_turn>; the first is the end of text).
        let gen = dir.join("generation_config.json");
        if gen.is_file() {
            let text = std::fs::read_to_string(&gen).map_err(|e| Error::io(&gen, e))?;
            let json: Value = serde_json::from_str(&text)
                .map_err(|e| Error::BadConfig { path: gen.clone(), what: format!("not valid JSON: {e}") })?;
            let id = |key: &str| {
                match json.get(key) {
                    Some(Value::Array(a)) => a.first().and_then(|v| v.as_u64()),
                    Some(v) => v.as_u64(),
                    None => None,
                }
                .filter(|&n| n < MAX_VOCAB)
                .map(|n| n as u32)
            };
            cfg.bos_token_id = cfg.bos_token_id.or(id("bos_token_id"));
            cfg.eos_token_id = cfg.eos_token_id.or(id("eos_token_id"));
            cfg.pad_token_id = cfg.pad_token_id.or(id("pad_token_id"));
        }
        Ok(cfg)
    }

    /// Parses the text of a `config.json` (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = |what: String| Error::BadConfig { path: path.to_owned(), what };
        let json: Value = serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let top = json.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
        let hf_architecture = top
            .get("architectures")
            .and_then(|a| a.as_array())
            .and_then(|a| a.first())
            .and_then(|a| a.as_str())
            .map(str::to_owned);
        let model_type = top.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
        let name = hf_architecture.clone().unwrap_or_else(|| model_type.to_owned());

        let (arch, obj, prefix, tensor_prefix, defaults): (_, _, _, _, &[(&str, f64)]) = match name.as_str() {
            "GemmaForCausalLM" | "gemma" => (Arch::Gemma, top, "", "model.", &[]),
            "Gemma2ForCausalLM" | "gemma2" => (Arch::Gemma2, top, "", "model.", &[]),
            "Gemma3ForCausalLM" | "gemma3_text" => (Arch::Gemma3, top, "", "model.", &[]),
            "Gemma4ForCausalLM" | "gemma4_text" => {
                let f = Fields { obj: top, path, prefix: "", defaults: crate::gemma4::TEXT_DEFAULTS };
                return crate::gemma4::parse_config(&f, top, name, "model.");
            }
            "Gemma4ForConditionalGeneration" | "gemma4" => {
                let text = top.get("text_config").and_then(|v| v.as_object()).ok_or_else(|| {
                    bad("`text_config`: missing (a Gemma4ForConditionalGeneration config has one)".into())
                })?;
                let f = Fields { obj: text, path, prefix: "text_config.", defaults: crate::gemma4::TEXT_DEFAULTS };
                return crate::gemma4::parse_config(&f, top, name, "");
            }
            "Gemma3nForCausalLM" | "gemma3n_text" => (Arch::Gemma3n, top, "", "model.", crate::gemma3n::TEXT_DEFAULTS),
            "Gemma3nForConditionalGeneration" | "gemma3n" => {
                let text = top.get("text_config").and_then(|v| v.as_object()).ok_or_else(|| {
                    bad("`text_config`: missing (a Gemma3nForConditionalGeneration config has one)".into())
                })?;
                (Arch::Gemma3n, text, "text_config.", "", crate::gemma3n::TEXT_DEFAULTS)
            }
            "Gemma3ForConditionalGeneration" | "gemma3" => {
                let text = top.get("text_config").and_then(|v| v.as_object()).ok_or_else(|| {
                    bad("`text_config`: missing (a Gemma3ForConditionalGeneration config has one)".into())
                })?;
                // Older transformers saved `language_model.model.*`, newer `model.language_model.*`;
                // the converter looks for both (see `convert::source_name`).
                (Arch::Gemma3, text, "text_config.", "", GEMMA3_TEXT_DEFAULTS)
            }
            other => return Err(Error::UnsupportedArchitecture { arch: other.to_owned() }),
        };
        let f = Fields { obj, path, prefix, defaults };

        let n_embd = f.uint("hidden_size", 1, MAX_EMBD)?;
        let n_layer = f.uint("num_hidden_layers", 1, MAX_LAYERS)?;
        let n_head = f.uint("num_attention_heads", 1, MAX_HEADS)?;
        let n_head_kv = f.opt_uint("num_key_value_heads", 1, MAX_HEADS)?.unwrap_or(n_head);
        if n_head % n_head_kv != 0 {
            return Err(
                f.bad("num_key_value_heads", format!("{n_head} attention heads are not a multiple of {n_head_kv}"))
            );
        }
        let head_dim = match f.opt_uint("head_dim", 1, MAX_HEAD_DIM)? {
            Some(d) => d,
            None if f.default("head_dim").is_some() => f.uint("head_dim", 1, MAX_HEAD_DIM)?,
            None if n_embd % n_head == 0 => n_embd / n_head,
            None => return Err(f.bad("head_dim", "missing, and hidden_size is not a multiple of num_attention_heads")),
        };
        if head_dim % 2 != 0 {
            return Err(f.bad("head_dim", format!("{head_dim} is odd; rope needs pairs")));
        }
        let rms_eps = f.opt_positive("rms_norm_eps")?.unwrap_or(1e-6) as f32;
        let (rope_base, rope_base_swa, rope_linear_factor) = rope(&f, arch)?;
        let swa_layers = swa_layers(&f, arch, n_layer)?;
        let sliding_window = match arch {
            Arch::Gemma => None,
            // Gemma 2's default, as llama.cpp's (src/models/gemma2.cpp: n_swa = 4096).
            Arch::Gemma2 => Some(f.opt_uint("sliding_window", 1, MAX_CONTEXT)?.unwrap_or(4096)),
            Arch::Gemma3 | Arch::Gemma4 | Arch::Gemma3n => Some(f.uint("sliding_window", 1, MAX_CONTEXT)?),
        };
        let softcap =
            |key: &str| -> Result<Option<f32>> { f.get(key).map(|v| f.positive(key, v).map(|x| x as f32)).transpose() };
        let token_id = |key: &str| token_id(&f, top, key);
        let source_repo = source_repo(top);

        let cfg = ModelConfig {
            arch,
            hf_architecture: name.clone(),
            tensor_prefix: tensor_prefix.to_owned(),
            vocab_size: f.uint("vocab_size", 1, MAX_VOCAB)?,
            n_embd,
            // Gemma 3n may give one per layer: its own parser reads it (the largest here).
            n_ff: if arch == Arch::Gemma3n { 0 } else { f.uint("intermediate_size", 1, MAX_EMBD * 16)? },
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            rms_eps,
            context_length: f.opt_uint("max_position_embeddings", 1, MAX_CONTEXT)?.unwrap_or(8192),
            rope_base,
            rope_base_swa,
            rope_linear_factor,
            sliding_window,
            swa_layers,
            attn_softcap: if arch == Arch::Gemma2 { softcap("attn_logit_softcapping")? } else { None },
            final_softcap: match arch {
                Arch::Gemma => None,
                // Gemma3nTextConfig's default is 30 (an explicit null: none).
                Arch::Gemma3n if !f.obj.contains_key("final_logit_softcapping") => Some(30.0),
                _ => softcap("final_logit_softcapping")?,
            },
            query_pre_attn_scalar: f.opt_positive("query_pre_attn_scalar")?,
            bos_token_id: token_id("bos_token_id")?,
            eos_token_id: token_id("eos_token_id")?,
            pad_token_id: token_id("pad_token_id")?,
            source_repo,
            gemma4: None,
            gemma3n: None,
        };
        let _ = f.str("model_type")?;
        if arch == Arch::Gemma3n {
            return crate::gemma3n::complete_config(&f, top, cfg);
        }
        Ok(cfg)
    }

    /// The attention scale llama.cpp derives (there is no GGUF key for it): 1/√(n_embd/n_head)
    /// for the 27B models (Gemma 2 with 46 layers, Gemma 3 with 62), 1/√head_dim otherwise
    /// (src/models/gemma2.cpp, gemma3.cpp, llama-cpp-sys-2 0.1.161). Returns the
    /// `query_pre_attn_scalar` that corresponds.
    pub fn llama_cpp_query_scalar(&self) -> f64 {
        let is_27b = matches!((self.arch, self.n_layer), (Arch::Gemma2, 46) | (Arch::Gemma3, 62));
        if is_27b {
            (self.n_embd / self.n_head) as f64
        } else {
            self.head_dim as f64
        }
    }

    /// Whether the layer pattern differs from llama.cpp's default for the architecture
    /// (then the converter writes it as a bool array).
    pub fn swa_pattern_is_default(&self) -> bool {
        match self.arch.default_swa_period() {
            None => self.swa_layers.iter().all(|l| !l),
            Some(p) => self.swa_layers.iter().enumerate().all(|(il, &l)| l == (il % p < p - 1)),
        }
    }
}

/// A special token id from the model's object or the top level (a list: its first entry).
pub(crate) fn token_id(f: &Fields, top: &Map<String, Value>, key: &str) -> Result<Option<u32>> {
    match f.get(key).or_else(|| top.get(key).filter(|v| !v.is_null())) {
        None => Ok(None),
        // generation configs sometimes list several: the first is the main one.
        Some(Value::Array(a)) => match a.first() {
            Some(v) => f.uint_value(key, v, 0, MAX_VOCAB).map(|n| Some(n as u32)),
            None => Ok(None),
        },
        Some(v) => f.uint_value(key, v, 0, MAX_VOCAB).map(|n| Some(n as u32)),
    }
}

/// `_name_or_path` when it names a hub repository (`owner/name`).
pub(crate) fn source_repo(top: &Map<String, Value>) -> Option<String> {
    top.get("_name_or_path")
        .and_then(|v| v.as_str())
        .filter(|s| s.split('/').count() == 2 && !s.starts_with('/') && !s.starts_with('.'))
        .map(str::to_owned)
}

/// (global base, local base, linear factor of the global layers).
fn rope(f: &Fields, arch: Arch) -> Result<(f32, Option<f32>, Option<f32>)> {
    // Newer layout: `rope_parameters`, flat or keyed by layer type.
    if let Some(params) = f.get("rope_parameters") {
        let obj = params.as_object().ok_or_else(|| f.bad("rope_parameters", "expected an object"))?;
        let read = |o: &Map<String, Value>, what: &str| -> Result<(f32, Option<f32>)> {
            let key = format!("rope_parameters.{what}rope_theta");
            let theta = o.get("rope_theta").ok_or_else(|| f.bad(&key, "missing"))?;
            let theta = f.positive(&key, theta)? as f32;
            Ok((theta, linear_factor(f, o, &format!("rope_parameters.{what}"))?))
        };
        if let Some(full) = obj.get("full_attention") {
            let full = full.as_object().ok_or_else(|| f.bad("rope_parameters.full_attention", "expected an object"))?;
            let (base, factor) = read(full, "full_attention.")?;
            let local = match obj.get("sliding_attention") {
                Some(l) => {
                    let l = l
                        .as_object()
                        .ok_or_else(|| f.bad("rope_parameters.sliding_attention", "expected an object"))?;
                    Some(read(l, "sliding_attention.")?.0)
                }
                None => None,
            };
            return Ok((base, local, factor));
        }
        let (base, factor) = read(obj, "")?;
        let local = if matches!(arch, Arch::Gemma3 | Arch::Gemma3n) { Some(10_000.0) } else { None };
        return Ok((base, local, factor));
    }
    // Older layout.
    let base = match f.get("rope_theta") {
        Some(v) => f.positive("rope_theta", v)? as f32,
        // transformers' defaults: 10 000 for Gemma 1/2, 1 000 000 for Gemma 3.
        None if matches!(arch, Arch::Gemma3 | Arch::Gemma3n) => 1_000_000.0,
        None => 10_000.0,
    };
    let local = match (arch, f.get("rope_local_base_freq")) {
        (Arch::Gemma3 | Arch::Gemma3n, Some(v)) => Some(f.positive("rope_local_base_freq", v)? as f32),
        // Gemma3TextConfig's default, and llama.cpp's when the key is absent.
        (Arch::Gemma3 | Arch::Gemma3n, None) => Some(10_000.0),
        _ => None,
    };
    let factor = match f.get("rope_scaling") {
        Some(Value::Object(o)) => linear_factor(f, o, "rope_scaling.")?,
        Some(other) => return Err(f.bad("rope_scaling", format!("expected an object, found {other}"))),
        None => None,
    };
    Ok((base, local, factor))
}

/// The factor of a linear rope scaling block; other scaling types are refused.
fn linear_factor(f: &Fields, o: &Map<String, Value>, what: &str) -> Result<Option<f32>> {
    let ty = o.get("rope_type").or_else(|| o.get("type")).and_then(|v| v.as_str()).unwrap_or("default");
    match ty {
        "default" => Ok(None),
        "linear" => {
            let key = format!("{what}factor");
            let v = o.get("factor").ok_or_else(|| f.bad(&key, "missing"))?;
            let x = f.positive(&key, v)? as f32;
            Ok(if x == 1.0 { None } else { Some(x) })
        }
        other => {
            Err(f.bad(&format!("{what}rope_type"), format!("{other:?} scaling is not supported (Gemma uses linear)")))
        }
    }
}

pub(crate) fn swa_layers(f: &Fields, arch: Arch, n_layer: usize) -> Result<Vec<bool>> {
    let Some(period) = arch.default_swa_period() else {
        return Ok(vec![false; n_layer]);
    };
    if let Some(types) = f.get("layer_types") {
        let types = types.as_array().ok_or_else(|| f.bad("layer_types", "expected an array"))?;
        if types.len() != n_layer {
            return Err(f.bad("layer_types", format!("{} entries for {n_layer} layers", types.len())));
        }
        return types
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                _ => Err(f.bad("layer_types", format!("unknown layer type {t}"))),
            })
            .collect();
    }
    let period = f.opt_uint("sliding_window_pattern", 1, MAX_LAYERS)?.unwrap_or(period);
    Ok((0..n_layer).map(|il| il % period < period - 1).collect())
}

/// For messages: the `config.json` of `dir`.
pub fn config_path(dir: &Path) -> PathBuf {
    dir.join("config.json")
}
