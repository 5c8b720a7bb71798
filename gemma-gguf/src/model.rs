//! Loading a GGUF model onto a backend: pick the architecture, read its hyper-parameters,
//! declare its weights and back them with the mapped file (CPU) or copies (other devices).
#![forbid(unsafe_code)]

use crate::arch::{gemma, gemma2, gemma3, gemma3n, gemma4, names, WeightDecl};
use crate::error::{Error, Result};
use crate::ggml::{default_threads, Backend, BufferType, Context, Device, TensorId};
use crate::gguf::GgufFile;
pub use crate::kv_cache::KvLayout;
use crate::tokenizer::Tokenizer;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Device name as `gemma --version` lists them (`CPU`, `CUDA0`, `Vulkan0`); CPU if unset.
    pub device: Option<String>,
    /// Compute threads (CPU backend); the logical CPUs if unset.
    pub threads: Option<usize>,
    /// Keep every weight as mapped from the file, never repacked (CPU). Repacking, the
    /// default as in llama.cpp, copies the weights that ggml has faster interleaved kernels
    /// for into anonymous memory.
    pub no_repack: bool,
}

/// The architectures this runtime runs, with their hyper-parameters and weights.
#[derive(Debug, Clone)]
pub enum Arch {
    Gemma { hp: gemma::Hparams, weights: gemma::Weights },
    Gemma2 { hp: gemma2::Hparams, weights: gemma2::Weights },
    Gemma3 { hp: gemma3::Hparams, weights: gemma3::Weights },
    Gemma4 { hp: gemma4::Hparams, weights: gemma4::Weights },
    Gemma3n { hp: gemma3n::Hparams, weights: gemma3n::Weights },
}

impl Arch {
    /// Reads the hyper-parameters of architecture `name` and declares its weights.
    fn load(name: &str, gguf: &GgufFile, decl: &mut WeightDecl<'_>) -> Result<Arch> {
        Ok(match name {
            "gemma" => {
                let hp = gemma::Hparams::from_gguf(gguf)?;
                Arch::Gemma { weights: gemma::Weights::declare(decl, &hp)?, hp }
            }
            "gemma2" => {
                let hp = gemma2::Hparams::from_gguf(gguf)?;
                Arch::Gemma2 { weights: gemma2::Weights::declare(decl, &hp)?, hp }
            }
            "gemma3" => {
                let hp = gemma3::Hparams::from_gguf(gguf)?;
                Arch::Gemma3 { weights: gemma3::Weights::declare(decl, &hp)?, hp }
            }
            "gemma4" => {
                let hp = gemma4::Hparams::from_gguf(gguf)?;
                Arch::Gemma4 { weights: gemma4::Weights::declare(decl, &hp)?, hp }
            }
            "gemma3n" => {
                let hp = gemma3n::Hparams::from_gguf(gguf)?;
                Arch::Gemma3n { weights: gemma3n::Weights::declare(decl, &hp)?, hp }
            }
            _ => return Err(Error::UnsupportedArch { arch: name.into() }),
        })
    }

