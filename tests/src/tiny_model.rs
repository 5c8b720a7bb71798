//! A tiny valid `gemma3` (or `gemma`, `gemma2`: [`TinyArch`]) GGUF with random weights,
//! written with [`GgufWriter`], and knobs to break it one defect at a time: override or delete
//! any key, change any tensor's shape or type, drop a tensor. The model-level malformed-input
//! tests (BAD-INPUTS.md §13) and the Gemma 1/2 exactness tests against libllama use it.
//!
//! Laid out like a file `convert_hf_to_gguf.py` makes: the keys `Hparams::from_gguf` and
//! `Tokenizer::from_gguf` read (for Gemma 1 and 2 only those llama.cpp's converter writes, so
//! the loaders' defaults are exercised), with the types real files use (u32 counts, f32 floats); a
//! SentencePiece-style vocabulary (`<pad>`, `<eos>`, `<bos>`, `<unk>`, the turn tokens, 256
//! byte tokens, a few `▁` words); norms stored as `1 + w` and always F32, as in real files.
//! Weights are uniform noise from a seeded generator, so a file is the same on every run.

use gemma_gguf::ggml::{quantize_rows, Type};
use gemma_gguf::gguf::{GgmlType, GgufArray, GgufValue, GgufWriter};
use gemma_gguf::names::{arch_key, general, llm, tensor, tokenizer};
use gemma_gguf::Result;
use std::path::{Path, PathBuf};

/// The architecture of the default file.
pub const ARCH: &str = "gemma3";

/// `gemma3.{suffix}`, a key of the default architecture (suffixes from `names::llm`); see
/// [`TinyModel::key`] for the others.
pub fn key(suffix: &str) -> String {
    arch_key(ARCH, suffix)
}

/// The Gemma generation a tiny file is laid out for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TinyArch {
    /// Gemma 1: no post-norms, no QK-norm, no window, no soft-caps.
    Gemma,
    /// Gemma 2: post-norms, soft-caps, a window on even layers (the loader's default pattern).
    Gemma2,
    /// Gemma 3: post-norms, QK-norm, a window with an explicit pattern, two rope bases.
    Gemma3,
    /// Gemma 4: per-layer head sizes, shared KV layers, per-layer embeddings, optional
    /// experts and K = V ([`Gemma4Shape`]).
    Gemma4,
    /// Gemma 3n: AltUp streams, LAuReL, per-layer embeddings, activation sparsity, shared KV
    /// layers ([`Gemma3nShape`]).
    Gemma3n,
}

impl TinyArch {
    /// `general.architecture`.
    pub fn name(self) -> &'static str {
        match self {
            TinyArch::Gemma => "gemma",
            TinyArch::Gemma2 => "gemma2",
            TinyArch::Gemma3 => "gemma3",
            TinyArch::Gemma4 => "gemma4",
            TinyArch::Gemma3n => "gemma3n",
        }
    }
}

/// Token ids of the special tokens, in Gemma's order (`<pad>` 0, `<eos>` 1, `<bos>` 2, …).
pub mod ids {
    pub const PAD: u32 = 0;
    pub const EOS: u32 = 1;
    pub const BOS: u32 = 2;
    pub const UNK: u32 = 3;
    pub const START_OF_TURN: u32 = 4;
    pub const END_OF_TURN: u32 = 5;
    /// `<0x00>`; `<0xXX>` is `FIRST_BYTE + XX`.
    pub const FIRST_BYTE: u32 = 6;
}

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const BYTE: i32 = 6;
}

const SPECIALS: [(&str, i32); 6] = [
    ("<pad>", token_type::CONTROL),
    ("<eos>", token_type::CONTROL),
    ("<bos>", token_type::CONTROL),
    ("<unk>", token_type::UNKNOWN),
    ("<start_of_turn>", token_type::CONTROL),
    ("<end_of_turn>", token_type::CONTROL),
];

/// Normal tokens after the byte tokens: 6 + 256 + 38 = 300 tokens in all.
const WORDS: [&str; 38] = [
    "▁", "▁the", "▁a", "▁of", "▁and", "▁to", "▁in", "▁is", "▁it", "▁that", "▁model", "▁user", "▁hello", "▁world", "e",
    "t", "a", "o", "i", "n", "s", "h", "r", "d", "l", "u", "th", "he", "in", "er", "an", "re", "on", "at", "en", ".",
    ",", "\n",
];

