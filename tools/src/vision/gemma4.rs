//! The vision half of a `Gemma4ForConditionalGeneration` checkpoint → llama.cpp's `gemma4v`
//! projector file.
//!
//! Names and layout are what `clip_model_loader` reads for `PROJECTOR_TYPE_GEMMA4V`
//! (`tools/mtmd/clip.cpp`: the generic vision loader, then the GEMMA4V case that loads
//! `mm.input_projection.weight`, optional `v.std_bias`/`v.std_scale` and, for every
//! `*.weight`, optional scalars `*.input_min/max`, `*.output_min/max`; `clip-impl.h` for
//! the `TN_*` names), and what `models/gemma4v.cpp` computes with them. Source modules are
//! transformers 5.24.0's `models/gemma4/modeling_gemma4.py`.
//!
//! | checkpoint (after `vision_tower.` / `model.vision_tower.`) | GGUF | note |
//! |---|---|---|
//! | `patch_embedder.input_proj.weight` `[n_embd, p·p·3]` | `v.patch_embd.weight`, ggml `[p, p, 3, n_embd]` | permuted: a Linear over (row, col, channel) patches → a conv kernel (channel, row, col) |
//! | `patch_embedder.position_embedding_table` `[2, n_pos, n_embd]` | `v.position_embd.weight`, ggml `[n_embd, n_pos, 2]` | x table then y table |
//! | `encoder.layers.N.self_attn.{q,k,v,o}_proj.linear.weight` | `v.blk.N.attn_{q,k,v,out}.weight` | |
//! | `…self_attn.{q,k}_norm.weight` `[head_dim]` | `v.blk.N.attn_{q,k}_norm.weight` | per head |
//! | `…input_layernorm` / `post_attention_layernorm` | `v.blk.N.ln1` / `attn_post_norm` | |
//! | `…pre_feedforward_layernorm` / `post_feedforward_layernorm` | `v.blk.N.ln2` / `ffn_post_norm` | |
//! | `…mlp.{gate,up,down}_proj.linear.weight` | `v.blk.N.ffn_{gate,up,down}.weight` | |
//! | `….{input,output}_{min,max}` (clipped linears) | `v.blk.N.<role>.{input,output}_{min,max}` | f32 scalars `[1]` |
//! | `std_bias`, `std_scale` (`standardize`) | `v.std_bias`, `v.std_scale` | |
//! | `embed_vision.embedding_projection.weight` `[n_embd_text, n_embd]` | `mm.input_projection.weight` | |
//!
//! Gemma 4's RMS norms multiply by w (`Gemma4RMSNorm`, no 1 + w) as clip.cpp's do, so every
//! norm is copied unchanged; v_norm and the embedder's pre-projection norm have no weight.
use super::Mapped;
use crate::checkpoint::Checkpoint;
use crate::config::Fields;
use crate::error::{Error, Result};
use crate::mix::OutType;
use gemma_gguf::gguf::{GgufArray, GgufValue};
use gemma_gguf::vision::names::{self as vn, key, tensor as tn};
use serde_json::{Map, Value};
use std::path::Path;

const MAX_EMBD: u64 = 1 << 15;

/// Tower prefixes: transformers 5's `save_pretrained` (`model.vision_tower.`) and the bare one.
const TOWER_PREFIXES: &[&str] = &["model.vision_tower.", "vision_tower."];
const EMBEDDER_PREFIXES: &[&str] = &["model.embed_vision.", "embed_vision."];

/// `Gemma4VisionConfig` fields the converter needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Gemma4VisionConfig {
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub head_dim: usize,
    pub eps: f32,
    pub patch_size: usize,
    pub pool_kernel: usize,
    pub n_pos: usize,
    pub rope_theta: f32,
    pub clipped: bool,
    pub standardize: bool,
    pub n_embd_text: usize,
    /// The processor's token budget per image (`max_soft_tokens`, preprocessor_config.json).
    pub max_soft_tokens: usize,
}