    /// The architecture's GGUF name (`general.architecture`).
    pub fn name(&self) -> &'static str {
        match self {
            Arch::Gemma { .. } => "gemma",
            Arch::Gemma2 { .. } => "gemma2",
            Arch::Gemma3 { .. } => "gemma3",
            Arch::Gemma4 { .. } => "gemma4",
            Arch::Gemma3n { .. } => "gemma3n",
        }
    }

    /// Vocabulary size (rows of the output projection).
    pub fn n_vocab(&self) -> u32 {
        match self {
            Arch::Gemma { hp, .. } => hp.dims.n_vocab,
            Arch::Gemma2 { hp, .. } => hp.dims.n_vocab,
            Arch::Gemma3 { hp, .. } => hp.dims.n_vocab,
            Arch::Gemma4 { hp, .. } => hp.dims.n_vocab,
            Arch::Gemma3n { hp, .. } => hp.dims.n_vocab,
        }
    }

    /// The sizes shared by every architecture.
    pub fn dims(&self) -> &crate::arch::Dims {
        match self {
            Arch::Gemma { hp, .. } => &hp.dims,
            Arch::Gemma2 { hp, .. } => &hp.dims,
            Arch::Gemma3 { hp, .. } => &hp.dims,
            Arch::Gemma4 { hp, .. } => &hp.dims,
            Arch::Gemma3n { hp, .. } => &hp.dims,
        }
    }

    /// Context length the model was trained with.
    pub fn n_ctx_train(&self) -> u32 {
        match self {
            Arch::Gemma { hp, .. } => hp.dims.n_ctx_train,
            Arch::Gemma2 { hp, .. } => hp.dims.n_ctx_train,
            Arch::Gemma3 { hp, .. } => hp.dims.n_ctx_train,
            Arch::Gemma4 { hp, .. } => hp.dims.n_ctx_train,
            Arch::Gemma3n { hp, .. } => hp.dims.n_ctx_train,
        }
    }

    /// The KV cache the architecture needs: which layers are local, and their window.
    pub fn kv_layout(&self) -> KvLayout {
        let kv_dim = |d: &crate::arch::Dims| (d.n_head_kv * d.head_dim) as u64;
        match self {
            Arch::Gemma { hp, .. } => KvLayout::uniform(kv_dim(&hp.dims), hp.is_local(), None),
            Arch::Gemma2 { hp, .. } => {
                KvLayout::uniform(kv_dim(&hp.dims), hp.is_local.clone(), Some(hp.sliding_window))
            }
            Arch::Gemma3 { hp, .. } => KvLayout::uniform(kv_dim(&hp.dims), hp.is_local.clone(), hp.sliding_window),
            Arch::Gemma4 { hp, .. } => KvLayout {
                kv_dim: hp.layers.iter().map(|l| (l.heads.n_head_kv * l.heads.head_dim) as u64).collect(),
                is_local: hp.layers.iter().map(|l| l.local).collect(),
                window: Some(hp.sliding_window),
                shared_from: hp.layers.iter().map(|l| l.shared_from).collect(),
            },
            Arch::Gemma3n { hp, .. } => KvLayout {
                shared_from: hp.shared_from.clone(),
                ..KvLayout::uniform(kv_dim(&hp.dims), hp.is_local.clone(), Some(hp.sliding_window))
            },
        }
    }

    /// The output projection and `token_embd`, to give a tied projection its own tensor.
    fn output_mut(&mut self) -> (&mut TensorId, TensorId) {
        match self {
            Arch::Gemma { weights: w, .. } => (&mut w.output, w.token_embd),
            Arch::Gemma2 { weights: w, .. } => (&mut w.output, w.token_embd),
            Arch::Gemma3 { weights: w, .. } => (&mut w.output, w.token_embd),
            Arch::Gemma4 { weights: w, .. } => (&mut w.output, w.token_embd),
            Arch::Gemma3n { weights: w, .. } => (&mut w.output, w.token_embd),
        }
    }
}

/// A loaded model: the mapped file, its weights on a backend, the architecture.
pub struct Model {
    pub(crate) gguf: Arc<GgufFile>,
    pub(crate) backend: Backend,
    pub(crate) wctx: Context,
    pub(crate) arch: Arch,
    tokenizer: Tokenizer,
    weight_bytes: usize,
    mapped: bool,
    repacked: usize,
    repacked_bytes: usize,
    load_time: Duration,
}

impl Model {
    /// Opens `path` and loads it according to `opts`.
    pub fn load(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Model> {
        let start = Instant::now();
        let mut file = GgufFile::open(path.as_ref())?;
        let device = match &opts.device {
            Some(name) => Device::by_name(name)?,
            None => Device::cpu()?,
        };
        let backend = Backend::new(device)?;
        backend.set_n_threads(opts.threads.unwrap_or_else(default_threads))?;
        let arch_name = file.get_str(names::general::ARCHITECTURE)?.to_string();
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let wctx = Context::new(file.tensors().len() + 1, 0)?;
        let (arch, declared) = {
            let mut decl = WeightDecl::new(&wctx, &file);
            let mut arch = Arch::load(&arch_name, &file, &mut decl)?;
            let (output, token_embd) = arch.output_mut();
            if *output == token_embd && repack_type(&backend, opts.no_repack).is_some() {
                // Tied output: a second tensor over the same file bytes, so the output
                // projection can be repacked while get_rows reads the mapped original
                // (llama.cpp duplicates it the same way).
                *output = decl.duplicate(&names::tensor::global(names::tensor::TOKEN_EMBD), "output.weight")?;
            }
            (arch, (decl.declared, decl.gathered))
        };
        let (declared, gathered) = declared;
        // The tokenizer has its own copy of the vocabulary: the file's parsed arrays (about
        // 10 MB for Gemma's 262 144 tokens) are not needed any more.
        for key in
            [names::tokenizer::TOKENS, names::tokenizer::SCORES, names::tokenizer::TOKEN_TYPE, names::tokenizer::MERGES]
        {
            file.remove(key);
        }
        let gguf = Arc::new(file);
        let weight_bytes =
            declared.iter().map(|(_, id)| wctx.tensor(*id).map(|t| t.nbytes())).sum::<Result<usize>>()?;
        let mapped = backend.is_cpu();
        let (repacked, repacked_bytes) = if mapped {
            load_mapped(&wctx, &gguf, &declared, &gathered, &backend, opts.no_repack)?
        } else {
            (load_copied(&wctx, &gguf, &declared, &backend)?, 0)
        };
        let load_time = start.elapsed();
        Ok(Model { gguf, backend, wctx, arch, tokenizer, weight_bytes, mapped, repacked, repacked_bytes, load_time })
    }

    /// The GGUF file the model came from, less its vocabulary arrays (`tokenizer.ggml.tokens`,
    /// `scores`, `token_type`, `merges`): the [`tokenizer`](Self::tokenizer) holds them.
    pub fn gguf(&self) -> &GgufFile {
        &self.gguf
    }

    /// The tokenizer built from the file's vocabulary.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn arch(&self) -> &Arch {
        &self.arch
    }