/// Gemma 4's turn and channel tokens, after the shared vocabulary in `gemma4` files, so that
/// their chat format (`<|turn>user … <turn|>`, the empty thought `<|channel>…<channel|>`)
/// has its tokens; typed as llama.cpp's converter types them (conversion/gemma.py).
const GEMMA4_TURN_TOKENS: [(&str, i32); 4] = [
    ("<|turn>", token_type::CONTROL),
    ("<turn|>", token_type::CONTROL),
    ("<|channel>", token_type::USER_DEFINED),
    ("<channel|>", token_type::USER_DEFINED),
];

/// The vocabulary of a file of `arch`: [`vocabulary`], and Gemma 4's turn tokens for `gemma4`.
pub fn vocabulary_for(arch: TinyArch) -> Vec<(String, f32, i32)> {
    let mut v = vocabulary();
    if arch == TinyArch::Gemma4 {
        v.extend(GEMMA4_TURN_TOKENS.iter().map(|&(t, ty)| (t.to_string(), 0.0, ty)));
    }
    v
}

/// The vocabulary: (piece, score, token type) per id.
pub fn vocabulary() -> Vec<(String, f32, i32)> {
    let specials = SPECIALS.iter().map(|&(p, ty)| (p.to_owned(), 0.0, ty));
    let bytes = (0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, token_type::BYTE));
    // Earlier words merge first, as SentencePiece scores do.
    let words = WORDS.iter().enumerate().map(|(i, w)| (w.to_string(), -(i as f32), token_type::NORMAL));
    specials.chain(bytes).chain(words).collect()
}

/// The shape of the model, before any defect is applied.
#[derive(Debug, Clone)]
pub struct TinyConfig {
    pub arch: TinyArch,
    pub n_layer: u32,
    pub n_embd: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub head_dim: u32,
    pub n_ff: u32,
    pub n_ctx_train: u32,
    pub sliding_window: u32,
    /// `attention.sliding_window_pattern` (Gemma 3 only; Gemma 2 files have no pattern key and
    /// get the loader's default, 2): layer `il` is local iff `il % p < p − 1`, so 2 makes
    /// even layers local and odd ones global (both kinds in two layers).
    pub swa_period: u32,
    /// `attn_logit_softcapping` and `final_logit_softcapping` (Gemma 2 only).
    pub attn_softcap: f32,
    pub final_softcap: f32,
    /// Type of `token_embd` and the projections; norms stay F32.
    pub weight_type: GgmlType,
    pub seed: u64,
    /// What only Gemma 4 files have.
    pub gemma4: Gemma4Shape,
    /// What only Gemma 3n files have.
    pub gemma3n: Gemma3nShape,
}

/// The Gemma 4 parts of a tiny file. `head_dim` of [`TinyConfig`] is the full layers'.
#[derive(Debug, Clone)]
pub struct Gemma4Shape {
    /// `true` for sliding layers, one per layer (llama.cpp needs layer n_kv − 1 full and
    /// n_kv − 2 sliding when layers are shared, n_kv = n_layer − n_shared_kv).
    pub swa_layers: Vec<bool>,
    pub head_dim_swa: u32,
    /// KV heads of the full layers (the sliding ones have `n_head_kv`), written as a per-layer
    /// array when they differ.
    pub n_head_kv_full: u32,
    pub n_shared_kv: u32,
    /// Per-layer embedding width (0: none).
    pub n_embd_per_layer: u32,
    /// Experts on every layer (0: none), used per token, and their FFN width.
    pub n_expert: u32,
    pub n_expert_used: u32,
    pub n_ff_exp: u32,
    /// Full layers have no `attn_v` (V = K).
    pub k_eq_v_full: bool,
}

impl Default for Gemma4Shape {
    /// E2B-like: per-layer embeddings and two shared layers over S F S F, dense.
    fn default() -> Self {
        Gemma4Shape {
            swa_layers: vec![true, false, true, false, true, false],
            head_dim_swa: 32,
            n_head_kv_full: 1,
            n_shared_kv: 2,
            n_embd_per_layer: 32,
            n_expert: 0,
            n_expert_used: 0,
            n_ff_exp: 0,
            k_eq_v_full: false,
        }
    }
}

impl Default for TinyConfig {
    fn default() -> Self {
        TinyConfig {
            arch: TinyArch::Gemma3,
            n_layer: 2,
            n_embd: 64,
            n_head: 2,
            n_head_kv: 1,
            head_dim: 32,
            n_ff: 128,
            n_ctx_train: 128,
            // Small, so a 20-token prompt runs past the window on local layers.
            sliding_window: 8,
            swa_period: 2,
            attn_softcap: 50.0,
            final_softcap: 30.0,
            weight_type: GgmlType::F32,
            seed: 0x0067_656d_6d61, // "gemma" in ASCII
            gemma4: Gemma4Shape::default(),
            gemma3n: Gemma3nShape::default(),
        }
    }
}

