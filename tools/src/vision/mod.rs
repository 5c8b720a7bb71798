//! The vision half of a `Gemma3ForConditionalGeneration` checkpoint → a projector GGUF
//! (`mmproj-*.gguf`) in llama.cpp's layout, which libmtmd (llama.cpp's `tools/mtmd`) loads
//! unchanged: a SigLIP encoder (`vision_tower`) and Gemma 3's projector
//! (`multi_modal_projector`: average pooling, RMS norm, a matrix into the text embedding).
//!
//! Names and layout come from what `clip_model_loader` reads for `PROJECTOR_TYPE_GEMMA3`
//! (`tools/mtmd/clip.cpp`, `clip-impl.h`, llama-cpp-sys-2 0.1.161; the table is
//! [`gemma_gguf::vision::names`]). Every tensor's ggml layout equals the checkpoint's
//! row-major layout, so values are copied in order:
//!
//! | checkpoint (after the tower's prefix) | GGUF | ggml dims |
//! |---|---|---|
//! | `embeddings.patch_embedding.{weight,bias}` | `v.patch_embd.{weight,bias}` | `[p, p, 3, n_embd]` |
//! | `embeddings.position_embedding.weight` | `v.position_embd.weight` | `[n_embd, n_patches]` |
//! | `encoder.layers.N.self_attn.{q,k,v,out}_proj` | `v.blk.N.attn_{q,k,v,out}` | `[n_embd, n_embd]` |
//! | `encoder.layers.N.layer_norm{1,2}` | `v.blk.N.ln{1,2}` | `[n_embd]` |
//! | `encoder.layers.N.mlp.fc1` / `fc2` | `v.blk.N.ffn_up` / `ffn_down` | `[n_embd, n_ff]` / `[n_ff, n_embd]` |
//! | `post_layernorm` | `v.post_ln` | `[n_embd]` |
//! | `mm_soft_emb_norm.weight` (+1: Gemma's RMS norm scales by 1 + w) | `mm.soft_emb_norm.weight` | `[n_embd]` |
//! | `mm_input_projection_weight` (`[n_embd, n_embd_text]`, used as `x · W`) | `mm.input_projection.weight` | `[n_embd_text, n_embd]` |
//!
//! The tower's prefix is the hub's `vision_tower.vision_model.` or transformers 5's
//! `vision_tower.` (what 5.24.0's `save_pretrained` writes), either under `model.`.
//! SigLIP's own layer norms are plain `LayerNorm`s and are written as they are.
mod config;
mod gemma4;

pub use config::VisionConfig;
pub use gemma4::Gemma4VisionConfig;

use crate::checkpoint::{Checkpoint, SourceTensor};
use crate::error::{Error, Result};
use crate::mix::OutType;
use crate::output::check_output;
use crate::pipeline::{self, Planned, RunOptions, Source, Summary};
use gemma_gguf::ggml::Type;
use gemma_gguf::gguf::{GgufArray, GgufValue};
use gemma_gguf::names::general;
use gemma_gguf::vision::names::{self as vn, key, tensor as tn};
use std::path::Path;
use std::time::Instant;

/// `gemma convert --mmproj` options.
#[derive(Clone)]
pub struct MmprojOptions {
    /// The type of the encoder's and projector's matrices: f32, f16 (default, as llama.cpp's
    /// converter writes projectors), bf16 or q8_0. Vectors and the position embedding stay
    /// f32; the patch embedding is f16 unless f32 is asked (ggml's conv2d takes no other type).
    pub ty: OutType,
    pub force: bool,
    pub run: RunOptions,
    pub name: Option<String>,
}

impl Default for MmprojOptions {
    fn default() -> Self {
        MmprojOptions { ty: OutType::Pure(Type::F16), force: false, run: RunOptions::default(), name: None }
    }
}

/// Tower and projector prefixes, hub layout first.
const TOWER_PREFIXES: &[&str] =
    &["vision_tower.vision_model.", "model.vision_tower.vision_model.", "vision_tower.", "model.vision_tower."];
const PROJECTOR_PREFIXES: &[&str] = &["multi_modal_projector.", "model.multi_modal_projector."];

