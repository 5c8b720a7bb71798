//! Hugging Face checkpoint → GGUF, in llama.cpp's dialect: the same architecture names, keys,
//! tensor names and transforms as llama.cpp's `convert_hf_to_gguf.py` (norms +1 for Gemma
//! 1-3, as they are for Gemma 4; the embedding trimmed to the tokenizer's vocabulary;
//! `lm_head` dropped because Gemma ties it), so llama.cpp loads the result unchanged.
//! Gemma 4's mapping lives in [`crate::gemma4`].
use crate::checkpoint::{Checkpoint, SourceTensor};
use crate::config::{Arch, ModelConfig};
use crate::error::{Error, Result};
use crate::gemma3n;
use crate::gemma4::{self, From};
use crate::mix::{OutType, Override, Planner};
use crate::output::check_output;
use crate::pipeline::{self, Planned, RunOptions, Source, Summary};
use crate::vocab::Vocab;
use gemma_gguf::gguf::{GgufArray, GgufValue};
use gemma_gguf::names::{arch_key, general, llm, tensor as tn, tokenizer as tk};
use std::path::Path;
use std::time::Instant;

/// `gemma convert` options.
#[derive(Clone)]
pub struct ConvertOptions {
    pub out_type: OutType,
    pub overrides: Vec<Override>,
    /// Replace an existing output file.
    pub force: bool,
    pub run: RunOptions,
    /// `general.name`; default: from the directory name.
    pub name: Option<String>,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            out_type: OutType::parse(crate::mix::DEFAULT_TYPE).expect("default type parses"),
            overrides: Vec::new(),
            force: false,
            run: RunOptions::default(),
            name: None,
        }
    }
}

/// Converts the Hugging Face checkpoint in `dir` to `output`.
pub fn convert_hf(dir: &Path, output: &Path, opts: &ConvertOptions) -> Result<Summary> {
    let t0 = Instant::now();
    if !dir.is_dir() {
        return Err(Error::NotACheckpoint { dir: dir.to_owned(), what: "not a directory".into() });
    }
    let config = ModelConfig::read(dir)?;
    let vocab = Vocab::read(dir, (config.bos_token_id, config.eos_token_id, config.pad_token_id), config.arch)?;
    let ckpt = Checkpoint::open(dir)?;
    let inputs: Vec<&Path> = ckpt.tensors().map(|t| ckpt.shard_path(t)).collect();
    check_output(output, &inputs, opts.force)?;

    let mut warnings = gemma3n::libllama_warnings(&config);
    let (sources, skipped) = map_tensors(&ckpt, &config, vocab.len())?;
    let n_expert = config.gemma4.as_ref().and_then(|g| g.moe.as_ref()).map_or(0, |m| m.n_expert);
    let mut planner = Planner::new(
        sources.iter().map(|s| s.gguf_name.as_str()),
        opts.out_type,
        &opts.overrides,
        config.n_layer,
        n_expert,
    );
    let plan: Vec<Planned> = sources
        .iter()
        .map(|s| {
            let choice = planner.choose(&s.gguf_name, &s.ne);
            let source_type = match &s.src {
                From::Tensor(t) => t.dtype.map_or("?", |d| d.name()),
                From::Values(_) => "made",
                From::Stacked(t) => t[0].dtype.map_or("?", |d| d.name()),
                From::PadRows(t) => t.dtype.map_or("?", |d| d.name()),
            };
            Planned {
                name: s.gguf_name.clone(),
                ne: s.ne.clone(),
                ty: choice.ty,
                reason: choice.reason,
                source_type: source_type.to_owned(),
                copy: false,
            }
        })
        .collect();
    if let Some(q) = config.query_pre_attn_scalar {
        let llama = config.llama_cpp_query_scalar();
        if (q - llama).abs() > 1e-6 {
            warnings.push(format!(
                "config.json has query_pre_attn_scalar {q}, but llama.cpp (and this runtime) derive {llama} for a {} model with {} layers: attention will be scaled differently from the original",
                config.arch.gguf_name(),
                config.n_layer
            ));
        }
    }
    let name = opts.name.clone().unwrap_or_else(|| {
        dir.canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "gemma".into())
    });
    let metadata = metadata(&config, &vocab, &name, opts.out_type)?;
    let source = HfSource { ckpt: &ckpt, sources: &sources };
    let (path, tensors) = pipeline::run(output, metadata, &plan, &source, &opts.run)?;
    Ok(Summary { warnings, skipped, ..Summary::of(path, opts.out_type, &plan, tensors, t0) })
}