impl TinyConfig {
    /// Gemma 1 with several KV heads (4 heads, 2 KV heads); set `n_head_kv: 1` for MQA.
    pub fn gemma() -> Self {
        TinyConfig { arch: TinyArch::Gemma, n_head: 4, n_head_kv: 2, head_dim: 16, ..Default::default() }
    }

    /// Gemma 2 with several KV heads and a 16-token window. The soft-caps are small enough
    /// that they bend the tiny model's scores and logits (a few units), not just exist.
    pub fn gemma2() -> Self {
        TinyConfig {
            arch: TinyArch::Gemma2,
            sliding_window: 16,
            attn_softcap: 1.0,
            final_softcap: 0.5,
            ..TinyConfig::gemma()
        }
    }
}

impl TinyConfig {
    /// Gemma 4 shaped like E2B: 6 layers (S F S F, then a shared S and F), 2 heads over 1 KV
    /// head of 32 (sliding) or 64 (full), per-layer embeddings of 32, an 8-token window.
    pub fn gemma4() -> Self {
        TinyConfig { arch: TinyArch::Gemma4, n_layer: 6, head_dim: 64, final_softcap: 1.0, ..Default::default() }
    }

    /// Gemma 4 shaped like 26B-A4B: 4 experts (2 used) beside the dense FFN on every layer,
    /// K = V and one KV head on full layers, two on sliding ones, no per-layer embeddings or
    /// shared layers.
    pub fn gemma4_moe() -> Self {
        let g4 = Gemma4Shape {
            swa_layers: vec![true, true, false, true],
            n_head_kv_full: 1,
            n_shared_kv: 0,
            n_embd_per_layer: 0,
            n_expert: 4,
            n_expert_used: 2,
            n_ff_exp: 32,
            k_eq_v_full: true,
            ..Default::default()
        };
        TinyConfig { n_layer: 4, n_head: 4, n_head_kv: 2, gemma4: g4, ..TinyConfig::gemma4() }
    }
}

/// The Gemma 3n parts of a tiny file. libllama hard-codes 4 AltUp streams, per-layer
/// embeddings of 256, LAuReL rank 64, KV on layers < 20 (layer 18 read by the shared sliding
/// layers, 19 by the full ones) and sparsity on layers < 10 (src/models/gemma3n.cpp,
/// llama-hparams.h), so a file it runs has those; the keys say the same.
#[derive(Debug, Clone)]
pub struct Gemma3nShape {
    /// `true` for sliding layers, one per layer.
    pub swa_layers: Vec<bool>,
    pub n_altup: u32,
    pub altup_active: u32,
    pub n_embd_per_layer: u32,
    pub laurel_rank: u32,
    pub n_shared_kv: u32,
    /// `activation_sparsity_scale`, one per layer (−∞: dense).
    pub sparsity: Vec<f32>,
}

/// libllama's Gaussian top-k multiplier (models.h `f_sparsity_std_mul`).
pub const GEMMA3N_SPARSITY_STD_MUL: f32 = 1.644_853_4;

impl Default for Gemma3nShape {
    /// 22 layers: four sliding and one full, repeated, with layer 21 full; the last two share
    /// the KV of layers 18 (sliding) and 19 (full); sparsity on the first 10.
    fn default() -> Self {
        let n = 22;
        Gemma3nShape {
            swa_layers: (0..n).map(|il| !(il % 5 == 4 || il == n - 1)).collect(),
            n_altup: 4,
            altup_active: 0,
            n_embd_per_layer: 256,
            laurel_rank: 64,
            n_shared_kv: 2,
            sparsity: (0..n).map(|il| if il < 10 { GEMMA3N_SPARSITY_STD_MUL } else { f32::NEG_INFINITY }).collect(),
        }
    }
}

impl TinyConfig {
    /// Gemma 3n shaped as libllama runs it ([`Gemma3nShape::default`]): 2 heads over 1 KV
    /// head of 32, an FFN of 128, an 8-token window, final soft-cap 30 (libllama's fixed one).
    pub fn gemma3n() -> Self {
        TinyConfig { arch: TinyArch::Gemma3n, n_layer: 22, final_softcap: 30.0, ..Default::default() }
    }
}

/// One tensor to write: its GGUF name, ggml-order dims and type.
#[derive(Debug, Clone)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