impl Gemma4VisionConfig {
    /// Parses a `Gemma4ForConditionalGeneration` `config.json`. Defaults are
    /// `Gemma4VisionConfig`'s (configuration_gemma4.py, 5.24.0) for absent fields.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = |what: String| Error::BadConfig { path: path.to_owned(), what };
        let json: Value = serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let top = json.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
        let obj = |k: &str| -> Result<&Map<String, Value>> {
            top.get(k).and_then(|v| v.as_object()).ok_or_else(|| bad(format!("`{k}`: missing or not an object")))
        };
        const DEFAULTS: &[(&str, f64)] = &[
            ("hidden_size", 768.0),
            ("intermediate_size", 3072.0),
            ("num_hidden_layers", 16.0),
            ("num_attention_heads", 12.0),
            ("head_dim", 64.0),
            ("rms_norm_eps", 1e-6),
            ("pooling_kernel_size", 3.0),
            ("patch_size", 16.0),
            ("position_embedding_size", 10240.0),
        ];
        let v = Fields { obj: obj("vision_config")?, path, prefix: "vision_config.", defaults: DEFAULTS };
        let t = Fields { obj: obj("text_config")?, path, prefix: "text_config.", defaults: &[] };
        let act = v.str("hidden_activation")?.unwrap_or("gelu_pytorch_tanh");
        if act != "gelu_pytorch_tanh" {
            // clip.cpp's FFN_GELU (clip.use_gelu) is ggml's tanh-approximated GELU.
            return Err(v.bad("hidden_activation", format!("{act:?}; Gemma 4's vision MLP uses gelu_pytorch_tanh")));
        }
        let n_embd = v.uint("hidden_size", 1, MAX_EMBD)?;
        let n_head = v.uint("num_attention_heads", 1, 1024)?;
        let head_dim = v.uint("head_dim", 2, 4096)?;
        if n_head * head_dim != n_embd {
            return Err(v.bad("head_dim", format!("{n_head} heads × {head_dim} ≠ hidden_size {n_embd}")));
        }
        if head_dim % 4 != 0 {
            // Two axes, each rotated over half of the head in (neox) pairs.
            return Err(v.bad("head_dim", format!("{head_dim} is not a multiple of 4 (2-D RoPE)")));
        }
        if let Some(kv) = v.opt_uint("num_key_value_heads", 1, 1024)? {
            if kv != n_head {
                return Err(v.bad("num_key_value_heads", format!("{kv} ≠ num_attention_heads {n_head}")));
            }
        }
        let rope_theta = match v.get("rope_parameters") {
            None => 100.0,
            Some(r) => {
                let ty = r.get("rope_type").and_then(|x| x.as_str()).unwrap_or("axial");
                if ty != "axial" {
                    return Err(v.bad("rope_parameters", format!("rope_type {ty:?}; only axial")));
                }
                r.get("rope_theta").and_then(|x| x.as_f64()).unwrap_or(100.0)
            }
        };
        // clip.cpp hard-codes rope_theta = 100 for GEMMA4V (load_hparams); another base would
        // be silently ignored by libmtmd.
        if rope_theta != 100.0 {
            return Err(v.bad("rope_parameters", format!("rope_theta {rope_theta}; llama.cpp fixes it at 100")));
        }
        Ok(Gemma4VisionConfig {
            n_embd,
            n_ff: v.uint("intermediate_size", 1, MAX_EMBD * 16)?,
            n_layer: v.uint("num_hidden_layers", 1, 256)?,
            n_head,
            head_dim,
            eps: v.opt_positive("rms_norm_eps")?.unwrap_or(1e-6) as f32,
            patch_size: v.uint("patch_size", 1, 1024)?,
            pool_kernel: v.uint("pooling_kernel_size", 1, 64)?,
            n_pos: v.uint("position_embedding_size", 1, 1 << 20)?,
            rope_theta: rope_theta as f32,
            clipped: v.bool("use_clipped_linears", false)?,
            standardize: v.bool("standardize", false)?,
            n_embd_text: t.uint("hidden_size", 1, 1 << 17)?,
            max_soft_tokens: DEFAULT_SOFT_TOKENS,
        })
    }

    /// `dir/config.json` and, when present, `dir/preprocessor_config.json`.
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

    /// `preprocessor_config.json` (`Gemma4ImageProcessor`): the token budget; what the runtime
    /// assumes (patch and kernel as the model's, rescale 1/255, no normalisation, bicubic)
    /// is checked, not silently taken.
    pub fn read_preprocessor(&mut self, text: &str, path: &Path) -> Result<()> {
        let bad = |what: String| Error::BadConfig { path: path.to_owned(), what };
        let json: Value = serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let obj = json.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
        let f = Fields { obj, path, prefix: "", defaults: &[] };
        if let Some(n) = f.opt_uint("max_soft_tokens", 1, 1 << 20)? {
            // _SUPPORTED_SOFT_TOKENS in image_processing_pil_gemma4.py
            if ![70, 140, 280, 560, 1120].contains(&n) {
                return Err(f.bad("max_soft_tokens", format!("{n}; Gemma 4 takes 70, 140, 280, 560 or 1120")));
            }
            self.max_soft_tokens = n;
        }
        for (k, want) in [("patch_size", self.patch_size), ("pooling_kernel_size", self.pool_kernel)] {
            if let Some(n) = f.opt_uint(k, 1, 1 << 20)? {
                if n != want {
                    return Err(f.bad(k, format!("{n}, but the vision config has {want}")));
                }
            }
        }
        if f.bool("do_normalize", false)? {
            return Err(f.bad("do_normalize", "true; Gemma 4's processor does not normalise (the model scales)"));
        }
        if let Some(r) = f.get("rescale_factor") {
            let r = f.positive("rescale_factor", r)?;
            if (r - 1.0 / 255.0).abs() > 1e-9 {
                return Err(f.bad("rescale_factor", format!("{r}; pixels are scaled by 1/255")));
            }
        }
        if let Some(r) = f.get("resample") {
            if r.as_u64() != Some(3) {
                return Err(f.bad("resample", format!("{r}; Gemma 4 resizes bicubically (3)")));
            }
        }
        Ok(())
    }
}