/// Writes the projector file of the checkpoint in `dir` to `output`.
pub fn convert_mmproj(dir: &Path, output: &Path, opts: &MmprojOptions) -> Result<Summary> {
    let t0 = Instant::now();
    let matrix_type = match opts.ty {
        OutType::Pure(t) if [Type::F32, Type::F16, Type::BF16, Type::Q8_0].contains(&t) => t,
        other => {
            return Err(Error::UnknownType {
                name: other.name(),
                known: "f32, f16, bf16, q8_0 (for the projector file)".into(),
            })
        }
    };
    if !dir.is_dir() {
        return Err(Error::NotACheckpoint { dir: dir.to_owned(), what: "not a directory".into() });
    }
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let is_gemma4 = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|j| j.get("architectures")?.get(0)?.as_str().map(|a| a == "Gemma4ForConditionalGeneration"))
        .unwrap_or(false);
    let (sources, metadata, ckpt) = if is_gemma4 {
        let cfg = Gemma4VisionConfig::read(dir)?;
        let ckpt = Checkpoint::open(dir)?;
        let inputs: Vec<&Path> = ckpt.tensors().map(|t| ckpt.shard_path(t)).collect();
        check_output(output, &inputs, opts.force)?;
        let sources = gemma4::map_tensors(&ckpt, &cfg)?;
        let name = display_name(dir, opts, "gemma4 vision");
        (sources, gemma4::metadata(&cfg, &name, opts.ty), ckpt)
    } else {
        let cfg = VisionConfig::read(dir)?;
        let ckpt = Checkpoint::open(dir)?;
        let inputs: Vec<&Path> = ckpt.tensors().map(|t| ckpt.shard_path(t)).collect();
        check_output(output, &inputs, opts.force)?;
        let sources = map_tensors(&ckpt, &cfg)?;
        let name = display_name(dir, opts, "gemma3 vision");
        (sources, metadata(&cfg, &name, opts.ty), ckpt)
    };
    let plan: Vec<Planned> = sources
        .iter()
        .map(|s| {
            let (ty, reason) = choose_type(&s.gguf_name, &s.ne, matrix_type);
            Planned {
                name: s.gguf_name.clone(),
                ne: s.ne.clone(),
                ty,
                reason: reason.into(),
                source_type: s.src.dtype.map_or("?", |d| d.name()).to_owned(),
                copy: false,
            }
        })
        .collect();
    let source = MmprojSource { ckpt: &ckpt, sources: &sources };
    let (path, tensors) = pipeline::run(output, metadata, &plan, &source, &opts.run)?;
    Ok(Summary::of(path, opts.ty, &plan, tensors, t0))
}

fn display_name(dir: &Path, opts: &MmprojOptions, fallback: &str) -> String {
    opts.name.clone().unwrap_or_else(|| {
        dir.canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| format!("{} (vision)", n.to_string_lossy())))
            .unwrap_or_else(|| fallback.into())
    })
}

/// Which type a projector tensor gets, and why.
fn choose_type(name: &str, ne: &[u64], matrix: Type) -> (Type, &'static str) {
    if ne.len() == 1 || name == tn::POSITION_EMBD {
        (Type::F32, "vectors and the position embedding stay f32")
    } else if name == tn::PATCH_EMBD {
        if matrix == Type::F32 {
            (Type::F32, "asked type")
        } else {
            (Type::F16, "conv2d kernel: ggml's im2col takes f16 or f32")
        }
    } else if matrix.block_size() > 1 && !ne[0].is_multiple_of(matrix.block_size() as u64) {
        (Type::F16, "row length not a multiple of the block size")
    } else {
        (matrix, "asked type")
    }
}

/// One GGUF tensor and its source.
struct Mapped {
    gguf_name: String,
    ne: Vec<u64>,
    src: SourceTensor,
    transform: Transform,
}

/// How a tensor's values change on the way.
#[derive(Clone, Copy, PartialEq)]
enum Transform {
    None,
    /// Gemma 3's RMS norm scales by 1 + w; clip.cpp multiplies by the stored weight.
    AddOne,
    /// Gemma 4's patch embedding is a Linear over patches flattened as (row, column,
    /// channel) (`convert_image_to_patches` in image_processing_pil_gemma4.py: transpose to
    /// (ph, pw, p, p, c)); clip.cpp convolves with a kernel `[n_embd][channel][row][column]`.
    PatchToConv {
        patch: usize,
    },
}

