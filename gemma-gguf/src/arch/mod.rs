//! Gemma architectures: one file each (hyper-parameters, weights, graph), and the pieces
//! they share: the name table, weight declaration against the GGUF, and the attention step.
#![forbid(unsafe_code)]

pub mod gemma3;

pub use crate::names;

use crate::error::{Error, Result};
use crate::ggml::{Context, Tensor, TensorId, Type};
use crate::gguf::GgufFile;

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

/// Declares model weights in a ggml context, checking each against the GGUF's tensor info.
pub(crate) struct WeightDecl<'a> {
    pub ctx: &'a Context,
    pub gguf: &'a GgufFile,
    /// Declared tensors with their GGUF names, in order.
    pub declared: Vec<(String, TensorId)>,
}

impl<'a> WeightDecl<'a> {
    pub fn new(ctx: &'a Context, gguf: &'a GgufFile) -> Self {
        WeightDecl { ctx, gguf, declared: Vec::new() }
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
}

impl WeightDecl<'_> {
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
    /// Layer index, for node names.
    pub il: usize,
}

/// Scaled-dot-product attention of `q` `[head_dim, n_head, n_tokens]` over the first `n_kv`
/// cells of a layer's cache (`k`, `v`: `[head_dim·n_head_kv, n_cells]` rows), with the
/// additive `mask` (`[n_kv, n_tokens]`, f32; f16 and padded for flash attention). The
/// query is already scaled. Returns `[head_dim·n_head, n_tokens]`.
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
    // k, v: [head_dim, n_head_kv, n_kv] views of the first n_kv cells
    let k = ctx.view(k_cache, &[s.head_dim, s.n_head_kv, s.n_kv], [elt, row], 0)?;
    let v = ctx.view(
        v_cache,
        &[s.head_dim, s.n_head_kv, s.n_kv],
        [v_cache.ty().row_size(s.head_dim)?, v_cache.nb()[1]],
        0,
    )?;
    // q: [head_dim, n_tokens, n_head]; k, v: [head_dim, n_kv, n_head_kv]
    let q = ctx.permute(q, [0, 2, 1, 3])?;
    let k = ctx.permute(k, [0, 2, 1, 3])?;
    if flash {
        let v = ctx.permute(v, [0, 2, 1, 3])?;
        // out: [head_dim, n_head, n_tokens]
        let out = ctx.flash_attn_ext(q, k, v, mask, 1.0)?;
        return ctx.reshape(out, &[s.head_dim * s.n_head, s.n_tokens]);
    }
    // kq = k·qᵀ: [n_kv, n_tokens, n_head]
    let kq = ctx.mul_mat(k, q)?.set_f32_accumulation();
    let kq = ctx.soft_max_ext(kq, Some(mask), 1.0)?.set_name(&format!("kq_soft_max-{il}"))?;
    // vᵀ: [n_kv, head_dim, n_head_kv], made contiguous for mul_mat
    let vt = ctx.cont(ctx.permute(v, [1, 2, 0, 3])?)?;
    // kqv: [head_dim, n_tokens, n_head] → [head_dim, n_head, n_tokens]
    let kqv = ctx.mul_mat(vt, kq)?;
    let out = ctx.cont(ctx.permute(kqv, [0, 2, 1, 3])?)?;
    ctx.reshape(out, &[s.head_dim * s.n_head, s.n_tokens])
}
