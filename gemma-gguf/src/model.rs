//! Loading a GGUF model onto a backend: pick the architecture, read its hyper-parameters,
//! declare its weights and back them with copies (repacked for the CPU's interleaved kernels,
//! or as they are on 2 MiB pages; other devices) or with the mapped file itself.
#![forbid(unsafe_code)]

use crate::arch::{gemma, gemma2, gemma3, gemma3n, gemma4, names, WeightDecl};
use crate::error::{Error, Result};
use crate::ggml::{default_threads, Backend, BufferType, Context, Device, DeviceKind, TensorId, Type};
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
    /// Run the weights that are not repacked straight from the mapped file, in its 4 KiB
    /// pages (llama.cpp's default, `--mmap`). Unset, on Linux with transparent huge pages
    /// available, they are copied into memory backed by 2 MiB pages when it has room for them
    /// (see [`copy_weights`]).
    pub mmap: bool,
    /// Keep the file's Q5_0 matrices as Q5_0 in the copies. Unset, on x86-64, they are held
    /// as Q8_0 (see [`widen_q5_0`]): the same results, prompts faster, 12/22 more memory for
    /// those matrices.
    pub no_widen: bool,
    /// Layers whose weights and KV cache go on the device (llama.cpp's `-ngl`,
    /// `--gpu-layers`): the last N, counting the output projection as one more layer after
    /// the last, so `N > n_layer` is everything (llama.cpp's `llama_model::load_tensors`:
    /// `i_gpu_start = max(n_layer + 1 - n_gpu_layers, 0)`). Unset: everything when a device
    /// is given. Without a device, N > 0 picks the first GPU.
    pub gpu_layers: Option<u32>,
    /// Treat the device as having at most this many bytes free (to leave room for other
    /// programs, and for tests of the refusal).
    pub device_memory_limit: Option<u64>,
}

/// Which layers run on a device besides the CPU (llama.cpp's convention: the last ones).
pub struct Offload {
    pub(crate) backend: Backend,
    /// The first layer on the device (`i_gpu_start`); `n_layer` when only the output is.
    first_layer: usize,
    n_layer: usize,
}

impl Offload {
    /// Whether layer `il` (`n_layer` for the output projection and norm) is on the device.
    pub fn on_device(&self, il: usize) -> bool {
        il >= self.first_layer
    }

    /// Layers on the device, counting the output as one (llama.cpp's `-ngl` value).
    pub fn n_layers(&self) -> usize {
        self.n_layer + 1 - self.first_layer.min(self.n_layer + 1)
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The first layer on the device.
    pub(crate) fn first_layer(&self) -> usize {
        self.first_layer
    }
}

/// Which layers see an image's later tokens when it is fed with causal attention off
/// (llama.cpp's `llama_non_causal_type`, llama-hparams.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonCausal {
    /// Every layer (the window still applies on sliding layers).
    AllLayers,
    /// Sliding-window layers only; full-attention layers stay causal.
    SlidingOnly,
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

    /// How an image's tokens attend to each other in this model: `None` for causal (or no
    /// images), else which layers see both ways when the image is fed with causal attention
    /// off. Gemma 3: every layer (llama.cpp's default `LLAMA_NON_CAUSAL_TYPE_ALL`;
    /// transformers' Gemma 3 mask); Gemma 4: sliding layers only, when the file says so
    /// (`gemma4::Hparams::image_bidirectional`).
    pub fn image_attention(&self) -> Option<NonCausal> {
        match self {
            Arch::Gemma3 { .. } => Some(NonCausal::AllLayers),
            Arch::Gemma4 { hp, .. } => hp.image_bidirectional.then_some(NonCausal::SlidingOnly),
            _ => None,
        }
    }