/// The projector's tensors in llama.cpp's order, each checked against the config.
fn map_tensors(ckpt: &Checkpoint, c: &VisionConfig) -> Result<Vec<Mapped>> {
    let tower = find_prefix(ckpt, TOWER_PREFIXES, "embeddings.patch_embedding.weight")?;
    let proj = find_prefix(ckpt, PROJECTOR_PREFIXES, "mm_input_projection_weight")?;
    let (e, f, p) = (c.n_embd as u64, c.n_ff as u64, c.patch_size as u64);
    // (GGUF name, checkpoint name, ggml dims)
    let mut wanted: Vec<(String, String, Vec<u64>)> = vec![
        (tn::PATCH_EMBD.into(), format!("{tower}embeddings.patch_embedding.weight"), vec![p, p, 3, e]),
        (tn::PATCH_BIAS.into(), format!("{tower}embeddings.patch_embedding.bias"), vec![e]),
        (
            tn::POSITION_EMBD.into(),
            format!("{tower}embeddings.position_embedding.weight"),
            vec![e, c.n_patches() as u64],
        ),
    ];
    for il in 0..c.n_layer {
        let hf = |s: &str| format!("{tower}encoder.layers.{il}.{s}");
        for (role, src, ne) in [
            (tn::ATTN_Q, "self_attn.q_proj", [e, e]),
            (tn::ATTN_K, "self_attn.k_proj", [e, e]),
            (tn::ATTN_V, "self_attn.v_proj", [e, e]),
            (tn::ATTN_OUT, "self_attn.out_proj", [e, e]),
            (tn::LN1, "layer_norm1", [e, 0]),
            (tn::LN2, "layer_norm2", [e, 0]),
            (tn::FFN_UP, "mlp.fc1", [e, f]),
            (tn::FFN_DOWN, "mlp.fc2", [f, e]),
        ] {
            let w = if ne[1] == 0 { vec![ne[0]] } else { ne.to_vec() };
            wanted.push((tn::block(il, role, "weight"), hf(&format!("{src}.weight")), w));
            wanted.push((tn::block(il, role, "bias"), hf(&format!("{src}.bias")), vec![bias_len(ne)]));
        }
    }
    for s in ["weight", "bias"] {
        wanted.push((format!("{}.{s}", tn::POST_LN), format!("{tower}post_layernorm.{s}"), vec![e]));
    }
    wanted.push((tn::MM_SOFT_EMB_NORM.into(), format!("{proj}mm_soft_emb_norm.weight"), vec![e]));
    wanted.push((
        tn::MM_INPUT_PROJECTION.into(),
        format!("{proj}mm_input_projection_weight"),
        vec![c.n_embd_text as u64, e],
    ));

    let mut out = Vec::with_capacity(wanted.len());
    for (gguf_name, hf_name, ne) in wanted {
        let src = ckpt
            .get(&hf_name)
            .ok_or_else(|| Error::MissingTensor { tensor: hf_name.clone(), what: gguf_name.clone() })?
            .clone();
        if src.dtype.is_none() {
            return Err(ckpt.unsupported(&src));
        }
        // Row-major shape = ggml dims reversed.
        let expect: Vec<usize> = ne.iter().rev().map(|&d| d as usize).collect();
        if src.shape != expect {
            return Err(Error::Shape {
                tensor: hf_name,
                what: format!("shape {:?}, but config.json implies {expect:?}", src.shape),
            });
        }
        let transform = if gguf_name == tn::MM_SOFT_EMB_NORM { Transform::AddOne } else { Transform::None };
        out.push(Mapped { gguf_name, ne, src, transform });
    }
    Ok(out)
}

/// A linear layer's bias has the length of its output (ggml dim 1); a norm's bias its width.
fn bias_len(ne: [u64; 2]) -> u64 {
    if ne[1] == 0 {
        ne[0]
    } else {
        ne[1]
    }
}

fn find_prefix(ckpt: &Checkpoint, prefixes: &[&str], probe: &str) -> Result<String> {
    prefixes.iter().find(|p| ckpt.get(&format!("{p}{probe}")).is_some()).map(|p| p.to_string()).ok_or_else(|| {
        Error::MissingTensor {
            tensor: format!("{}{probe}", prefixes[0]),
            what: format!("the projector file (looked under {})", prefixes.join(", ")),
        }
    })
}