/// A tiny gemma3 model as keys and tensor specs, editable before [`write`](Self::write).
#[derive(Debug, Clone)]
pub struct TinyModel {
    cfg: TinyConfig,
    kvs: Vec<(String, GgufValue)>,
    tensors: Vec<TensorSpec>,
}

impl TinyModel {
    /// A valid model of shape `cfg`.
    pub fn new(cfg: TinyConfig) -> Self {
        let arch = cfg.arch;
        let vocab = vocabulary_for(arch);
        let n_vocab = vocab.len() as u64;
        let key = |suffix: &str| arch_key(arch.name(), suffix);
        let mut kvs: Vec<(String, GgufValue)> = vec![
            (general::ARCHITECTURE.into(), arch.name().into()),
            (general::NAME.into(), format!("tiny {} (random weights)", arch.name()).into()),
            (key(llm::CONTEXT_LENGTH), cfg.n_ctx_train.into()),
            (key(llm::EMBEDDING_LENGTH), cfg.n_embd.into()),
            (key(llm::BLOCK_COUNT), cfg.n_layer.into()),
            (key(llm::FEED_FORWARD_LENGTH), cfg.n_ff.into()),
            (key(llm::HEAD_COUNT), cfg.n_head.into()),
            (key(llm::HEAD_COUNT_KV), cfg.n_head_kv.into()),
            (key(llm::KEY_LENGTH), cfg.head_dim.into()),
            (key(llm::VALUE_LENGTH), cfg.head_dim.into()),
            (key(llm::RMS_EPS), 1e-6_f32.into()),
            (tokenizer::MODEL.into(), "llama".into()),
            (tokenizer::TOKENS.into(), vocab.iter().map(|v| v.0.clone()).collect::<Vec<_>>().into()),
            (tokenizer::SCORES.into(), vocab.iter().map(|v| v.1).collect::<Vec<_>>().into()),
            (tokenizer::TOKEN_TYPE.into(), vocab.iter().map(|v| v.2).collect::<Vec<_>>().into()),
            (tokenizer::BOS_ID.into(), ids::BOS.into()),
            (tokenizer::EOS_ID.into(), ids::EOS.into()),
            (tokenizer::UNK_ID.into(), ids::UNK.into()),
            (tokenizer::PAD_ID.into(), ids::PAD.into()),
            (tokenizer::ADD_BOS.into(), true.into()),
            (tokenizer::ADD_EOS.into(), false.into()),
            (tokenizer::ADD_SPACE_PREFIX.into(), false.into()),
        ];
        // What llama.cpp's converter adds per generation (convert_hf_to_gguf.py's
        // Gemma2Model and Gemma3Model; Gemma 1 has nothing more).
        let extra: Vec<(String, GgufValue)> = match arch {
            TinyArch::Gemma => vec![],
            TinyArch::Gemma2 => vec![
                (key(llm::ATTN_LOGIT_SOFTCAPPING), cfg.attn_softcap.into()),
                (key(llm::FINAL_LOGIT_SOFTCAPPING), cfg.final_softcap.into()),
                (key(llm::SLIDING_WINDOW), cfg.sliding_window.into()),
            ],
            TinyArch::Gemma3 => vec![
                (key(llm::ROPE_FREQ_BASE), 1_000_000_f32.into()),
                (key(llm::ROPE_FREQ_BASE_SWA), 10_000_f32.into()),
                (key(llm::SLIDING_WINDOW), cfg.sliding_window.into()),
                (key(llm::SLIDING_WINDOW_PATTERN), cfg.swa_period.into()),
            ],
            TinyArch::Gemma4 => gemma4_keys(&cfg),
            TinyArch::Gemma3n => gemma3n_keys(&cfg),
        };
        for (k, v) in extra {
            // A generation's own form of a generic key (Gemma 4's per-layer KV heads) replaces it.
            match kvs.iter_mut().find(|(have, _)| *have == k) {
                Some(kv) => kv.1 = v,
                None => kvs.push((k, v)),
            }
        }
        let (e, ff, hd) = (cfg.n_embd as u64, cfg.n_ff as u64, cfg.head_dim as u64);
        let (q, kv) = (cfg.n_head as u64 * hd, cfg.n_head_kv as u64 * hd);
        let (w, norm) = (cfg.weight_type, GgmlType::F32);
        let spec = |name: String, dims: &[u64], ty| TensorSpec { name, dims: dims.to_vec(), ty };
        let mut tensors = vec![
            spec(tensor::global(tensor::TOKEN_EMBD), &[e, n_vocab], w),
            spec(tensor::global(tensor::OUTPUT_NORM), &[e], norm),
        ];
        // Gemma 1 lacks the post-norms, Gemma 1 and 2 the QK-norms.
        if arch == TinyArch::Gemma4 {
            tensors.extend(gemma4_tensors(&cfg, n_vocab));
            return TinyModel { cfg, kvs, tensors };
        }
        if arch == TinyArch::Gemma3n {
            tensors.extend(gemma3n_tensors(&cfg, n_vocab));
            return TinyModel { cfg, kvs, tensors };
        }
        let wanted = |name: &str| match arch {
            TinyArch::Gemma => {
                ![tensor::ATTN_Q_NORM, tensor::ATTN_K_NORM, tensor::POST_ATTENTION_NORM, tensor::POST_FFW_NORM]
                    .contains(&name)
            }
            TinyArch::Gemma2 => ![tensor::ATTN_Q_NORM, tensor::ATTN_K_NORM].contains(&name),
            TinyArch::Gemma3 | TinyArch::Gemma4 | TinyArch::Gemma3n => true,
        };
        for il in 0..cfg.n_layer as usize {
            let layer: [(&str, &[u64], GgmlType); 13] = [
                (tensor::ATTN_NORM, &[e], norm),
                (tensor::ATTN_Q, &[e, q], w),
                (tensor::ATTN_K, &[e, kv], w),
                (tensor::ATTN_V, &[e, kv], w),
                (tensor::ATTN_Q_NORM, &[hd], norm),
                (tensor::ATTN_K_NORM, &[hd], norm),
                (tensor::ATTN_OUTPUT, &[q, e], w),
                (tensor::POST_ATTENTION_NORM, &[e], norm),
                (tensor::FFN_NORM, &[e], norm),
                (tensor::FFN_GATE, &[e, ff], w),
                (tensor::FFN_UP, &[e, ff], w),
                (tensor::FFN_DOWN, &[ff, e], w),
                (tensor::POST_FFW_NORM, &[e], norm),
            ];
            let layer = layer.iter().filter(|l| wanted(l.0));
            tensors.extend(layer.map(|&(name, dims, ty)| spec(tensor::block(il, name), dims, ty)));
        }
        TinyModel { cfg, kvs, tensors }
    }