/// A planned tensor's source.
struct Mapped {
    gguf_name: String,
    ne: Vec<u64>,
    src: From,
    /// Gemma 1-3's RMSNorm multiplies by 1 + w; GGUF stores 1 + w.
    add_one: bool,
}

/// The GGUF tensors of `config.arch`, in llama.cpp's per-block order, with their sources.
fn map_tensors(ckpt: &Checkpoint, config: &ModelConfig, n_vocab: usize) -> Result<(Vec<Mapped>, Vec<String>)> {
    let prefix = text_prefix(ckpt, config)?;
    let out = if config.arch == Arch::Gemma4 {
        gemma4::map_tensors(ckpt, config, &prefix, n_vocab)?
            .into_iter()
            .map(|m| Mapped { gguf_name: m.gguf_name, ne: m.ne, src: m.src, add_one: false })
            .collect()
    } else if config.arch == Arch::Gemma3n {
        gemma3n::map_tensors(ckpt, config, &prefix, n_vocab)?
            .into_iter()
            .map(|(gguf_name, ne, src)| Mapped { gguf_name, ne, src, add_one: false })
            .collect()
    } else {
        map_gemma123(ckpt, config, &prefix, n_vocab)?
    };
    let skipped = unused_tensors(ckpt, &out, &prefix)?;
    Ok((out, skipped))
}

/// Gemma 1, 2 and 3.
fn map_gemma123(ckpt: &Checkpoint, config: &ModelConfig, prefix: &str, n_vocab: usize) -> Result<Vec<Mapped>> {
    let (e, f, l) = (config.n_embd as u64, config.n_ff as u64, config.n_layer);
    let (q, kv, hd) =
        ((config.n_head * config.head_dim) as u64, (config.n_head_kv * config.head_dim) as u64, config.head_dim as u64);
    // (GGUF role, HF name after `layers.N.`, GGUF dims [ne0, ne1]; ne1 = 0 for 1-D).
    let mut block: Vec<(&str, &str, [u64; 2])> = vec![(tn::ATTN_NORM, "input_layernorm", [e, 0])];
    block.extend([
        (tn::ATTN_Q, "self_attn.q_proj", [e, q]),
        (tn::ATTN_K, "self_attn.k_proj", [e, kv]),
        (tn::ATTN_V, "self_attn.v_proj", [e, kv]),
    ]);
    if config.arch == Arch::Gemma3 {
        block.extend([(tn::ATTN_Q_NORM, "self_attn.q_norm", [hd, 0]), (tn::ATTN_K_NORM, "self_attn.k_norm", [hd, 0])]);
    }
    block.push((tn::ATTN_OUTPUT, "self_attn.o_proj", [q, e]));
    match config.arch {
        Arch::Gemma => block.push((tn::FFN_NORM, "post_attention_layernorm", [e, 0])),
        Arch::Gemma2 | Arch::Gemma3 | Arch::Gemma4 | Arch::Gemma3n => block.extend([
            (tn::POST_ATTENTION_NORM, "post_attention_layernorm", [e, 0]),
            (tn::FFN_NORM, "pre_feedforward_layernorm", [e, 0]),
        ]),
    }
    block.extend([
        (tn::FFN_GATE, "mlp.gate_proj", [e, f]),
        (tn::FFN_UP, "mlp.up_proj", [e, f]),
        (tn::FFN_DOWN, "mlp.down_proj", [f, e]),
    ]);
    if config.arch != Arch::Gemma {
        block.push((tn::POST_FFW_NORM, "post_feedforward_layernorm", [e, 0]));
    }

    let mut wanted: Vec<(String, String, [u64; 2])> =
        vec![(tn::global(tn::TOKEN_EMBD), format!("{prefix}embed_tokens.weight"), [e, 0])];
    for il in 0..l {
        for (role, hf, ne) in &block {
            wanted.push((tn::block(il, role), format!("{prefix}layers.{il}.{hf}.weight"), *ne));
        }
    }
    wanted.push((tn::global(tn::OUTPUT_NORM), format!("{prefix}norm.weight"), [e, 0]));

    let mut out = Vec::with_capacity(wanted.len());
    for (gguf_name, hf_name, [ne0, ne1]) in wanted {
        let src = ckpt
            .get(&hf_name)
            .ok_or_else(|| Error::MissingTensor { tensor: hf_name.clone(), what: gguf_name.clone() })?
            .clone();
        if src.dtype.is_none() {
            return Err(ckpt.unsupported(&src));
        }
        let is_embd = gguf_name == tn::global(tn::TOKEN_EMBD);
        let ne = if is_embd {
            // [n_vocab_rows, n_embd] in HF order; trimmed to the tokenizer's vocabulary.
            match src.shape.as_slice() {
                [rows, cols] if *cols as u64 == e && *rows >= n_vocab => vec![e, n_vocab as u64],
                _ => {
                    return Err(Error::Shape {
                        tensor: hf_name,
                        what: format!(
                            "shape {:?}, expected [≥{n_vocab} (the tokenizer's vocabulary), {e} (hidden_size)]",
                            src.shape
                        ),
                    })
                }
            }
        } else if ne1 == 0 {
            expect_shape(&src, &[ne0 as usize])?;
            vec![ne0]
        } else {
            expect_shape(&src, &[ne1 as usize, ne0 as usize])?;
            vec![ne0, ne1]
        };
        let add_one = ne.len() == 1 && gguf_name.ends_with("norm.weight");
        out.push(Mapped { gguf_name, ne, src: From::Tensor(src), add_one });
    }
    Ok(out)
}

