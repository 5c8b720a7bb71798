//! Gemma (1): hyper-parameters from GGUF, weights, and the forward graph.
//!
//! Template: llama.cpp's `src/models/gemma.cpp` (llama-cpp-sys-2 0.1.161); Hugging Face's
//! `modeling_gemma.py` for the reference semantics. The plainest Gemma: GeGLU MLP, the
//! embedding scaled by √n_embd, RMS norms holding `1 + w`, no post-norms, no QK-norm, no
//! sliding window, no soft-caps; the 2B model has one KV head (MQA), both sizes a head of
//! 256. ggml's dim 0 is the row length and `mul_mat(a, b) = b·aᵀ`; shapes in ggml order.
use super::names::tensor;
use super::{rope_base_and_scale, Dims, Pass, WeightDecl};
use crate::error::Result;
use crate::ggml::{Graph, Rope, Tensor, TensorId};
use crate::gguf::GgufFile;

const ARCH: &str = "gemma";

/// Gemma 1 hyper-parameters, every quirk settled here.
#[derive(Debug, Clone)]
pub struct Hparams {
    pub dims: Dims,
    /// Rope base and frequency scale (1/linear factor), the same on every layer.
    pub rope_base: f32,
    pub rope_freq_scale: f32,
    /// Query scale applied before attention: 1/√head_dim (llama.cpp's gemma.cpp; Gemma 1
    /// has no 27B exception).
    pub attn_scale: f32,
}

impl Hparams {
    pub fn from_gguf(g: &GgufFile) -> Result<Hparams> {
        let dims = Dims::from_gguf(g, ARCH)?;
        let (rope_base, rope_freq_scale) = rope_base_and_scale(g, ARCH)?;
        let attn_scale = 1.0 / (dims.head_dim as f32).sqrt();
        Ok(Hparams { dims, rope_base, rope_freq_scale, attn_scale })
    }

    /// Every layer attends over the whole context.
    pub fn is_local(&self) -> Vec<bool> {
        vec![false; self.dims.n_layer as usize]
    }
}

/// One block's weights (ids in the weights context).
#[derive(Debug, Clone)]
pub struct Layer {
    pub attn_norm: TensorId,
    pub attn_q: TensorId,
    pub attn_k: TensorId,
    pub attn_v: TensorId,
    pub attn_output: TensorId,
    pub ffn_norm: TensorId,
    pub ffn_gate: TensorId,
    pub ffn_up: TensorId,
    pub ffn_down: TensorId,
}

/// All weights. The output projection is `token_embd` unless the file has `output`.
#[derive(Debug, Clone)]
pub struct Weights {
    pub token_embd: TensorId,
    pub output_norm: TensorId,
    pub output: TensorId,
    pub layers: Vec<Layer>,
}

impl Weights {
    /// Declares every weight in `d`'s context with the shape the hyper-parameters imply.
    pub(crate) fn declare(d: &mut WeightDecl<'_>, hp: &Hparams) -> Result<Weights> {
        let hd = &hp.dims;
        let (e, ff) = (hd.n_embd as u64, hd.n_ff as u64);
        let (q, kv) = ((hd.n_head * hd.head_dim) as u64, (hd.n_head_kv * hd.head_dim) as u64);
        let (token_embd, output_norm, output) = d.embeddings(e, hd.n_vocab as u64)?;
        let mut layers = Vec::with_capacity(hd.n_layer as usize);
        for il in 0..hd.n_layer as usize {
            let mut t = |name: &str, dims: &[u64]| d.tensor(&tensor::block(il, name), dims);
            layers.push(Layer {
                attn_norm: t(tensor::ATTN_NORM, &[e])?,
                attn_q: t(tensor::ATTN_Q, &[e, q])?,
                attn_k: t(tensor::ATTN_K, &[e, kv])?,
                attn_v: t(tensor::ATTN_V, &[e, kv])?,
                attn_output: t(tensor::ATTN_OUTPUT, &[q, e])?,
                ffn_norm: t(tensor::FFN_NORM, &[e])?,
                ffn_gate: t(tensor::FFN_GATE, &[e, ff])?,
                ffn_up: t(tensor::FFN_UP, &[e, ff])?,
                ffn_down: t(tensor::FFN_DOWN, &[ff, e])?,
            });
        }
        Ok(Weights { token_embd, output_norm, output, layers })
    }
}

/// One forward pass of Gemma 1 over a batch.
pub(crate) struct Forward<'s, 'm> {
    pub pass: Pass<'s, 'm>,
    pub w: &'m Weights,
    pub hp: &'m Hparams,
}

impl<'s> Forward<'s, '_> {
    /// The whole forward pass: token ids → logits `[n_vocab, n_out]`.
    pub fn build(&self, gf: &mut Graph<'s>) -> Result<Tensor<'s>> {
        let d = &self.hp.dims;
        // x = embd[tokens] · √n_embd: [n_embd, n_tokens]
        let mut x = self.pass.embed(self.w.token_embd, d.n_embd)?;
        for il in 0..d.n_layer as usize {
            x = self.layer(gf, x, il)?;
        }
        // logits = rmsnorm(x)·output_norm · token_embdᵀ: [n_vocab, n_out]
        self.pass.logits(x, (self.w.output_norm, self.w.output), d.rms_eps, None)
    }

    fn layer(&self, gf: &mut Graph<'s>, x: Tensor<'s>, il: usize) -> Result<Tensor<'s>> {
        let (hp, d, p, l) = (self.hp, &self.hp.dims, &self.pass, &self.w.layers[il]);
        let (ctx, n_tokens) = (p.ctx, x.ne()[1]);
        let (hd, nh, nkv) = (d.head_dim as i64, d.n_head as i64, d.n_head_kv as i64);
        let h = p.norm(x, l.attn_norm, d.rms_eps, "attn_norm", il)?;
        // q: [head_dim, n_head, n_tokens]; k: [head_dim, n_head_kv, n_tokens]; v: [head_dim·n_head_kv, n_tokens]
        let q = ctx.reshape(p.mm(l.attn_q, h)?, &[hd, nh, n_tokens])?;
        let k = ctx.reshape(p.mm(l.attn_k, h)?, &[hd, nkv, n_tokens])?;
        let v = p.mm(l.attn_v, h)?;
        let rope = Rope {
            n_dims: d.n_rot as i32,
            neox: true,
            freq_base: hp.rope_base,
            freq_scale: hp.rope_freq_scale,
            n_ctx_orig: d.n_ctx_train as i32,
        };
        let (q, k) = p.rope(q, k, rope, il)?;
        let q = ctx.scale(q, hp.attn_scale)?.set_name(&format!("Qcur_scaled-{il}"))?;
        // attention over the cache, then the output projection: [n_embd, n_tokens]
        let attn = p.attend(gf, (q, k, v), d, None, il)?;
        let mut cur = p.mm(l.attn_output, attn)?;
        let mut x = x;
        if il + 1 == d.n_layer as usize {
            (cur, x) = p.keep_outputs(cur, x)?;
        }
        let sa_out = ctx.add(cur, x)?.set_name(&format!("sa_out-{il}"))?;

        // FFN: down(gelu(gate(h)) · up(h))
        let h = p.norm(sa_out, l.ffn_norm, d.rms_eps, "ffn_norm", il)?;
        let ff = p.geglu(p.mm(l.ffn_gate, h)?, p.mm(l.ffn_up, h)?)?;
        let ff = p.mm(l.ffn_down, ff)?.set_name(&format!("ffn_out-{il}"))?;
        ctx.add(ff, sa_out)?.set_name(&format!("l_out-{il}"))
    }
}
