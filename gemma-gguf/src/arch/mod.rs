//! Gemma architectures: one file each (hyper-parameters, weights, graph), and the pieces
//! they share: the name table, weight declaration against the GGUF, and the attention step.
#![forbid(unsafe_code)]

pub mod gemma;
pub mod gemma2;
pub mod gemma3;
pub mod gemma3n;
pub mod gemma4;

pub use crate::names;

use crate::error::{Error, Result};
use crate::ggml::{Context, Graph, Rope, Tensor, TensorId, Type};
use crate::gguf::GgufFile;
use crate::kv_cache::{BatchInputs, KvCache, KvInput};

/// Reads a required u32 hyper-parameter `{arch}.{suffix}`, refusing 0.
pub(crate) fn required_u32(g: &GgufFile, arch: &str, suffix: &str) -> Result<u32> {
    let key = names::arch_key(arch, suffix);
    let v = g.get_u32(&key)?;
    if v == 0 {
        return Err(Error::BadHparam { key, value: "0".into(), why: "must be at least 1" });
    }
    Ok(v)
}

/// Reads an optional u32 `{arch}.{suffix}`; `default` when the key is absent.
pub(crate) fn optional_u32(g: &GgufFile, arch: &str, suffix: &str, default: u32) -> Result<u32> {
    let key = names::arch_key(arch, suffix);
    match g.get(&key) {
        None => Ok(default),
        Some(_) => Ok(g.get_u32(&key)?),
    }
}

/// Reads an optional f32 `{arch}.{suffix}` that must be finite and > 0 when present.
pub(crate) fn optional_positive_f32(g: &GgufFile, arch: &str, suffix: &str) -> Result<Option<f32>> {
    let key = names::arch_key(arch, suffix);
    if g.get(&key).is_none() {
        return Ok(None);
    }
    let v = g.get_f32(&key)?;
    if !(v.is_finite() && v > 0.0) {
        return Err(Error::BadHparam { key, value: v.to_string(), why: "must be finite and > 0" });
    }
    Ok(Some(v))
}

/// Layers beyond this are not a real Gemma model (the largest has 62).
pub(crate) const MAX_LAYERS: u32 = 1024;

/// The sizes every Gemma generation reads the same way (llama.cpp's generic loader,
/// `llama_model_base::load_hparams` in llama-model.cpp): counts, head geometry, norm epsilon.
#[derive(Debug, Clone)]
pub struct Dims {
    pub n_vocab: u32,
    pub n_ctx_train: u32,
    pub n_embd: u32,
    pub n_layer: u32,
    pub n_ff: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    /// Key and value length per head (equal in every Gemma).
    pub head_dim: u32,
    pub n_rot: u32,
    pub rms_eps: f32,
}