    /// Bytes of weight data (mapped from the file on the CPU backend).
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// Weights repacked into the CPU's faster interleaved layout (copies, not mapped).
    pub fn repacked_weights(&self) -> usize {
        self.repacked
    }

    /// Bytes of the repacked copies (anonymous memory besides the mapped file).
    pub fn repacked_bytes(&self) -> usize {
        self.repacked_bytes
    }

    /// Whether the weights are the mapped file itself (CPU) rather than device copies.
    pub fn weights_mapped(&self) -> bool {
        self.mapped
    }

    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Vocabulary size (rows of the output projection).
    pub fn n_vocab(&self) -> u32 {
        self.arch.n_vocab()
    }

    /// The sizes shared by every architecture.
    pub fn dims(&self) -> &crate::arch::Dims {
        self.arch.dims()
    }

    /// Context length the model was trained with.
    pub fn n_ctx_train(&self) -> u32 {
        self.arch.n_ctx_train()
    }
}

/// The CPU's weight-repacking buffer type, unless disabled or absent.
fn repack_type(backend: &Backend, no_repack: bool) -> Option<BufferType> {
    if no_repack || !backend.is_cpu() {
        return None;
    }
    backend.device().extra_buffer_types().into_iter().find(|b| b.name().contains("REPACK"))
}

/// CPU: weights ggml can repack go to the repacking buffer (copied and interleaved); all
/// others are the mapped file's bytes. Returns how many were repacked, and their bytes.
fn load_mapped(
    wctx: &Context,
    gguf: &Arc<GgufFile>,
    declared: &[(String, TensorId)],
    gathered: &[TensorId],
    backend: &Backend,
    no_repack: bool,
) -> Result<(usize, usize)> {
    let repack = repack_type(backend, no_repack);
    let mut mapped = Vec::new();
    let mut packed = Vec::new();
    for (source, id) in declared {
        let t = wctx.tensor(*id)?;
        let ne = t.ne();
        // Tables read by get_rows (token_embd, Gemma 4's per-layer embeddings): repacked
        // layouts do not serve it, and they stay mapped.
        let is_matmul = ne[1] > 1 && !gathered.contains(id);
        match repack {
            Some(b) if is_matmul && b.supports_mul_mat_weight(backend.device(), t.ty(), ne[0], ne[1]) => {
                packed.push((source, t))
            }
            _ => mapped.push((source.clone(), t)),
        }
    }
    let sources: Vec<_> = mapped.iter().map(|(s, _)| s.clone()).collect();
    let tensors: Vec<_> = mapped.iter().map(|(_, t)| *t).collect();
    wctx.alloc_from_host(gguf.clone(), &tensors, |g, t| {
        let i = tensors.iter().position(|x| x.name() == t.name()).expect("tensor from the list above");
        let info = g.tensor(&sources[i]).ok_or_else(|| Error::MissingTensor { name: sources[i].clone() })?;
        Ok(g.tensor_data(info)?)
    })?;
    if let (Some(b), false) = (repack, packed.is_empty()) {
        wctx.alloc_tensors_in(b)?;
        for (source, t) in &packed {
            let info = gguf.tensor(source).ok_or_else(|| Error::MissingTensor { name: source.to_string() })?;
            t.set_bytes(gguf.tensor_data(info)?)?;
            // The repacked copy is what runs from now on: give the file's pages back, so the
            // weights are resident once, not twice. (A mapped tensor sharing a page, or
            // get_rows on the tied embedding, faults what it needs back in.)
            gguf.release_tensor_data(info);
        }
    }
    Ok((packed.len(), packed.iter().map(|(_, t)| t.nbytes()).sum()))
}

/// Other devices: every weight copied into the device's buffer.
fn load_copied(wctx: &Context, gguf: &GgufFile, declared: &[(String, TensorId)], backend: &Backend) -> Result<usize> {
    wctx.alloc_tensors(backend)?;
    for (source, id) in declared {
        let info = gguf.tensor(source).ok_or_else(|| Error::MissingTensor { name: source.clone() })?;
        wctx.tensor(*id)?.set_bytes(gguf.tensor_data(info)?)?;
    }
    Ok(0)
}