/// Everything not written: lm_head (tied), other modalities (vision and audio towers);
/// unknown text-model tensors are an error rather than silently dropped weights.
fn unused_tensors(ckpt: &Checkpoint, out: &[Mapped], prefix: &str) -> Result<Vec<String>> {
    let used: std::collections::HashSet<&str> = out
        .iter()
        .flat_map(|m| match &m.src {
            From::Tensor(t) | From::PadRows(t) => vec![t.name.as_str()],
            From::Stacked(ts) => ts.iter().map(|t| t.name.as_str()).collect(),
            From::Values(_) => Vec::new(),
        })
        .collect();
    let mut skipped = Vec::new();
    for t in ckpt.tensors() {
        if used.contains(t.name.as_str()) {
            continue;
        }
        if t.name == "lm_head.weight" || t.name.ends_with(".lm_head.weight") {
            skipped.push(format!("{}: the output projection is tied to the embedding (as llama.cpp drops it)", t.name));
        } else if t.name.starts_with(prefix) {
            return Err(Error::Shape {
                tensor: t.name.clone(),
                what: "not a tensor of this architecture: refusing to drop weights silently".into(),
            });
        } else {
            skipped.push(format!("{}: not part of the text model", t.name));
        }
    }
    if skipped.len() > 8 {
        let n = skipped.len() - 4;
        skipped.truncate(4);
        skipped.push(format!("… and {n} more tensors outside the text model"));
    }
    Ok(skipped)
}

fn expect_shape(t: &SourceTensor, shape: &[usize]) -> Result<()> {
    if t.shape != shape {
        return Err(Error::Shape {
            tensor: t.name.clone(),
            what: format!("shape {:?}, but config.json implies {shape:?}", t.shape),
        });
    }
    Ok(())
}