impl Dims {
    /// Reads and checks the `{arch}.*` sizes; the error names the key at fault.
    pub(crate) fn from_gguf(g: &GgufFile, arch: &str) -> Result<Dims> {
        let bad =
            |suffix: &str, value: String, why| Error::BadHparam { key: names::arch_key(arch, suffix), value, why };
        let n_layer = required_u32(g, arch, names::llm::BLOCK_COUNT)?;
        if n_layer > MAX_LAYERS {
            return Err(bad(names::llm::BLOCK_COUNT, n_layer.to_string(), "absurd layer count"));
        }
        let n_embd = required_u32(g, arch, names::llm::EMBEDDING_LENGTH)?;
        let n_head = required_u32(g, arch, names::llm::HEAD_COUNT)?;
        // llama.cpp: head_count_kv defaults to head_count, key/value length to n_embd/n_head,
        // rope dims to the key length.
        let n_head_kv = optional_u32(g, arch, names::llm::HEAD_COUNT_KV, n_head)?;
        if n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(bad(names::llm::HEAD_COUNT_KV, n_head_kv.to_string(), "must divide head_count"));
        }
        let head_dim = optional_u32(g, arch, names::llm::KEY_LENGTH, n_embd / n_head)?;
        let head_dim_v = optional_u32(g, arch, names::llm::VALUE_LENGTH, head_dim)?;
        if head_dim == 0 || head_dim_v != head_dim || head_dim % 2 != 0 || n_head.checked_mul(head_dim).is_none() {
            let why = "key and value length must be equal, even, > 0 and fit head_count × key_length in u32";
            return Err(bad(names::llm::KEY_LENGTH, format!("{head_dim}/{head_dim_v}"), why));
        }
        let n_rot = optional_u32(g, arch, names::llm::ROPE_DIMENSION_COUNT, head_dim)?;
        if n_rot == 0 || n_rot % 2 != 0 || n_rot > head_dim {
            let why = "must be even, > 0 and at most the head size";
            return Err(bad(names::llm::ROPE_DIMENSION_COUNT, n_rot.to_string(), why));
        }
        let rms_eps = g.get_f32(&names::arch_key(arch, names::llm::RMS_EPS))?;
        if !(rms_eps.is_finite() && rms_eps > 0.0) {
            return Err(bad(names::llm::RMS_EPS, rms_eps.to_string(), "must be finite and > 0"));
        }
        Ok(Dims {
            n_vocab: g.get_str_array(names::tokenizer::TOKENS).map(|t| t.len() as u32)?,
            n_ctx_train: required_u32(g, arch, names::llm::CONTEXT_LENGTH)?,
            n_embd,
            n_layer,
            n_ff: required_u32(g, arch, names::llm::FEED_FORWARD_LENGTH)?,
            n_head,
            n_head_kv,
            head_dim,
            n_rot,
            rms_eps,
        })
    }

    /// Query scale: 1/√head_dim, except 1/√(n_embd/n_head) for the 27B models, which
    /// llama.cpp recognises by their layer count (gemma_pytorch's `query_pre_attn_scalar`
    /// has no GGUF key; llama.cpp's gemma2.cpp and gemma3.cpp loaders).
    pub(crate) fn attn_scale(&self, n_layer_27b: u32) -> f32 {
        if self.n_layer == n_layer_27b {
            1.0 / ((self.n_embd / self.n_head) as f32).sqrt()
        } else {
            1.0 / (self.head_dim as f32).sqrt()
        }
    }
}

/// The rope base `{arch}.rope.freq_base` (llama.cpp's default 10 000 when absent) and the
/// frequency scale 1/`rope.scaling.factor` (1 when absent).
pub(crate) fn rope_base_and_scale(g: &GgufFile, arch: &str) -> Result<(f32, f32)> {
    /// llama-model.cpp: `rope_freq_base_train = 10000.0f` unless the key is present.
    const DEFAULT_ROPE_BASE: f32 = 10_000.0;
    let base = optional_positive_f32(g, arch, names::llm::ROPE_FREQ_BASE)?.unwrap_or(DEFAULT_ROPE_BASE);
    let factor = optional_positive_f32(g, arch, names::llm::ROPE_SCALING_FACTOR)?.unwrap_or(1.0);
    Ok((base, 1.0 / factor))
}

/// Which layers use the sliding window: `{arch}.attention.sliding_window_pattern` as a bool
/// per layer, or a period `p` (layer `il` is local iff `il % p < p − 1`; 0: all local),
/// `default_period` when absent (llama.cpp's `load_swa_pattern` and `set_swa_pattern`).
pub(crate) fn swa_layers(g: &GgufFile, arch: &str, n_layer: u32, default_period: u32) -> Result<Vec<bool>> {
    let key = names::arch_key(arch, names::llm::SLIDING_WINDOW_PATTERN);
    if let Some(crate::gguf::GgufValue::Array(crate::gguf::GgufArray::Bool(v))) = g.get(&key) {
        if v.len() != n_layer as usize {
            return Err(Error::BadHparam {
                key,
                value: format!("{} entries", v.len()),
                why: "needs one entry per layer",
            });
        }
        return Ok(v.clone());
    }
    let p = optional_u32(g, arch, names::llm::SLIDING_WINDOW_PATTERN, default_period)?;
    Ok((0..n_layer).map(|il| p == 0 || il % p < p - 1).collect())
}