/// `Gemma4ImageProcessor.max_soft_tokens`'s default (image_processing_pil_gemma4.py, 5.24.0).
const DEFAULT_SOFT_TOKENS: usize = 280;

fn find_prefix(ckpt: &Checkpoint, prefixes: &[&str], probe: &str) -> Result<String> {
    prefixes.iter().find(|p| ckpt.get(&format!("{p}{probe}")).is_some()).map(|p| p.to_string()).ok_or_else(|| {
        Error::MissingTensor {
            tensor: format!("{}{probe}", prefixes[0]),
            what: format!("the gemma4v projector file (looked under {})", prefixes.join(", ")),
        }
    })
}

/// (GGUF name, checkpoint name, ggml dims, checkpoint shape (empty: a 0-d scalar), transform)
type Wanted = (String, String, Vec<u64>, Vec<usize>, super::Transform);

/// The projector's tensors, each checked against the config.
pub(super) fn map_tensors(ckpt: &Checkpoint, c: &Gemma4VisionConfig) -> Result<Vec<Mapped>> {
    let tower = find_prefix(ckpt, TOWER_PREFIXES, "patch_embedder.input_proj.weight")?;
    let emb = find_prefix(ckpt, EMBEDDER_PREFIXES, "embedding_projection.weight")?;
    let (e, f, p, d) = (c.n_embd as u64, c.n_ff as u64, c.patch_size as u64, c.head_dim as u64);
    let mut wanted: Vec<Wanted> = vec![
        (
            tn::PATCH_EMBD.into(),
            format!("{tower}patch_embedder.input_proj.weight"),
            vec![p, p, 3, e],
            vec![e as usize, (3 * p * p) as usize],
            super::Transform::PatchToConv { patch: p as usize },
        ),
        (
            tn::POSITION_EMBD.into(),
            format!("{tower}patch_embedder.position_embedding_table"),
            vec![e, c.n_pos as u64, 2],
            vec![2, c.n_pos, c.n_embd],
            super::Transform::None,
        ),
    ];
    let plain = |ne: Vec<u64>| {
        let shape = ne.iter().rev().map(|&x| x as usize).collect();
        (ne, shape)
    };
    for il in 0..c.n_layer {
        let hf = |s: &str| format!("{tower}encoder.layers.{il}.{s}");
        let linears: [(&str, &str, [u64; 2]); 7] = [
            (tn::ATTN_Q, "self_attn.q_proj", [e, e]),
            (tn::ATTN_K, "self_attn.k_proj", [e, e]),
            (tn::ATTN_V, "self_attn.v_proj", [e, e]),
            (tn::ATTN_OUT, "self_attn.o_proj", [e, e]),
            (tn::FFN_GATE, "mlp.gate_proj", [e, f]),
            (tn::FFN_UP, "mlp.up_proj", [e, f]),
            (tn::FFN_DOWN, "mlp.down_proj", [f, e]),
        ];
        for (role, src, ne) in linears {
            let (ne, shape) = plain(ne.to_vec());
            wanted.push((
                tn::block(il, role, "weight"),
                hf(&format!("{src}.linear.weight")),
                ne,
                shape,
                super::Transform::None,
            ));
            if c.clipped {
                for s in ["input_min", "input_max", "output_min", "output_max"] {
                    // A 0-d tensor in the checkpoint; a 1-element vector in the GGUF
                    // (clip.cpp's get_scalar wants exactly one element).
                    wanted.push((
                        tn::block(il, role, s),
                        hf(&format!("{src}.{s}")),
                        vec![1],
                        vec![],
                        super::Transform::None,
                    ));
                }
            }
        }
        for (role, src, n) in [
            (tn::ATTN_Q_NORM, "self_attn.q_norm", d),
            (tn::ATTN_K_NORM, "self_attn.k_norm", d),
            (tn::LN1, "input_layernorm", e),
            (tn::ATTN_POST_NORM, "post_attention_layernorm", e),
            (tn::LN2, "pre_feedforward_layernorm", e),
            (tn::FFN_POST_NORM, "post_feedforward_layernorm", e),
        ] {
            wanted.push((
                tn::block(il, role, "weight"),
                hf(&format!("{src}.weight")),
                vec![n],
                vec![n as usize],
                super::Transform::None,
            ));
        }
    }
    if c.standardize {
        wanted.push((
            tn::STD_BIAS.into(),
            format!("{tower}std_bias"),
            vec![e],
            vec![e as usize],
            super::Transform::None,
        ));
        wanted.push((
            tn::STD_SCALE.into(),
            format!("{tower}std_scale"),
            vec![e],
            vec![e as usize],
            super::Transform::None,
        ));
    }
    wanted.push((
        tn::MM_INPUT_PROJECTION.into(),
        format!("{emb}embedding_projection.weight"),
        vec![e, c.n_embd_text as u64],
        vec![c.n_embd_text, e as usize],
        super::Transform::None,
    ));

    let mut out = Vec::with_capacity(wanted.len());
    for (gguf_name, hf_name, ne, expect, transform) in wanted {
        let src = ckpt
            .get(&hf_name)
            .ok_or_else(|| Error::MissingTensor { tensor: hf_name.clone(), what: gguf_name.clone() })?
            .clone();
        if src.dtype.is_none() {
            return Err(ckpt.unsupported(&src));
        }
        let scalar_ok = expect.is_empty() && src.shape == [1];
        if src.shape != expect && !scalar_ok {
            return Err(Error::Shape {
                tensor: hf_name,
                what: format!("shape {:?}, but config.json implies {expect:?}", src.shape),
            });
        }
        out.push(Mapped { gguf_name, ne, src, transform });
    }
    Ok(out)
}

