//! Gemma 3n's checkpoint tensors → GGUF tensors, and the `gemma3n.*` keys.
use crate::checkpoint::{Checkpoint, SourceTensor};
use crate::config::{Arch, ModelConfig};
use crate::error::{Error, Result};
use crate::gemma4::From;
use gemma_gguf::gguf::{GgufArray, GgufValue};
use gemma_gguf::names::{arch_key, llm, tensor as tn};

/// (GGUF name, ggml dims, source) of every tensor, in llama.cpp's order. `n_vocab` is the
/// tokenizer's vocabulary: `token_embd` is trimmed to it, the per-layer table trimmed or
/// padded with its row 0 (see the module doc).
pub(crate) fn map_tensors(
    ckpt: &Checkpoint,
    c: &ModelConfig,
    prefix: &str,
    n_vocab: usize,
) -> Result<Vec<(String, Vec<u64>, From)>> {
    let g = c.gemma3n.as_ref().expect("a Gemma 3n config");
    let (e, l, v) = (c.n_embd as u64, c.n_layer, n_vocab as u64);
    let (hd, p, na, r) = (c.head_dim as u64, g.n_embd_per_layer as u64, g.n_altup as u64, g.laurel_rank as u64);
    let (q, kv, pl) = (c.n_head as u64 * hd, c.n_head_kv as u64 * hd, p * l as u64);
    let mut m = Maps { ckpt, prefix, out: Vec::new() };

    let embd = m.find("embed_tokens", tn::TOKEN_EMBD)?;
    if embd.shape.len() != 2 || embd.shape[1] as u64 != e || (embd.shape[0] as u64) < v {
        return Err(shape_err(&embd, format!("expected [≥{n_vocab} (the tokenizer's vocabulary), {e}]")));
    }
    m.out.push((tn::global(tn::TOKEN_EMBD), vec![e, v], From::Tensor(embd)));
    // The per-layer table: trimmed like the embedding, or padded with its row 0.
    let ple = m.find("embed_tokens_per_layer", tn::PER_LAYER_TOKEN_EMBD)?;
    if ple.shape.len() != 2 || ple.shape[1] as u64 != pl || ple.shape[0] != g.vocab_per_layer {
        return Err(shape_err(&ple, format!("expected [{} (vocab_size_per_layer_input), {pl}]", g.vocab_per_layer)));
    }
    let src = if ple.shape[0] as u64 >= v { From::Tensor(ple) } else { From::PadRows(ple) };
    m.out.push((tn::global(tn::PER_LAYER_TOKEN_EMBD), vec![pl, v], src));
    m.tensor(tn::global(tn::PER_LAYER_MODEL_PROJ), "per_layer_model_projection", vec![e, pl])?;
    m.tensor(tn::global(tn::PER_LAYER_PROJ_NORM), "per_layer_projection_norm", vec![p])?;
    m.stacked(tn::global(tn::ALTUP_PROJ), "altup_projections", e, na - 1)?;
    m.stacked(tn::global(tn::ALTUP_UNEMBD_PROJ), "altup_unembed_projections", e, na - 1)?;
    for il in 0..l {
        let b = |name: &str| tn::block(il, name);
        let h = |name: &str| format!("layers.{il}.{name}");
        let f = g.n_ff[il] as u64;
        // libllama loads K, V and the K norm on every layer; transformers has none on shared
        // layers (they read an earlier layer's cache), and saves none there. Such layers get
        // zeros, which no runtime reads.
        let shared = il >= l - g.n_kv_shared;
        for (gguf, hf, ne) in [
            (tn::ATTN_K, "self_attn.k_proj", vec![e, kv]),
            (tn::ATTN_V, "self_attn.v_proj", vec![e, kv]),
            (tn::ATTN_K_NORM, "self_attn.k_norm", vec![hd]),
        ] {
            if shared && m.find(&h(hf), gguf).is_err() {
                let n = ne.iter().product::<u64>() as usize;
                m.out.push((b(gguf), ne, From::Values(vec![0.0; n])));
            } else {
                m.tensor(b(gguf), &h(hf), ne)?;
            }
        }
        for (gguf, hf, ne) in [
            (tn::ATTN_NORM, "input_layernorm", vec![e]),
            (tn::ATTN_Q, "self_attn.q_proj", vec![e, q]),
            (tn::ATTN_Q_NORM, "self_attn.q_norm", vec![hd]),
            (tn::ATTN_OUTPUT, "self_attn.o_proj", vec![q, e]),
            (tn::POST_ATTENTION_NORM, "post_attention_layernorm", vec![e]),
            (tn::FFN_NORM, "pre_feedforward_layernorm", vec![e]),
            (tn::FFN_GATE, "mlp.gate_proj", vec![e, f]),
            (tn::FFN_UP, "mlp.up_proj", vec![e, f]),
            (tn::FFN_DOWN, "mlp.down_proj", vec![f, e]),
            (tn::POST_FFW_NORM, "post_feedforward_layernorm", vec![e]),
            (tn::PER_LAYER_INP_GATE, "per_layer_input_gate", vec![e, p]),
            (tn::PER_LAYER_PROJ, "per_layer_projection", vec![p, e]),
            (tn::PER_LAYER_POST_NORM, "post_per_layer_input_norm", vec![e]),
            (tn::ALTUP_CORRECT_COEF, "altup.correction_coefs", vec![na, na]),
            (tn::ALTUP_CORRECT_SCALE, "altup.correct_output_scale", vec![e]),
            (tn::ALTUP_PREDICT_COEF, "altup.prediction_coefs", vec![na, na * na]),
            (tn::ALTUP_ROUTER, "altup.modality_router", vec![e, na]),
            (tn::ALTUP_ROUTER_NORM, "altup.router_norm", vec![e]),
            (tn::LAUREL_L, "laurel.linear_left", vec![e, r]),
            (tn::LAUREL_R, "laurel.linear_right", vec![r, e]),
            (tn::LAUREL_POST_NORM, "laurel.post_laurel_norm", vec![e]),
        ] {
            m.tensor(b(gguf), &h(hf), ne)?;
        }
    }
    m.tensor(tn::global(tn::OUTPUT_NORM), "norm", vec![e])?;
    Ok(m.out)
}