/// Declares model weights in a ggml context, checking each against the GGUF's tensor info.
pub(crate) struct WeightDecl<'a> {
    pub ctx: &'a Context,
    pub gguf: &'a GgufFile,
    /// Declared tensors with their GGUF names, in order.
    pub declared: Vec<(String, TensorId)>,
    /// Tensors only read by row (`get_rows`): kept as mapped, never repacked.
    pub gathered: Vec<TensorId>,
}

impl<'a> WeightDecl<'a> {
    pub fn new(ctx: &'a Context, gguf: &'a GgufFile) -> Self {
        WeightDecl { ctx, gguf, declared: Vec::new(), gathered: Vec::new() }
    }

    /// Declares tensor `name` with the expected shape (ggml order); its type comes from the
    /// file. Missing tensors and shape mismatches are errors naming the tensor.
    pub fn tensor(&mut self, name: &str, dims: &[u64]) -> Result<TensorId> {
        let info = self.gguf.tensor(name).ok_or_else(|| Error::MissingTensor { name: name.into() })?;
        if info.dims != dims {
            return Err(Error::TensorShape { name: name.into(), expected: dims.to_vec(), actual: info.dims.clone() });
        }
        let ty = Type::from_id(info.ggml_type.id())?;
        // Norm weights multiply activations (f32 only in ggml's CPU kernels); matrices must
        // be float or quantised: integer weights have no kernels.
        let usable = if dims.len() == 1 { ty == Type::F32 } else { ty.is_matmul_weight() };
        if !usable {
            let expected = if dims.len() == 1 { "f32 (a norm weight)" } else { "a float or quantised type" };
            return Err(Error::WrongTensorType { name: name.into(), expected, actual: ty.name().into() });
        }
        let ne: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
        let t = self.ctx.new_tensor(ty, &ne)?.set_name(name)?;
        let id = self.ctx.id_of(t)?;
        self.declared.push((name.to_string(), id));
        Ok(id)
    }

    /// [`tensor`](Self::tensor) when the file has `name`, `None` when it does not.
    pub fn optional(&mut self, name: &str, dims: &[u64]) -> Result<Option<TensorId>> {
        match self.gguf.tensor(name) {
            None => Ok(None),
            Some(_) => self.tensor(name, dims).map(Some),
        }
    }

    /// [`tensor`](Self::tensor) for a table only gathered by row (embeddings): it stays in
    /// the mapped file, so only the rows a run reads become resident.
    pub fn gathered(&mut self, name: &str, dims: &[u64]) -> Result<TensorId> {
        let id = self.tensor(name, dims)?;
        self.gathered.push(id);
        Ok(id)
    }
}

impl WeightDecl<'_> {
    /// Declares `token_embd` `[n_embd, n_vocab]`, `output_norm` `[n_embd]` and the output
    /// projection: `output` when the file has it, else `token_embd` itself (Gemma ties them).
    /// Returns (token_embd, output_norm, output).
    pub fn embeddings(&mut self, n_embd: u64, n_vocab: u64) -> Result<(TensorId, TensorId, TensorId)> {
        let token_embd = self.gathered(&names::tensor::global(names::tensor::TOKEN_EMBD), &[n_embd, n_vocab])?;
        let output_norm = self.tensor(&names::tensor::global(names::tensor::OUTPUT_NORM), &[n_embd])?;
        let output = match self.gguf.tensor(&names::tensor::global(names::tensor::OUTPUT)) {
            Some(_) => self.tensor(&names::tensor::global(names::tensor::OUTPUT), &[n_embd, n_vocab])?,
            None => token_embd,
        };
        Ok((token_embd, output_norm, output))
    }

    /// Declares `name` as a second tensor over the bytes of the already declared `source`.
    pub fn duplicate(&mut self, source: &str, name: &str) -> Result<TensorId> {
        let (_, id) = self
            .declared
            .iter()
            .find(|(n, _)| n == source)
            .ok_or_else(|| Error::MissingTensor { name: source.into() })?;
        let src = self.ctx.tensor(*id)?;
        let t = self.ctx.new_tensor(src.ty(), &src.ne()[..2])?.set_name(name)?;
        let id = self.ctx.id_of(t)?;
        self.declared.push((source.to_string(), id));
        Ok(id)
    }
}