/// The keys clip.cpp reads for a `gemma4v` projector (`load_hparams`: the generic vision
/// keys, then `clip.vision.projector.scale_factor` for the pooling kernel; rope base 100,
/// bicubic resize and the 70..1120 token limits are fixed there).
pub(super) fn metadata(c: &Gemma4VisionConfig, name: &str, ty: OutType) -> Vec<(String, GgufValue)> {
    let u = |n: usize| GgufValue::U32(n as u32);
    let f3 = |v: [f32; 3]| GgufValue::Array(GgufArray::F32(v.to_vec()));
    let description = "Gemma 4 vision encoder and embedder, converted by gemma-gguf";
    let mut kv = super::header(name, description, vn::PROJECTOR_GEMMA4V, ty);
    kv.extend([
        (key::EMBEDDING_LENGTH.into(), u(c.n_embd)),
        (key::FEED_FORWARD_LENGTH.into(), u(c.n_ff)),
        (key::BLOCK_COUNT.into(), u(c.n_layer)),
        (key::PROJECTION_DIM.into(), u(c.n_embd_text)),
        (key::HEAD_COUNT.into(), u(c.n_head)),
        (key::HEAD_COUNT_KV.into(), u(c.n_head)),
        (key::LAYER_NORM_EPS.into(), GgufValue::F32(c.eps)),
        // Not used by gemma4v's dynamic-size preprocessing; clip.cpp reads it for every
        // vision projector (warm-up size): one pooled cell.
        (key::IMAGE_SIZE.into(), u(c.patch_size * c.pool_kernel)),
        (key::PATCH_SIZE.into(), u(c.patch_size)),
        // Gemma4ImageProcessor: rescale by 1/255 and no normalisation (do_normalize false);
        // the graph maps [0, 1] to [-1, 1] itself.
        (key::IMAGE_MEAN.into(), f3([0.0; 3])),
        (key::IMAGE_STD.into(), f3([1.0; 3])),
        (key::PROJ_SCALE_FACTOR.into(), u(c.pool_kernel)),
        (key::IMAGE_MAX_PIXELS.into(), u(c.max_soft_tokens * (c.patch_size * c.pool_kernel).pow(2))),
    ]);
    kv
}