    pub fn config(&self) -> &TinyConfig {
        &self.cfg
    }

    /// `{arch}.{suffix}` for this model's architecture.
    pub fn key(&self, suffix: &str) -> String {
        arch_key(self.cfg.arch.name(), suffix)
    }

    /// Tokens in the vocabulary as written (the length of `tokenizer.ggml.tokens`).
    pub fn n_vocab(&self) -> u32 {
        vocabulary_for(self.cfg.arch).len() as u32
    }

    /// Sets `key` (a full key: use [`TinyModel::key`] for `{arch}.*`), replacing its value in place or
    /// appending it. Any value type, so a key can be given the wrong one.
    pub fn set(&mut self, key: &str, value: impl Into<GgufValue>) -> &mut Self {
        let value = value.into();
        match self.kvs.iter_mut().find(|(k, _)| k == key) {
            Some(kv) => kv.1 = value,
            None => self.kvs.push((key.to_owned(), value)),
        }
        self
    }

    /// Deletes `key`, which must be there (so a test cannot silently delete nothing).
    pub fn remove(&mut self, key: &str) -> &mut Self {
        let i = self.kvs.iter().position(|(k, _)| k == key).unwrap_or_else(|| panic!("no key {key} to remove"));
        self.kvs.remove(i);
        self
    }

    /// The spec of tensor `name` (a full name, `blk.0.attn_q.weight`), to change its shape
    /// or type. The data written follows the spec.
    pub fn tensor_mut(&mut self, name: &str) -> &mut TensorSpec {
        self.tensors.iter_mut().find(|t| t.name == name).unwrap_or_else(|| panic!("no tensor {name}"))
    }

    /// Appends a tensor (an extra one, or one the architecture treats as optional).
    pub fn add_tensor(&mut self, spec: TensorSpec) -> &mut Self {
        self.tensors.push(spec);
        self
    }

    /// Drops tensor `name`, which must be there.
    pub fn remove_tensor(&mut self, name: &str) -> &mut Self {
        let i = self.tensors.iter().position(|t| t.name == name).unwrap_or_else(|| panic!("no tensor {name}"));
        self.tensors.remove(i);
        self
    }