/// The text model's tensor prefix: `model.`, or one of the two multimodal layouts.
fn text_prefix(ckpt: &Checkpoint, config: &ModelConfig) -> Result<String> {
    let candidates: &[&str] = if config.tensor_prefix.is_empty() {
        &["model.language_model.", "language_model.model.", "model."]
    } else {
        &["model."]
    };
    candidates
        .iter()
        .find(|p| ckpt.get(&format!("{p}embed_tokens.weight")).is_some())
        .map(|p| p.to_string())
        .ok_or_else(|| Error::MissingTensor {
            tensor: format!("{}embed_tokens.weight", candidates[0]),
            what: "token_embd.weight".into(),
        })
}

struct HfSource<'a> {
    ckpt: &'a Checkpoint,
    sources: &'a [Mapped],
}

impl Source for HfSource<'_> {
    fn read_rows(&self, i: usize, row0: usize, out: &mut [f32]) -> Result<()> {
        let m = &self.sources[i];
        let ne0 = m.ne[0] as usize;
        match &m.src {
            From::Tensor(t) => self.ckpt.read_f32(t, row0 * ne0, out)?,
            From::Values(v) => out.copy_from_slice(&v[row0 * ne0..row0 * ne0 + out.len()]),
            From::Stacked(ts) => {
                // ggml rows [ne0, ne1, k]: row r is row r % ne1 of source r / ne1.
                let ne1 = m.ne[1] as usize;
                for (j, row) in out.chunks_mut(ne0).enumerate() {
                    let r = row0 + j;
                    self.ckpt.read_f32(&ts[r / ne1], (r % ne1) * ne0, row)?;
                }
            }
            From::PadRows(t) => {
                let n_src = t.shape[0];
                for (j, row) in out.chunks_mut(ne0).enumerate() {
                    let r = row0 + j;
                    self.ckpt.read_f32(t, if r < n_src { r * ne0 } else { 0 }, row)?;
                }
            }
        }
        if m.add_one {
            out.iter_mut().for_each(|x| *x += 1.0);
        }
        Ok(())
    }

    fn raw_rows(&self, i: usize, _row0: usize, _n: usize) -> Result<Vec<u8>> {
        Err(Error::Shape { tensor: self.sources[i].gguf_name.clone(), what: "raw copy from a checkpoint".into() })
    }

    fn release_rows(&self, i: usize, row0: usize, n: usize) {
        let m = &self.sources[i];
        let ne0 = m.ne[0] as usize;
        match &m.src {
            From::Tensor(t) => self.ckpt.release(t, row0 * ne0, n * ne0),
            From::PadRows(t) if row0 < t.shape[0] => self.ckpt.release(t, row0 * ne0, n.min(t.shape[0] - row0) * ne0),
            _ => {}
        }
    }
}

fn u32v(n: usize) -> GgufValue {
    GgufValue::U32(n as u32)
}