/// One layer's attention heads.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub head_dim: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
}

/// The shapes of one attention step (ggml order, see the graph builders).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttnShape {
    pub head_dim: i64,
    pub n_head: i64,
    pub n_head_kv: i64,
    pub n_tokens: i64,
    /// Cache cells attended over.
    pub n_kv: i64,
    /// Fused flash-attention kernel instead of separate products and softmax.
    pub flash: bool,
    /// Cap on the attention scores, `c·tanh(s/c)` before the mask (Gemma 2).
    pub logit_softcap: Option<f32>,
    /// Layer index, for node names.
    pub il: usize,
}

/// Scaled-dot-product attention of `q` `[head_dim, n_head, n_tokens]` over the first `n_kv`
/// cells of a layer's cache (`k`, `v`: `[head_dim·n_head_kv, n_cells]` rows), with the
/// additive `mask` (`[n_kv, n_tokens]`, f32; f16 and padded for flash attention). The
/// query is already scaled; scores are soft-capped first when the shape says so
/// (llama-graph.cpp `build_attn_mha`: before the mask and softmax, in the fused kernel too).
/// Returns `[head_dim·n_head, n_tokens]`.
pub(crate) fn attention<'s>(
    ctx: &'s Context,
    q: Tensor<'s>,
    k_cache: Tensor<'s>,
    v_cache: Tensor<'s>,
    mask: Tensor<'s>,
    s: AttnShape,
) -> Result<Tensor<'s>> {
    let (flash, il) = (s.flash, s.il);
    let row = k_cache.nb()[1];
    let elt = k_cache.ty().row_size(s.head_dim)?;
    // k: [head_dim, n_head_kv, n_kv] view of the first n_kv cells
    let k = ctx.view(k_cache, &[s.head_dim, s.n_head_kv, s.n_kv], [elt, row], 0)?;
    // q: [head_dim, n_tokens, n_head]; k: [head_dim, n_kv, n_head_kv]
    let q = ctx.permute(q, [0, 2, 1, 3])?;
    let k = ctx.permute(k, [0, 2, 1, 3])?;
    if flash {
        // v: one row per cell, as k
        let v = ctx.view(
            v_cache,
            &[s.head_dim, s.n_head_kv, s.n_kv],
            [v_cache.ty().row_size(s.head_dim)?, v_cache.nb()[1]],
            0,
        )?;
        let v = ctx.permute(v, [0, 2, 1, 3])?;
        // out: [head_dim, n_head, n_tokens]
        let out = ctx.flash_attn_ext(q, k, v, Some(mask), 1.0, s.logit_softcap.unwrap_or(0.0))?;
        return ctx.reshape(out, &[s.head_dim * s.n_head, s.n_tokens]);
    }
    // kq = k·qᵀ: [n_kv, n_tokens, n_head]
    let mut kq = ctx.mul_mat(k, q)?.set_f32_accumulation();
    if let Some(cap) = s.logit_softcap {
        kq = ctx.scale(ctx.tanh(ctx.scale(kq, 1.0 / cap)?)?, cap)?;
    }
    let kq = ctx.soft_max_ext(kq, Some(mask), 1.0)?.set_name(&format!("kq_soft_max-{il}"))?;
    // vᵀ: [n_kv, head_dim, n_head_kv], a view of the transposed V cache (kv_cache.rs,
    // `v_trans_indices`): rows of n_kv cells, one per value, each head's after the last.
    let n_cells = v_cache.ne()[1];
    let v_row = v_cache.ty().row_size(n_cells)?;
    let vt = ctx.view(v_cache, &[s.n_kv, s.head_dim, s.n_head_kv], [v_row, v_row * s.head_dim as usize], 0)?;
    // kqv: [head_dim, n_tokens, n_head] → [head_dim, n_head, n_tokens]
    let kqv = ctx.mul_mat(vt, kq)?;
    let out = ctx.cont(ctx.permute(kqv, [0, 2, 1, 3])?)?;
    ctx.reshape(out, &[s.head_dim * s.n_head, s.n_tokens])
}