/// The keys every projector file starts with: the general ones (name, `description`, file
/// type) and clip.cpp's vision-encoder flag, `projector_type` and GELU.
pub(super) fn header(name: &str, description: &str, projector_type: &str, ty: OutType) -> Vec<(String, GgufValue)> {
    vec![
        (general::ARCHITECTURE.into(), GgufValue::String(vn::ARCH.into())),
        (general::NAME.into(), GgufValue::String(name.into())),
        (general::DESCRIPTION.into(), GgufValue::String(description.into())),
        (general::QUANTIZED_BY.into(), GgufValue::String(format!("gemma-gguf {}", env!("CARGO_PKG_VERSION")))),
        (general::FILE_TYPE.into(), GgufValue::U32(ty.llama_ftype())),
        (key::HAS_VISION_ENCODER.into(), GgufValue::Bool(true)),
        (key::PROJECTOR_TYPE.into(), GgufValue::String(projector_type.into())),
        (key::USE_GELU.into(), GgufValue::Bool(true)),
    ]
}

/// The keys clip.cpp reads for a Gemma 3 projector.
fn metadata(c: &VisionConfig, name: &str, ty: OutType) -> Vec<(String, GgufValue)> {
    let u = |n: usize| GgufValue::U32(n as u32);
    let f3 = |v: [f32; 3]| GgufValue::Array(GgufArray::F32(v.to_vec()));
    let description = "Gemma 3 vision encoder and projector, converted by gemma-gguf";
    let mut kv = header(name, description, vn::PROJECTOR_GEMMA3, ty);
    kv.extend([
        (key::EMBEDDING_LENGTH.into(), u(c.n_embd)),
        (key::FEED_FORWARD_LENGTH.into(), u(c.n_ff)),
        (key::BLOCK_COUNT.into(), u(c.n_layer)),
        (key::PROJECTION_DIM.into(), u(c.n_embd_text)),
        (key::HEAD_COUNT.into(), u(c.n_head)),
        (key::LAYER_NORM_EPS.into(), GgufValue::F32(c.eps)),
        (key::IMAGE_SIZE.into(), u(c.image_size)),
        (key::PATCH_SIZE.into(), u(c.patch_size)),
        (key::IMAGE_MEAN.into(), f3(c.image_mean)),
        (key::IMAGE_STD.into(), f3(c.image_std)),
        (key::PROJ_SCALE_FACTOR.into(), u(c.pool_kernel())),
    ]);
    kv
}

struct MmprojSource<'a> {
    ckpt: &'a Checkpoint,
    sources: &'a [Mapped],
}

impl Source for MmprojSource<'_> {
    fn read_rows(&self, i: usize, row0: usize, out: &mut [f32]) -> Result<()> {
        let m = &self.sources[i];
        match m.transform {
            Transform::None => self.ckpt.read_f32(&m.src, row0 * m.ne[0] as usize, out)?,
            Transform::AddOne => {
                self.ckpt.read_f32(&m.src, row0 * m.ne[0] as usize, out)?;
                out.iter_mut().for_each(|x| *x += 1.0);
            }
            Transform::PatchToConv { patch: p } => {
                // ggml row r of [p, p, 3, n_embd] = (e, c, y); its p values are x = 0..p.
                let mut src_row = vec![0f32; 3 * p * p];
                for (k, row) in out.chunks_mut(p).enumerate() {
                    let r = row0 + k;
                    let (y, c, e) = (r % p, (r / p) % 3, r / (3 * p));
                    self.ckpt.read_f32(&m.src, e * 3 * p * p, &mut src_row)?;
                    for (x, o) in row.iter_mut().enumerate() {
                        *o = src_row[(y * p + x) * 3 + c];
                    }
                }
            }
        }
        Ok(())
    }

    fn raw_rows(&self, i: usize, _row0: usize, _n: usize) -> Result<Vec<u8>> {
        Err(Error::Shape { tensor: self.sources[i].gguf_name.clone(), what: "raw copy from a checkpoint".into() })
    }

    fn release_rows(&self, i: usize, row0: usize, n: usize) {
        let m = &self.sources[i];
        if m.transform == Transform::None {
            let ne0 = m.ne[0] as usize;
            self.ckpt.release(&m.src, row0 * ne0, n * ne0);
        }
    }
}