/// The GGUF metadata: general, architecture and tokenizer keys.
fn metadata(c: &ModelConfig, v: &Vocab, name: &str, out: OutType) -> Result<Vec<(String, GgufValue)>> {
    let a = c.arch.gguf_name();
    let mut m: Vec<(String, GgufValue)> = vec![
        (general::ARCHITECTURE.into(), GgufValue::String(a.into())),
        (general::TYPE.into(), GgufValue::String("model".into())),
        (general::NAME.into(), GgufValue::String(name.into())),
        (
            general::DESCRIPTION.into(),
            GgufValue::String(format!("{} converted from a Hugging Face checkpoint by gemma-gguf", c.hf_architecture)),
        ),
        (general::QUANTIZED_BY.into(), GgufValue::String(format!("gemma-gguf {}", env!("CARGO_PKG_VERSION")))),
    ];
    if let Some(repo) = &c.source_repo {
        m.push((general::SOURCE_HF_REPO.into(), GgufValue::String(repo.clone())));
    }
    if c.arch == Arch::Gemma4 {
        m.extend(gemma4::arch_keys(c));
    } else if c.arch == Arch::Gemma3n {
        m.extend(gemma3n::arch_keys(c));
    } else {
        m.extend(arch_keys_gemma123(c));
    }
    let (model, pre) = if c.arch == Arch::Gemma4 { ("gemma4", "gemma4") } else { ("llama", "default") };
    m.extend([
        (tk::MODEL.into(), GgufValue::String(model.into())),
        (tk::PRE.into(), GgufValue::String(pre.into())),
        (tk::TOKENS.into(), GgufValue::Array(GgufArray::String(v.tokens.clone()))),
        (tk::SCORES.into(), GgufValue::Array(GgufArray::F32(v.scores.clone()))),
        (tk::TOKEN_TYPE.into(), GgufValue::Array(GgufArray::I32(v.types.clone()))),
    ]);
    if let Some(merges) = &v.merges {
        m.push((tk::MERGES.into(), GgufValue::Array(GgufArray::String(merges.clone()))));
    }
    for (key, id) in [(tk::BOS_ID, v.bos), (tk::EOS_ID, v.eos), (tk::UNK_ID, v.unk), (tk::PAD_ID, v.pad)] {
        if let Some(id) = id {
            m.push((key.into(), GgufValue::U32(id)));
        }
    }
    m.extend([
        (tk::ADD_BOS.into(), GgufValue::Bool(v.add_bos)),
        (tk::ADD_EOS.into(), GgufValue::Bool(v.add_eos)),
        (tk::ADD_SPACE_PREFIX.into(), GgufValue::Bool(v.add_space_prefix)),
    ]);
    if let Some(t) = &v.chat_template {
        m.push((tk::CHAT_TEMPLATE.into(), GgufValue::String(t.clone())));
    }
    m.push((general::QUANTIZATION_VERSION.into(), GgufValue::U32(2)));
    m.push((general::FILE_TYPE.into(), GgufValue::U32(out.llama_ftype())));
    Ok(m)
}

/// The architecture keys of Gemma 1, 2 and 3.
fn arch_keys_gemma123(c: &ModelConfig) -> Vec<(String, GgufValue)> {
    let k = |s: &str| arch_key(c.arch.gguf_name(), s);
    let mut m = vec![
        (k(llm::CONTEXT_LENGTH), u32v(c.context_length)),
        (k(llm::EMBEDDING_LENGTH), u32v(c.n_embd)),
        (k(llm::BLOCK_COUNT), u32v(c.n_layer)),
        (k(llm::FEED_FORWARD_LENGTH), u32v(c.n_ff)),
        (k(llm::HEAD_COUNT), u32v(c.n_head)),
        (k(llm::HEAD_COUNT_KV), u32v(c.n_head_kv)),
        (k(llm::KEY_LENGTH), u32v(c.head_dim)),
        (k(llm::VALUE_LENGTH), u32v(c.head_dim)),
        (k(llm::RMS_EPS), GgufValue::F32(c.rms_eps)),
        (k(llm::ROPE_FREQ_BASE), GgufValue::F32(c.rope_base)),
    ];
    if let Some(w) = c.sliding_window {
        m.push((k(llm::SLIDING_WINDOW), u32v(w)));
    }
    if let (Arch::Gemma3, Some(b)) = (c.arch, c.rope_base_swa) {
        m.push((k(llm::ROPE_FREQ_BASE_SWA), GgufValue::F32(b)));
    }
    if let Some(f) = c.rope_linear_factor {
        m.push((k(llm::ROPE_SCALING_TYPE), GgufValue::String("linear".into())));
        m.push((k(llm::ROPE_SCALING_FACTOR), GgufValue::F32(f)));
    }
    if let Some(s) = c.attn_softcap {
        m.push((k(llm::ATTN_LOGIT_SOFTCAPPING), GgufValue::F32(s)));
    }
    if let Some(s) = c.final_softcap {
        m.push((k(llm::FINAL_LOGIT_SOFTCAPPING), GgufValue::F32(s)));
    }
    if c.arch != Arch::Gemma && !c.swa_pattern_is_default() {
        m.push((k(llm::SLIDING_WINDOW_PATTERN), GgufValue::Array(GgufArray::Bool(c.swa_layers.clone()))));
    }
    m
}