/// What a forward pass reads besides its weights and hyper-parameters (graph and weight
/// contexts, the KV cache, the batch inputs, the attention kernel), and the graph steps every
/// Gemma generation takes the same way.
pub(crate) struct Pass<'s, 'm> {
    pub ctx: &'s Context,
    pub wctx: &'s Context,
    pub kv: &'s KvCache,
    pub inp: &'m BatchInputs<'s>,
    pub flash_attn: bool,
}

impl<'s> Pass<'s, '_> {
    /// RMS norm of `x` times weight `w` (which already holds Gemma's `1 + w`), named `name-il`.
    pub fn norm(&self, x: Tensor<'s>, w: TensorId, eps: f32, name: &str, il: usize) -> Result<Tensor<'s>> {
        let y = self.ctx.rms_norm(x, eps)?;
        self.ctx.mul(y, self.wctx.tensor(w)?)?.set_name(&format!("{name}-{il}"))
    }

    /// `w · x`: `[ne0(w), …]` rows of `w` dotted with the columns of `x`. A Q8_0 weight in
    /// the CPU's memory times one column (a decode step) takes the prefetching kernel of
    /// `ggml/gemv.rs`, which gives ggml's results bit for bit.
    pub fn mm(&self, w: TensorId, x: Tensor<'s>) -> Result<Tensor<'s>> {
        let w = self.wctx.tensor(w)?;
        match self.ctx.mul_mat_q8_0_column(w, x)? {
            Some(y) => Ok(y),
            None => self.ctx.mul_mat(w, x),
        }
    }

    /// x = token_embd[tokens] · √n_embd: `[n_embd, n_tokens]`.
    pub fn embed(&self, token_embd: TensorId, n_embd: u32) -> Result<Tensor<'s>> {
        let embd = self.ctx.get_rows(self.wctx.tensor(token_embd)?, self.inp.tokens)?;
        self.ctx.scale(embd, (n_embd as f32).sqrt())?.set_name("inp_scaled")
    }

    /// q, k: `[head_dim, n_head(_kv), n_tokens]` rotated (NEOX ordering) at the batch positions.
    pub fn rope(&self, q: Tensor<'s>, k: Tensor<'s>, rope: Rope, il: usize) -> Result<(Tensor<'s>, Tensor<'s>)> {
        let q = self.ctx.rope(q, self.inp.pos, rope)?.set_name(&format!("Qcur-{il}"))?;
        let k = self.ctx.rope(k, self.inp.pos, rope)?.set_name(&format!("Kcur-{il}"))?;
        Ok((q, k))
    }

    /// Stores the batch's `k` `[head_dim, n_head_kv, n_tokens]` and `v`
    /// `[head_dim·n_head_kv, n_tokens]` in layer `il`'s cache rows, then attends the scaled `q`
    /// `[head_dim, n_head, n_tokens]` over the cache: `[head_dim·n_head, n_tokens]`.
    pub fn attend(
        &self,
        gf: &mut Graph<'s>,
        (q, k, v): (Tensor<'s>, Tensor<'s>, Tensor<'s>),
        d: &Dims,
        logit_softcap: Option<f32>,
        il: usize,
    ) -> Result<Tensor<'s>> {
        let heads = Heads { head_dim: d.head_dim, n_head: d.n_head, n_head_kv: d.n_head_kv };
        self.attend_heads(gf, q, Some((k, v)), heads, logit_softcap, il)
    }

    /// [`attend`](Self::attend) with the layer's own head shape; `kv` `None`: the layer
    /// stores nothing and reads the cache it shares with an earlier layer (Gemma 4).
    pub fn attend_heads(
        &self,
        gf: &mut Graph<'s>,
        q: Tensor<'s>,
        kv: Option<(Tensor<'s>, Tensor<'s>)>,
        h: Heads,
        logit_softcap: Option<f32>,
        il: usize,
    ) -> Result<Tensor<'s>> {
        let (ctx, n_tokens) = (self.ctx, q.ne()[2]);
        let (hd, nkv) = (h.head_dim as i64, h.n_head_kv as i64);
        let (kc, vc, kvi) = self.kv.layer(il, self.inp)?;
        if let Some((k, v)) = kv {
            gf.expand(ctx.set_rows(kc, ctx.reshape(k, &[hd * nkv, n_tokens])?, kvi.idx)?)?;
            match kvi.v_idx {
                // Transposed V (no flash attention): one element per index.
                Some(v_idx) => {
                    let n_cells = vc.ne()[1];
                    let flat = ctx.reshape(vc, &[1, hd * nkv * n_cells])?;
                    let v = ctx.reshape(ctx.cont(v)?, &[1, hd * nkv * n_tokens])?;
                    gf.expand(ctx.set_rows(flat, v, v_idx)?)?;
                }
                None => {
                    gf.expand(ctx.set_rows(vc, v, kvi.idx)?)?;
                }
            }
        }
        let shape = AttnShape {
            head_dim: hd,
            n_head: h.n_head as i64,
            n_head_kv: nkv,
            n_tokens,
            n_kv: kvi.n_kv,
            flash: self.flash_attn,
            logit_softcap,
            il,
        };
        attention(ctx, q, kc, vc, kvi.mask, shape)?.set_name(&format!("kqv_out-{il}"))
    }

    /// This pass over other batch inputs (the same graph, context, weights and cache).
    pub fn with_inputs<'n>(&self, inp: &'n BatchInputs<'s>) -> Pass<'s, 'n> {
        Pass { ctx: self.ctx, wctx: self.wctx, kv: self.kv, inp, flash_attn: self.flash_attn }
    }

    /// Rows `out_ids` of `a` `[n, n_tokens]` (the positions whose logits are read), or `a`
    /// itself when every position is read.
    pub fn read_rows(&self, a: Tensor<'s>) -> Result<Tensor<'s>> {
        match self.inp.out_ids {
            Some(out) => self.ctx.get_rows(a, out),
            None => Ok(a),
        }
    }

    /// The batch inputs of the positions whose logits are read, for layers that write no KV
    /// cache: their positions and their rows of each cache kind's mask (the cell rows to
    /// write are not needed there). `None` when every position is read.
    ///
    /// Why this is enough: a layer that shares an earlier layer's cache (Gemma 3n's and Gemma
    /// 4's last layers) reads K and V written by that earlier layer and writes nothing, so no
    /// later position and no later step ever reads its hidden states. Past the first of the
    /// layers that, to the last, write no cache, only the rows whose logits are read change
    /// the result (see [`first_cacheless_tail`]). libllama runs every row to the end
    /// (gemma4.cpp, gemma3n-iswa.cpp): same logits for those rows up to the kernels' rounding
    /// (one row takes ggml's single-row kernels where a batch takes the tiled ones).
    pub fn read_rows_inputs(&self) -> Result<Option<BatchInputs<'s>>> {
        let Some(out) = self.inp.out_ids else { return Ok(None) };
        let ctx = self.ctx;
        let (n_tokens, n_out) = (self.inp.pos.ne()[0], out.ne()[0]);
        let pos = ctx.reshape(ctx.get_rows(ctx.reshape(self.inp.pos, &[1, n_tokens])?, out)?, &[n_out])?;
        let rows = |k: &Option<KvInput<'s>>| -> Result<Option<KvInput<'s>>> {
            let Some(k) = k else { return Ok(None) };
            // get_rows yields f32; the flash-attention kernel wants its mask in f16
            let mask = ctx.get_rows(k.mask, out)?;
            let mask = if k.mask.ty() == Type::F16 { ctx.to_f16(mask)? } else { mask };
            Ok(Some(KvInput { idx: k.idx, mask, n_kv: k.n_kv, v_idx: None }))
        };
        let (global, local) = (rows(&self.inp.global)?, rows(&self.inp.local)?);
        Ok(Some(BatchInputs { tokens: self.inp.tokens, pos, out_ids: None, global, local }))
    }

    /// The last layer keeps only the positions whose logits are read: rows `out_ids` of each
    /// tensor, or the tensors themselves when every position is read.
    pub fn keep_outputs(&self, a: Tensor<'s>, b: Tensor<'s>) -> Result<(Tensor<'s>, Tensor<'s>)> {
        match self.inp.out_ids {
            Some(out) => Ok((self.ctx.get_rows(a, out)?, self.ctx.get_rows(b, out)?)),
            None => Ok((a, b)),
        }
    }

    /// logits = rmsnorm(x)·output_norm → output `[n_vocab, n_out]`, soft-capped at
    /// `c·tanh(l/c)` when the model has a final cap.
    pub fn logits(&self, x: Tensor<'s>, w: (TensorId, TensorId), eps: f32, softcap: Option<f32>) -> Result<Tensor<'s>> {
        let (output_norm, output) = w;
        let x = self.norm(x, output_norm, eps, "result_norm", 0)?;
        let logits = self.mm(output, x)?;
        self.final_softcap(logits, softcap)?.set_name("result_output")
    }

    /// `c·tanh(l/c)` over the logits `[n_vocab, n_out]` when `cap` is `Some(c)` (llama.cpp:
    /// scale, tanh, scale). The tanh runs on rows cut short so that every thread takes part
    /// ([`Context::spread`]); the last scale is on the logits' own shape, so the graph's
    /// output is not a view.
    pub fn final_softcap(&self, logits: Tensor<'s>, cap: Option<f32>) -> Result<Tensor<'s>> {
        let Some(cap) = cap else { return Ok(logits) };
        let ctx = self.ctx;
        let capped = ctx.spread([logits], |[l]| ctx.tanh(ctx.scale(l, 1.0 / cap)?))?;
        ctx.scale(capped, cap)
    }

    /// `gelu(gate) ⊙ up` (ggml's fused GEGLU), on rows cut short for a small batch
    /// ([`Context::spread`]).
    pub fn geglu(&self, gate: Tensor<'s>, up: Tensor<'s>) -> Result<Tensor<'s>> {
        self.ctx.spread([gate, up], |[g, u]| self.ctx.geglu_split(g, u))
    }
}

/// The first layer from which every layer to the last writes no KV cache of its own (it
/// reads an earlier layer's), given whether each layer shares; `None` when the last layer
/// has its own cache. From there on a batch needs only the rows whose logits are read
/// ([`Pass::read_rows_inputs`]).
pub(crate) fn first_cacheless_tail(shares: impl DoubleEndedIterator<Item = bool> + ExactSizeIterator) -> Option<usize> {
    let n = shares.len();
    let tail = shares.rev().take_while(|&s| s).count();
    (tail > 0).then_some(n - tail)
}