    /// The layers a batch of input embeddings fed with causal attention off sees both ways
    /// (llama.cpp's `non_causal_type`: `SWA_ONLY` for gemma4, src/models/gemma4.cpp).
    pub fn non_causal(&self) -> NonCausal {
        match self {
            Arch::Gemma4 { .. } => NonCausal::SlidingOnly,
            _ => NonCausal::AllLayers,
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

    /// f32 values per token of a micro-batch that the architecture keeps alive through its
    /// graph beyond what every Gemma has (one residual row, the attention and FFN rows): the
    /// compute buffer grows by this times `n_ubatch` (`Session::scratch_bytes_for`).
    /// - Gemma 3n: the per-layer embedding inputs, `[n_embd_per_layer, n_tokens, n_layer]`,
    ///   made before the first layer and read by every layer (gemma3n.rs `per_layer_inputs`);
    ///   and AltUp's streams beside their predictions inside a layer, `2·n_altup − 1` rows of
    ///   `n_embd` (the active stream is the residual row already counted). Measured on an
    ///   E2B-shaped file (tests/tests/memory_estimate.rs).
    /// - Gemma 4: the per-layer embedding inputs, where the model has them.
    pub fn scratch_f32_per_token(&self) -> u64 {
        match self {
            Arch::Gemma { .. } | Arch::Gemma2 { .. } | Arch::Gemma3 { .. } => 0,
            Arch::Gemma4 { hp, .. } => hp.dims.n_layer as u64 * hp.n_embd_per_layer as u64,
            Arch::Gemma3n { hp, .. } => {
                let (d, altup) = (&hp.dims, hp.n_altup as u64);
                d.n_layer as u64 * hp.n_embd_per_layer as u64 + (2 * altup).saturating_sub(1) * d.n_embd as u64
            }
        }
    }

    /// The widest FFN among the layers that run on every row of a micro-batch. Gemma 3n's and
    /// Gemma 4's last layers share earlier layers' KV caches and run only on the rows whose
    /// logits are read (`arch::Pass::read_rows_inputs`), so their FFN rows (Gemma 4 E2B's are
    /// twice as wide) do not scale with the batch; every other layer's do.
    pub fn batch_ffn_width(&self) -> u32 {
        use crate::arch::first_cacheless_tail;
        match self {
            Arch::Gemma4 { hp, .. } => {
                let n =
                    first_cacheless_tail(hp.layers.iter().map(|l| l.shared_from.is_some())).unwrap_or(hp.layers.len());
                hp.layers[..n].iter().map(|l| l.n_ff).max().unwrap_or(0)
            }
            Arch::Gemma3n { hp, .. } => {
                let n = first_cacheless_tail(hp.shared_from.iter().map(Option::is_some)).unwrap_or(hp.n_ff.len());
                hp.n_ff[..n].iter().copied().max().unwrap_or(0)
            }
            _ => self.dims().n_ff,
        }
    }

    /// f32 values per token of a micro-batch that the architecture needs for a while, beside
    /// its resident ones: the per-layer embedding inputs of Gemma 3n and Gemma 4 are made from
    /// the gathered rows and the projection of the token embeddings, both
    /// `n_layer × n_embd_per_layer` wide and alive together until they are added (gemma3n.rs
    /// and gemma4.rs `per_layer_inputs`, llama.cpp's `project_per_layer_inputs`). The peak
    /// takes the largest of this, the attention scores and the FFN rows.
    pub fn transient_f32_per_token(&self) -> u64 {
        match self {
            Arch::Gemma { .. } | Arch::Gemma2 { .. } | Arch::Gemma3 { .. } => 0,
            Arch::Gemma4 { hp, .. } => 2 * hp.dims.n_layer as u64 * hp.n_embd_per_layer as u64,
            Arch::Gemma3n { hp, .. } => 2 * hp.dims.n_layer as u64 * hp.n_embd_per_layer as u64,
        }
    }

    /// The output projection (the token embedding itself when tied and not duplicated).
    fn output(&self) -> TensorId {
        match self {
            Arch::Gemma { weights: w, .. } => w.output,
            Arch::Gemma2 { weights: w, .. } => w.output,
            Arch::Gemma3 { weights: w, .. } => w.output,
            Arch::Gemma4 { weights: w, .. } => w.output,
            Arch::Gemma3n { weights: w, .. } => w.output,
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
    /// The CPU backend: everything without a device, the rest with one.
    pub(crate) backend: Backend,
    pub(crate) offload: Option<Offload>,
    pub(crate) wctx: Context,
    pub(crate) arch: Arch,
    tokenizer: Tokenizer,
    weight_bytes: usize,
    mapped: bool,
    placed: Placed,
    load_time: Duration,
}

impl Model {
    /// Opens `path` and loads it according to `opts`.
    pub fn load(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Model> {
        let start = Instant::now();
        let mut file = GgufFile::open(path.as_ref())?;
        let device = offload_device(opts)?;
        let backend = Backend::cpu()?;
        backend.set_n_threads(opts.threads.unwrap_or_else(default_threads))?;
        let arch_name = file.get_str(names::general::ARCHITECTURE)?.to_string();
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let wctx = Context::new(file.tensors().len() + 1, 0)?;
        let offload;
        let (arch, declared) = {
            let mut decl = WeightDecl::new(&wctx, &file);
            let mut arch = Arch::load(&arch_name, &file, &mut decl)?;
            let n_layer = arch.dims().n_layer as usize;
            offload = device.map(|d| Offload::new(d, n_layer, opts.gpu_layers)).transpose()?;
            let output_on_device = offload.as_ref().is_some_and(|o| o.on_device(n_layer));
            let (output, token_embd) = arch.output_mut();
            let repacked_output = offload.is_none()
                && repack_type(&backend, opts.no_repack).is_some_and(|b| {
                    wctx.tensor(token_embd)
                        .is_ok_and(|t| b.supports_mul_mat_weight(backend.device(), t.ty(), t.ne()[0], t.ne()[1]))
                });
            if *output == token_embd && (output_on_device || repacked_output) {
                // Tied output: a second tensor over the same file bytes, so the output
                // projection can be repacked (or offloaded) while get_rows reads the mapped
                // original (llama.cpp duplicates it the same way). Otherwise the one table
                // serves both, and is copied like the other matrices (`load_mapped`).
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
        let mapped = offload.is_none();
        let placed = match &offload {
            None => load_mapped(&wctx, &gguf, (&declared, &gathered), arch.output(), &backend, opts)?,
            Some(o) => {
                load_offloaded(&wctx, &gguf, (&declared, &gathered), o, opts.device_memory_limit)?;
                Placed::default()
            }
        };
        let load_time = start.elapsed();
        Ok(Model { gguf, backend, offload, wctx, arch, tokenizer, weight_bytes, mapped, placed, load_time })
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
        self.placed.repacked
    }

    /// Bytes of the repacked copies (anonymous memory besides the mapped file).
    pub fn repacked_bytes(&self) -> usize {
        self.placed.repacked_bytes
    }

    /// Weights copied into memory backed by 2 MiB pages (CPU; see [`LoadOptions::mmap`]), as
    /// they are or, for Q5_0 matrices on x86-64, widened to Q8_0 ([`widened_weights`](Self::widened_weights)).
    pub fn copied_weights(&self) -> usize {
        self.placed.copied
    }

    /// Bytes of those copies (anonymous memory; the file's pages under them are given back).
    pub fn copied_bytes(&self) -> usize {
        self.placed.copied_bytes
    }

    /// The file's bytes under the copies: [`copied_bytes`](Self::copied_bytes) less what
    /// widening added.
    pub fn copied_file_bytes(&self) -> usize {
        self.placed.copied_file_bytes
    }

    /// Of the copies, the Q5_0 matrices held as Q8_0: the same values, which ggml's x86
    /// kernels multiply faster and with the same results.
    pub fn widened_weights(&self) -> usize {
        self.placed.widened
    }

    /// Whether the weights are the mapped file itself (CPU) rather than device copies.
    pub fn weights_mapped(&self) -> bool {
        self.mapped
    }

    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// The backend most of the model runs on: the device's when layers are offloaded, else
    /// the CPU's.
    pub fn backend(&self) -> &Backend {
        self.offload.as_ref().map_or(&self.backend, |o| &o.backend)
    }

    /// The CPU backend (the whole model without a device; the layers not offloaded with one).
    pub fn cpu_backend(&self) -> &Backend {
        &self.backend
    }

    /// The device and its layers, when some are offloaded.
    pub fn offload(&self) -> Option<&Offload> {
        self.offload.as_ref()
    }

    /// Sets the CPU backend's compute threads (a device backend has none).
    pub fn set_threads(&self, n: usize) -> Result<()> {
        self.backend.set_n_threads(n)
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

/// Where [`load_mapped`] put the weights that are not the mapped file's bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Placed {
    repacked: usize,
    repacked_bytes: usize,
    copied: usize,
    copied_bytes: usize,
    /// Of the copies, the Q5_0 matrices held as Q8_0 (`widen_q5_0`).
    widened: usize,
    /// The file's bytes under the copies (less than `copied_bytes` by what widening adds).
    copied_file_bytes: usize,
}

/// CPU: weights ggml can repack go to the repacking buffer (copied and interleaved); the other
/// matrices and vectors, the tied embedding that is also the output projection among them,
/// are copied as they are into memory on 2 MiB pages when [`copy_weights`] says so; the
/// tables only gathered by row, and everything else without that, are the mapped file's
/// bytes. The file's pages under every copy are given back.
fn load_mapped(
    wctx: &Context,
    gguf: &Arc<GgufFile>,
    (declared, gathered): (&[(String, TensorId)], &[TensorId]),
    output: TensorId,
    backend: &Backend,
    opts: &LoadOptions,
) -> Result<Placed> {
    let repack = repack_type(backend, opts.no_repack);
    let mut mapped = Vec::new();
    let mut packed = Vec::new();
    let mut copied = Vec::new();
    for (source, id) in declared {
        let t = wctx.tensor(*id)?;
        let ne = t.ne();
        // Tables only read by get_rows (Gemma 4's per-layer embeddings; token_embd when the
        // output projection is a duplicate of it): repacked layouts do not serve get_rows,
        // and a copy would make resident what a prompt never reads. A tied token_embd that is
        // also the output is read whole at every step, so it is copied.
        let gathered_only = gathered.contains(id) && *id != output;
        match repack {
            Some(b)
                if !gathered_only && ne[1] > 1 && b.supports_mul_mat_weight(backend.device(), t.ty(), ne[0], ne[1]) =>
            {
                packed.push((source, t))
            }
            _ if !gathered_only => copied.push((source, t)),
            _ => mapped.push((source.clone(), t)),
        }
    }
    // Q5_0 matrices among the copies are held as Q8_0 where that is exact and faster
    // (`widen_q5_0`): the copy is what memory is asked for.
    let widen = !opts.no_widen && widen_q5_0(backend);
    let widens = |t: &crate::ggml::Tensor<'_>| widen && t.ty() == Type::Q5_0 && t.ne()[1] > 1;
    let copy_bytes = copied
        .iter()
        .map(|(_, t)| if widens(t) { crate::ggml::q5_0_widened_len(t.nbytes()) } else { t.nbytes() })
        .sum::<usize>();
    if !copy_weights(opts, &backend.device(), copy_bytes) {
        mapped.extend(copied.drain(..).map(|(s, t)| (s.clone(), t)));
    }
    let mut widened = Vec::new();
    for (source, t) in &copied {
        if widens(t) {
            t.retype(Type::Q8_0)?;
            widened.push(source.as_str());
        }
    }
    let sources: Vec<_> = mapped.iter().map(|(s, _)| s.clone()).collect();
    let tensors: Vec<_> = mapped.iter().map(|(_, t)| *t).collect();
    wctx.alloc_from_host(gguf.clone(), &tensors, |g, t| {
        let i = tensors.iter().position(|x| x.name() == t.name()).expect("tensor from the list above");
        let info = g.tensor(&sources[i]).ok_or_else(|| Error::MissingTensor { name: sources[i].clone() })?;
        Ok(g.tensor_data(info)?)
    })?;
    // The copy is what runs from now on: the file's pages are given back, so the weights are
    // resident once, not twice. (A mapped tensor sharing a page, or get_rows on the tied
    // embedding, faults what it needs back in.) Plain copies go piece by piece, each piece's
    // pages given back before the next is read, so that the peak is the copies plus one
    // piece, not plus the largest tensor (the 270M's 170 MiB output projection).
    const PIECE: usize = 8 << 20;
    let info_of = |source: &str| gguf.tensor(source).ok_or_else(|| Error::MissingTensor { name: source.to_string() });
    if !copied.is_empty() {
        let list: Vec<_> = copied.iter().map(|(_, t)| *t).collect();
        wctx.alloc_tensors_listed(backend.device().buffer_type()?, &list)?;
        // A widened tensor's pieces are whole Q5_0 blocks (22 bytes), each written as the
        // Q8_0 blocks it makes.
        const WIDE_PIECE: usize = PIECE / 22 * 22;
        let mut wide = Vec::new();
        for (source, t) in &copied {
            let info = info_of(source)?;
            let data = gguf.tensor_data(info)?;
            let is_widened = widened.contains(&source.as_str());
            for (i, piece) in data.chunks(if is_widened { WIDE_PIECE } else { PIECE }).enumerate() {
                if is_widened {
                    wide.clear();
                    crate::ggml::widen_q5_0_to_q8_0(piece, &mut wide)?;
                    t.set_bytes_at(crate::ggml::q5_0_widened_len(i * WIDE_PIECE), &wide)?;
                } else {
                    t.set_bytes_at(i * PIECE, piece)?;
                }
                let start = (piece.as_ptr() as usize - data.as_ptr() as usize) as u64;
                gguf.release_tensor_data_part(info, start..start + piece.len() as u64);
            }
        }
    }
    if let (Some(b), false) = (repack, packed.is_empty()) {
        // The repacking buffer takes each tensor whole.
        wctx.alloc_tensors_in(b)?;
        for (source, t) in &packed {
            let info = info_of(source)?;
            t.set_bytes(gguf.tensor_data(info)?)?;
            gguf.release_tensor_data(info);
        }
    }
    Ok(Placed {
        repacked: packed.len(),
        repacked_bytes: packed.iter().map(|(_, t)| t.nbytes()).sum(),
        copied: copied.len(),
        copied_bytes: copied.iter().map(|(_, t)| t.nbytes()).sum(),
        widened: widened.len(),
        copied_file_bytes: copied
            .iter()
            .map(|(source, _)| info_of(source).map(|info| info.n_bytes as usize))
            .sum::<Result<usize>>()?,
    })
}

/// Whether Q5_0 matrices copied at load are held as Q8_0
/// ([`widen_q5_0_to_q8_0`](crate::ggml::widen_q5_0_to_q8_0)): on x86-64 when ggml's CPU backend
/// has llamafile's kernels and AVX2 (its features `LLAMAFILE`, `AVX2`). A prompt's batch then
/// goes through llamafile's `tinyBLAS_Q0_AVX`, one template for both types, and a one-token
/// step through the `__AVX2__` branches of ggml's dot products (or `ggml/gemv.rs`, which
/// reproduces the Q8_0 one), which take the same steps for both; so the results are the same
/// bit for bit, and the 8-bit blocks are faster to load. Gemma's Q4_K_M files have Q5_0 where
/// a row is not a whole number of K-quant blocks (the 270M's 640, the 1B's 1152): attn_q,
/// attn_k, ffn_gate, ffn_up and half the attn_v. Measured (README, "Speed"): prompts 7–16%
/// faster; 12/22 more memory for those matrices (+23 MiB on the 270M, +163 MiB on a 1B, which
/// `--no-widen` saves). Not on Arm, where llamafile has a Q8_0 kernel but no Q5_0 one, so the
/// two types would take different code and round differently.
fn widen_q5_0(backend: &Backend) -> bool {
    if !cfg!(target_arch = "x86_64") || !backend.is_cpu() {
        return false;
    }
    let features = crate::ggml::backend_features(backend.device());
    let has = |name: &str| features.iter().any(|f| f.name == name && f.value == "1");
    has("LLAMAFILE") && has("AVX2")
}

/// Whether the CPU's weights that are not repacked are copied into memory backed by 2 MiB
/// pages instead of running from the mapped file. A decode step streams every weight once;
/// with the file's 4 KiB pages each 4 KiB costs a TLB entry, and in a virtual machine a
/// miss costs a walk of two page tables. Measured on a 2-core AMD EPYC VM (README, "Speed"):
/// one core read 178 MiB at 12–15 GB/s from 4 KiB pages and 27–28 GB/s from 2 MiB pages.
/// The bytes, hence the results, are the same. Not when `--mmap` asks for the file's pages,
/// off Linux, where transparent huge pages are off (`/sys/kernel/mm/transparent_hugepage/
/// enabled` says `[never]`: the copy would gain nothing), or when the copies would not fit
/// in the memory the CPU device has free (`MemAvailable`, [`Device::memory`]), less an eighth:
/// a model larger than memory still runs from the file.
fn copy_weights(opts: &LoadOptions, cpu: &Device, bytes: usize) -> bool {
    if opts.mmap || !cfg!(target_os = "linux") || bytes == 0 {
        return false;
    }
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if thp.contains("[never]") || thp.is_empty() {
        return false;
    }
    let (available, _) = cpu.memory();
    bytes <= available - available / 8
}

/// The device for `opts`, if any: the named one (none when it is the CPU), or with
/// `gpu_layers > 0` and no name, the first GPU.
fn offload_device(opts: &LoadOptions) -> Result<Option<Device>> {
    let device = match &opts.device {
        Some(name) => Device::by_name(name)?,
        None if opts.gpu_layers.unwrap_or(0) > 0 => {
            Device::all().into_iter().find(|d| d.kind() != DeviceKind::Cpu).ok_or_else(|| Error::NoSuchDevice {
                name: "(a GPU, for --gpu-layers)".into(),
                available: Device::all().iter().map(|d| d.name()).collect::<Vec<_>>().join(", "),
            })?
        }
        None => return Ok(None),
    };
    Ok((device.kind() != DeviceKind::Cpu).then_some(device))
}

impl Offload {
    fn new(device: Device, n_layer: usize, gpu_layers: Option<u32>) -> Result<Offload> {
        let ngl = gpu_layers.map_or(n_layer + 1, |n| (n as usize).min(n_layer + 1));
        Ok(Offload { backend: Backend::new(device)?, first_layer: n_layer + 1 - ngl, n_layer })
    }

    /// The layer a weight belongs to, by its name (`blk.N.…`); `None` for the input tables
    /// (read by row; llama.cpp keeps `LLM_TENSOR_LAYER_INPUT` on the CPU); `n_layer` for the
    /// rest, output and the other global tensors (llama.cpp's `create_tensor` gives a tensor
    /// without a block number the output layer's device).
    fn layer_of(&self, name: &str, gathered: bool) -> Option<usize> {
        if gathered {
            return None;
        }
        let block = name.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|n| n.parse().ok());
        Some(block.unwrap_or(self.n_layer))
    }
}

/// Offloaded: the device's layers copied into one device buffer (refused before allocating
/// when they do not fit its free memory); the CPU's mapped from the file, as without a device
/// but not repacked (so that the scheduler may copy them to the device for large batches,
/// as llama.cpp's `op_offload` does with weights in host memory).
fn load_offloaded(
    wctx: &Context,
    gguf: &Arc<GgufFile>,
    (declared, gathered): (&[(String, TensorId)], &[TensorId]),
    offload: &Offload,
    limit: Option<u64>,
) -> Result<()> {
    let device = offload.backend.device();
    let buft = device.buffer_type()?;
    let mut host = Vec::new();
    let mut dev = Vec::new();
    for (source, id) in declared {
        let t = wctx.tensor(*id)?;
        let ne = t.ne();
        // A matrix the device cannot multiply with stays on the CPU, as llama.cpp's
        // `weight_buft_supported` decides (e.g. a tensor past the device's
        // maxStorageBufferRange: Gemma's 262 144-row output on lavapipe).
        let usable = ne[1] <= 1 || buft.supports_mul_mat_weight(device, t.ty(), ne[0], ne[1]);
        match offload.layer_of(&t.name(), gathered.contains(id)) {
            Some(il) if offload.on_device(il) && usable => dev.push((source, t)),
            _ => host.push((source.clone(), t)),
        }
    }
    let needed = dev.iter().map(|(_, t)| device.alloc_size(*t)).sum::<u64>();
    let (free, _) = device.memory();
    let available = limit.map_or(free as u64, |l| l.min(free as u64));
    if needed > available {
        return Err(Error::DeviceMemory {
            device: device.name(),
            what: format!("the weights of {} offloaded layers", offload.n_layers()),
            needed,
            available,
        });
    }
    let sources: Vec<_> = host.iter().map(|(s, _)| s.clone()).collect();
    let tensors: Vec<_> = host.iter().map(|(_, t)| *t).collect();
    wctx.alloc_from_host(gguf.clone(), &tensors, |g, t| {
        let i = tensors.iter().position(|x| x.name() == t.name()).expect("tensor from the list above");
        let info = g.tensor(&sources[i]).ok_or_else(|| Error::MissingTensor { name: sources[i].clone() })?;
        Ok(g.tensor_data(info)?)
    })?;
    wctx.alloc_tensors(&offload.backend)?;
    for (source, t) in &dev {
        let info = gguf.tensor(source).ok_or_else(|| Error::MissingTensor { name: source.to_string() })?;
        t.set_bytes(gguf.tensor_data(info)?)?;
    }
    // The scheduler places each op by where its weights are, and only buffers marked as
    // weights count for that (ggml-backend.cpp, ggml_backend_sched_backend_id_from_cur).
    wctx.mark_weights();
    Ok(())
}