fn shape_err(t: &SourceTensor, what: String) -> Error {
    Error::Shape { tensor: t.name.clone(), what: format!("shape {:?}, {what}", t.shape) }
}

struct Maps<'a> {
    ckpt: &'a Checkpoint,
    prefix: &'a str,
    out: Vec<(String, Vec<u64>, From)>,
}

impl Maps<'_> {
    /// `{prefix}{hf}.weight`, or `{prefix}{hf}` (the parameter `altup.correct_output_scale`
    /// has no suffix).
    fn find(&self, hf: &str, gguf: &str) -> Result<SourceTensor> {
        let with = format!("{}{hf}.weight", self.prefix);
        let without = format!("{}{hf}", self.prefix);
        let t = self
            .ckpt
            .get(&with)
            .or_else(|| self.ckpt.get(&without))
            .ok_or_else(|| Error::MissingTensor { tensor: with, what: gguf.to_owned() })?
            .clone();
        if t.dtype.is_none() {
            return Err(self.ckpt.unsupported(&t));
        }
        Ok(t)
    }

    /// A tensor whose HF shape is `ne` reversed.
    fn tensor(&mut self, gguf_name: String, hf: &str, ne: Vec<u64>) -> Result<()> {
        let src = self.find(hf, &gguf_name)?;
        let want: Vec<usize> = ne.iter().rev().map(|&d| d as usize).collect();
        if src.shape != want {
            return Err(shape_err(&src, format!("but config.json implies {want:?}")));
        }
        self.out.push((gguf_name, ne, From::Tensor(src)));
        Ok(())
    }

    /// `{hf}.0` … `{hf}.{k−1}`, each `[n, n]`, stacked into `[n, n, k]`.
    fn stacked(&mut self, gguf_name: String, hf: &str, n: u64, k: u64) -> Result<()> {
        let mut srcs = Vec::new();
        for i in 0..k {
            let src = self.find(&format!("{hf}.{i}"), &gguf_name)?;
            if src.shape != [n as usize, n as usize] {
                return Err(shape_err(&src, format!("expected [{n}, {n}] (hidden_size)")));
            }
            srcs.push(src);
        }
        self.out.push((gguf_name, vec![n, n, k], From::Stacked(srcs)));
        Ok(())
    }
}

fn u32v(n: usize) -> GgufValue {
    GgufValue::U32(n as u32)
}

/// The `gemma3n.*` keys: Gemma 3's (upstream `Gemma3Model.set_gguf_parameters`) and 3n's
/// own (`Gemma3NModel.set_gguf_parameters`).
pub(crate) fn arch_keys(c: &ModelConfig) -> Vec<(String, GgufValue)> {
    let g = c.gemma3n.as_ref().expect("a Gemma 3n config");
    let k = |s: &str| arch_key(Arch::Gemma3n.gguf_name(), s);
    let n_ff = match g.n_ff.windows(2).all(|w| w[0] == w[1]) {
        true => u32v(g.n_ff[0]),
        false => GgufValue::Array(GgufArray::U32(g.n_ff.iter().map(|&n| n as u32).collect())),
    };
    vec![
        (k(llm::CONTEXT_LENGTH), u32v(c.context_length)),
        (k(llm::EMBEDDING_LENGTH), u32v(c.n_embd)),
        (k(llm::BLOCK_COUNT), u32v(c.n_layer)),
        (k(llm::FEED_FORWARD_LENGTH), n_ff),
        (k(llm::HEAD_COUNT), u32v(c.n_head)),
        (k(llm::HEAD_COUNT_KV), u32v(c.n_head_kv)),
        (k(llm::KEY_LENGTH), u32v(c.head_dim)),
        (k(llm::VALUE_LENGTH), u32v(c.head_dim)),
        (k(llm::RMS_EPS), GgufValue::F32(c.rms_eps)),
        (k(llm::ROPE_FREQ_BASE), GgufValue::F32(c.rope_base)),
        (k(llm::ROPE_FREQ_BASE_SWA), GgufValue::F32(c.rope_base_swa.unwrap_or(10_000.0))),
        (k(llm::SLIDING_WINDOW), u32v(c.sliding_window.unwrap_or(0))),
        (k(llm::SLIDING_WINDOW_PATTERN), GgufValue::Array(GgufArray::Bool(c.swa_layers.clone()))),
        // transformers' none is 0 here (our runtime: no cap); libllama always caps at 30.
        (k(llm::FINAL_LOGIT_SOFTCAPPING), GgufValue::F32(c.final_softcap.unwrap_or(0.0))),
        (k(llm::ALTUP_ACTIVE_IDX), u32v(g.altup_active)),
        (k(llm::ALTUP_NUM_INPUTS), u32v(g.n_altup)),
        (k(llm::EMBEDDING_LENGTH_PER_LAYER_INPUT), u32v(g.n_embd_per_layer)),
        (k(llm::SHARED_KV_LAYERS), u32v(g.n_kv_shared)),
        (k(llm::ACTIVATION_SPARSITY_SCALE), GgufValue::Array(GgufArray::F32(g.sparsity_scale()))),
    ]
}