    /// Writes the file to `path` (through a temporary file, see [`GgufWriter::create`]).
    pub fn write(&self, path: &Path) -> Result<PathBuf> {
        let mut w = GgufWriter::create(path)?;
        for (k, v) in &self.kvs {
            w.add_kv(k, v.clone())?;
        }
        let mut sizes = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            sizes.push(w.add_tensor_info(&t.name, &t.dims, t.ty)?.n_bytes);
        }
        for (t, &n_bytes) in self.tensors.iter().zip(&sizes) {
            w.write_tensor_data(&t.name, &self.tensor_data(t, n_bytes))?;
        }
        Ok(w.finish()?)
    }

    /// Uniform noise: `1 + w` with |w| ≤ 0.1 for norms (1-D), ±1/√ne0 for matrices, ±0.1 for
    /// the embedding (which is also the output projection: logits stay within a few units, so
    /// the f16 KV cache's rounding, 2^-11 relative, stays far below the tests' 1e-3 absolute
    /// tolerance on them). Converted to the spec's type with ggml's own quantiser; any other
    /// type (I32…) gets zero bytes.
    fn tensor_data(&self, t: &TensorSpec, n_bytes: u64) -> Vec<u8> {
        let mut rng = SplitMix64(self.cfg.seed ^ fnv1a(t.name.as_bytes()));
        let ne0 = t.dims.first().copied().unwrap_or(1).max(1) as usize;
        let n: u64 = t.dims.iter().product();
        let vals: Vec<f32> = if t.dims.len() == 1 {
            (0..n).map(|_| 1.0 + 0.1 * rng.uniform()).collect()
        } else {
            let scale = if t.name == tensor::global(tensor::TOKEN_EMBD) { 0.1 } else { 1.0 / (ne0 as f32).sqrt() };
            (0..n).map(|_| scale * rng.uniform()).collect()
        };
        let bytes = match t.ty {
            GgmlType::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ty if QUANTISABLE.contains(&ty) => {
                Type::from_id(ty.id()).and_then(|ty| quantize_rows(ty, &vals, ne0)).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        if bytes.len() as u64 == n_bytes {
            bytes
        } else {
            vec![0; n_bytes as usize]
        }
    }
}

/// The `gemma4.*` keys llama.cpp's converter writes (conversion/gemma.py, `Gemma4Model`).
fn gemma4_keys(cfg: &TinyConfig) -> Vec<(String, GgufValue)> {
    let key = |suffix: &str| arch_key("gemma4", suffix);
    let g4 = &cfg.gemma4;
    let mut kvs: Vec<(String, GgufValue)> = vec![
        (key(llm::ROPE_FREQ_BASE), 1_000_000_f32.into()),
        (key(llm::ROPE_FREQ_BASE_SWA), 10_000_f32.into()),
        (key(llm::ROPE_DIMENSION_COUNT), cfg.head_dim.into()),
        (key(llm::ROPE_DIMENSION_COUNT_SWA), g4.head_dim_swa.into()),
        (key(llm::KEY_LENGTH_SWA), g4.head_dim_swa.into()),
        (key(llm::VALUE_LENGTH_SWA), g4.head_dim_swa.into()),
        (key(llm::SLIDING_WINDOW), cfg.sliding_window.into()),
        (key(llm::SLIDING_WINDOW_PATTERN), GgufValue::Array(GgufArray::Bool(g4.swa_layers.clone()))),
        (key(llm::EMBEDDING_LENGTH_PER_LAYER_INPUT), g4.n_embd_per_layer.into()),
        (key(llm::SHARED_KV_LAYERS), g4.n_shared_kv.into()),
        (key(llm::FINAL_LOGIT_SOFTCAPPING), cfg.final_softcap.into()),
    ];
    if g4.n_head_kv_full != cfg.n_head_kv {
        let per_layer: Vec<u32> =
            g4.swa_layers.iter().map(|&swa| if swa { cfg.n_head_kv } else { g4.n_head_kv_full }).collect();
        kvs.push((key(llm::HEAD_COUNT_KV), per_layer.into()));
    }
    if g4.n_expert > 0 {
        kvs.push((key(llm::EXPERT_COUNT), g4.n_expert.into()));
        kvs.push((key(llm::EXPERT_USED_COUNT), g4.n_expert_used.into()));
        kvs.push((key(llm::EXPERT_FEED_FORWARD_LENGTH), g4.n_ff_exp.into()));
    }
    kvs
}

/// The tensors of a tiny Gemma 4 file, after `token_embd` and `output_norm`.
fn gemma4_tensors(cfg: &TinyConfig, n_vocab: u64) -> Vec<TensorSpec> {
    let g4 = &cfg.gemma4;
    let (w, norm) = (cfg.weight_type, GgmlType::F32);
    let spec = |name: String, dims: &[u64], ty| TensorSpec { name, dims: dims.to_vec(), ty };
    let (e, ff, p) = (cfg.n_embd as u64, cfg.n_ff as u64, g4.n_embd_per_layer as u64);
    let (n_exp, f_exp) = (g4.n_expert as u64, g4.n_ff_exp as u64);
    let n_kv_layers = (cfg.n_layer - g4.n_shared_kv) as usize;
    let mut out = vec![spec(tensor::global(tensor::ROPE_FREQS), &[cfg.head_dim as u64 / 2], norm)];
    if p > 0 {
        let pl = p * cfg.n_layer as u64;
        out.push(spec(tensor::global(tensor::PER_LAYER_TOKEN_EMBD), &[pl, n_vocab], w));
        out.push(spec(tensor::global(tensor::PER_LAYER_MODEL_PROJ), &[e, pl], w));
        out.push(spec(tensor::global(tensor::PER_LAYER_PROJ_NORM), &[p], norm));
    }
    for il in 0..cfg.n_layer as usize {
        let swa = g4.swa_layers[il];
        let hd = if swa { g4.head_dim_swa } else { cfg.head_dim } as u64;
        let n_kv = if swa { cfg.n_head_kv } else { g4.n_head_kv_full } as u64;
        let (q, kv) = (cfg.n_head as u64 * hd, n_kv * hd);
        let mut layer: Vec<(&str, Vec<u64>, GgmlType)> = vec![
            (tensor::ATTN_NORM, vec![e], norm),
            (tensor::ATTN_Q, vec![e, q], w),
            (tensor::ATTN_Q_NORM, vec![hd], norm),
            (tensor::ATTN_OUTPUT, vec![q, e], w),
            (tensor::POST_ATTENTION_NORM, vec![e], norm),
            (tensor::FFN_NORM, vec![e], norm),
            (tensor::FFN_GATE, vec![e, ff], w),
            (tensor::FFN_UP, vec![e, ff], w),
            (tensor::FFN_DOWN, vec![ff, e], w),
            (tensor::POST_FFW_NORM, vec![e], norm),
            (tensor::LAYER_OUT_SCALE, vec![1], norm),
        ];
        if il < n_kv_layers {
            layer.push((tensor::ATTN_K, vec![e, kv], w));
            layer.push((tensor::ATTN_K_NORM, vec![hd], norm));
            if swa || !g4.k_eq_v_full {
                layer.push((tensor::ATTN_V, vec![e, kv], w));
            }
        }
        if p > 0 {
            layer.push((tensor::PER_LAYER_INP_GATE, vec![e, p], w));
            layer.push((tensor::PER_LAYER_PROJ, vec![p, e], w));
            layer.push((tensor::PER_LAYER_POST_NORM, vec![e], norm));
        }
        if n_exp > 0 {
            layer.push((tensor::FFN_GATE_INP, vec![e, n_exp], w));
            layer.push((tensor::FFN_PRE_NORM_2, vec![e], norm));
            layer.push((tensor::FFN_POST_NORM_1, vec![e], norm));
            layer.push((tensor::FFN_POST_NORM_2, vec![e], norm));
            layer.push((tensor::FFN_GATE_UP_EXPS, vec![e, 2 * f_exp, n_exp], w));
            layer.push((tensor::FFN_DOWN_EXPS, vec![f_exp, e, n_exp], w));
            out.push(spec(tensor::block_scale(il, tensor::FFN_GATE_INP), &[e], norm));
            out.push(spec(tensor::block_scale(il, tensor::FFN_DOWN_EXPS), &[n_exp], norm));
        }
        out.extend(layer.into_iter().map(|(name, dims, ty)| spec(tensor::block(il, name), &dims, ty)));
    }
    out
}

/// The `gemma3n.*` keys llama.cpp's converter writes (conversion/gemma.py, `Gemma3NModel`).
fn gemma3n_keys(cfg: &TinyConfig) -> Vec<(String, GgufValue)> {
    let key = |suffix: &str| arch_key("gemma3n", suffix);
    let g = &cfg.gemma3n;
    vec![
        (key(llm::ROPE_FREQ_BASE), 1_000_000_f32.into()),
        (key(llm::ROPE_FREQ_BASE_SWA), 10_000_f32.into()),
        (key(llm::SLIDING_WINDOW), cfg.sliding_window.into()),
        (key(llm::SLIDING_WINDOW_PATTERN), GgufValue::Array(GgufArray::Bool(g.swa_layers.clone()))),
        (key(llm::FINAL_LOGIT_SOFTCAPPING), cfg.final_softcap.into()),
        (key(llm::ALTUP_ACTIVE_IDX), g.altup_active.into()),
        (key(llm::ALTUP_NUM_INPUTS), g.n_altup.into()),
        (key(llm::EMBEDDING_LENGTH_PER_LAYER_INPUT), g.n_embd_per_layer.into()),
        (key(llm::SHARED_KV_LAYERS), g.n_shared_kv.into()),
        (key(llm::ACTIVATION_SPARSITY_SCALE), g.sparsity.clone().into()),
    ]
}

/// The tensors of a tiny Gemma 3n file, after `token_embd` and `output_norm`. The AltUp
/// coefficient matrices (rows of `n_altup`) stay F32, as converters keep them.
fn gemma3n_tensors(cfg: &TinyConfig, n_vocab: u64) -> Vec<TensorSpec> {
    let g = &cfg.gemma3n;
    let (w, f32_) = (cfg.weight_type, GgmlType::F32);
    let spec = |name: String, dims: &[u64], ty| TensorSpec { name, dims: dims.to_vec(), ty };
    let (e, ff, hd, p) = (cfg.n_embd as u64, cfg.n_ff as u64, cfg.head_dim as u64, g.n_embd_per_layer as u64);
    let (q, kv, na, r) = (cfg.n_head as u64 * hd, cfg.n_head_kv as u64 * hd, g.n_altup as u64, g.laurel_rank as u64);
    let pl = p * cfg.n_layer as u64;
    let mut out = vec![
        spec(tensor::global(tensor::ALTUP_PROJ), &[e, e, na - 1], w),
        spec(tensor::global(tensor::ALTUP_UNEMBD_PROJ), &[e, e, na - 1], w),
        spec(tensor::global(tensor::PER_LAYER_TOKEN_EMBD), &[pl, n_vocab], w),
        spec(tensor::global(tensor::PER_LAYER_MODEL_PROJ), &[e, pl], w),
        spec(tensor::global(tensor::PER_LAYER_PROJ_NORM), &[p], f32_),
    ];
    for il in 0..cfg.n_layer as usize {
        // libllama loads K, V and the K norm on every layer, shared ones too.
        let layer: [(&str, Vec<u64>, GgmlType); 24] = [
            (tensor::ATTN_NORM, vec![e], f32_),
            (tensor::ATTN_Q, vec![e, q], w),
            (tensor::ATTN_K, vec![e, kv], w),
            (tensor::ATTN_V, vec![e, kv], w),
            (tensor::ATTN_Q_NORM, vec![hd], f32_),
            (tensor::ATTN_K_NORM, vec![hd], f32_),
            (tensor::ATTN_OUTPUT, vec![q, e], w),
            (tensor::POST_ATTENTION_NORM, vec![e], f32_),
            (tensor::FFN_NORM, vec![e], f32_),
            (tensor::FFN_GATE, vec![e, ff], w),
            (tensor::FFN_UP, vec![e, ff], w),
            (tensor::FFN_DOWN, vec![ff, e], w),
            (tensor::POST_FFW_NORM, vec![e], f32_),
            (tensor::PER_LAYER_INP_GATE, vec![e, p], w),
            (tensor::PER_LAYER_PROJ, vec![p, e], w),
            (tensor::PER_LAYER_POST_NORM, vec![e], f32_),
            (tensor::ALTUP_CORRECT_COEF, vec![na, na], f32_),
            (tensor::ALTUP_CORRECT_SCALE, vec![e], f32_),
            (tensor::ALTUP_PREDICT_COEF, vec![na, na * na], f32_),
            (tensor::ALTUP_ROUTER, vec![e, na], w),
            (tensor::ALTUP_ROUTER_NORM, vec![e], f32_),
            (tensor::LAUREL_L, vec![e, r], w),
            (tensor::LAUREL_R, vec![r, e], w),
            (tensor::LAUREL_POST_NORM, vec![e], f32_),
        ];
        out.extend(layer.into_iter().map(|(name, dims, ty)| spec(tensor::block(il, name), &dims, ty)));
    }
    out
}

/// Types `ggml_quantize_chunk` converts to without an importance matrix. Only these go to
/// `quantize_rows`: for any other (I32, Q8_1, Q8_K…) ggml's switch has no case and its
/// size assertion aborts the process.
const QUANTISABLE: [GgmlType; 12] = {
    use GgmlType::*;
    [F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K]
};

/// FNV-1a, to give every tensor its own stream from one seed.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// SplitMix64 (Steele, Lea, Flood 2014): a few lines, no dependency, same numbers everywhere.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [−1, 1).
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}
