//! One table of GGUF key names and tensor names, shared by the runtime, the converter and
//! `gemma info` (llama.cpp's spelling: `src/llama-arch.cpp` in llama-cpp-sys-2 0.1.161).

/// `general.*` keys.
pub mod general {
    pub const ARCHITECTURE: &str = "general.architecture";
    pub const TYPE: &str = "general.type";
    pub const NAME: &str = "general.name";
    pub const DESCRIPTION: &str = "general.description";
    pub const QUANTIZED_BY: &str = "general.quantized_by";
    pub const SOURCE_HF_REPO: &str = "general.source.huggingface.repository";
    pub const FILE_TYPE: &str = "general.file_type";
    pub const QUANTIZATION_VERSION: &str = "general.quantization_version";
}

/// Per-architecture key suffixes: the full key is `{arch}.{suffix}` (see [`arch_key`]).
pub mod llm {
    pub const CONTEXT_LENGTH: &str = "context_length";
    pub const EMBEDDING_LENGTH: &str = "embedding_length";
    pub const BLOCK_COUNT: &str = "block_count";
    pub const FEED_FORWARD_LENGTH: &str = "feed_forward_length";
    pub const HEAD_COUNT: &str = "attention.head_count";
    pub const HEAD_COUNT_KV: &str = "attention.head_count_kv";
    pub const KEY_LENGTH: &str = "attention.key_length";
    pub const VALUE_LENGTH: &str = "attention.value_length";
    pub const RMS_EPS: &str = "attention.layer_norm_rms_epsilon";
    pub const SLIDING_WINDOW: &str = "attention.sliding_window";
    pub const SLIDING_WINDOW_PATTERN: &str = "attention.sliding_window_pattern";
    pub const ROPE_DIMENSION_COUNT: &str = "rope.dimension_count";
    pub const ROPE_FREQ_BASE: &str = "rope.freq_base";
    pub const ROPE_FREQ_BASE_SWA: &str = "rope.freq_base_swa";
    pub const ROPE_SCALING_TYPE: &str = "rope.scaling.type";
    pub const ROPE_SCALING_FACTOR: &str = "rope.scaling.factor";
    pub const ATTN_LOGIT_SOFTCAPPING: &str = "attn_logit_softcapping";
    pub const FINAL_LOGIT_SOFTCAPPING: &str = "final_logit_softcapping";

    // --- Gemma 4 (and Gemma 3n) keys, llama.cpp's LLM_KV_* spellings (src/llama-arch.cpp,
    // llama-cpp-sys-2 0.1.161). Kept in one block so parallel additions merge cleanly.
    pub const KEY_LENGTH_SWA: &str = "attention.key_length_swa";
    pub const VALUE_LENGTH_SWA: &str = "attention.value_length_swa";
    pub const ROPE_DIMENSION_COUNT_SWA: &str = "rope.dimension_count_swa";
    pub const SHARED_KV_LAYERS: &str = "attention.shared_kv_layers";
    pub const EMBEDDING_LENGTH_PER_LAYER_INPUT: &str = "embedding_length_per_layer_input";
    pub const EXPERT_COUNT: &str = "expert_count";
    pub const EXPERT_USED_COUNT: &str = "expert_used_count";
    pub const EXPERT_FEED_FORWARD_LENGTH: &str = "expert_feed_forward_length";
    /// Ours, not llama.cpp's (which reads no such key and leaves it alone): `true` when an
    /// image's tokens attend to each other both ways on sliding-window layers, from
    /// transformers' `use_bidirectional_attention == "vision"` (Gemma4TextConfig).
    pub const BIDIRECTIONAL_VISION: &str = "attention.bidirectional_vision";
    // --- end of the Gemma 4 keys.

    // --- Gemma 3n keys, as llama.cpp's converter writes them (gguf-py `Keys.LLM`;
    // conversion/gemma.py `Gemma3NModel.set_gguf_parameters`). libllama reads none of these
    // and hard-codes their values (src/models/gemma3n.cpp, llama-hparams.h).
    pub const ALTUP_ACTIVE_IDX: &str = "altup.active_idx";
    pub const ALTUP_NUM_INPUTS: &str = "altup.num_inputs";
    /// One f32 per layer: the Gaussian top-k's standard-deviation multiplier, the normal
    /// quantile of the layer's sparsity target (−∞ where the layer has none).
    pub const ACTIVATION_SPARSITY_SCALE: &str = "activation_sparsity_scale";
    // --- end of the Gemma 3n keys.
}

/// `tokenizer.*` keys.
pub mod tokenizer {
    pub const MODEL: &str = "tokenizer.ggml.model";
    pub const TOKENS: &str = "tokenizer.ggml.tokens";
    pub const SCORES: &str = "tokenizer.ggml.scores";
    pub const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    pub const MERGES: &str = "tokenizer.ggml.merges";
    pub const PRE: &str = "tokenizer.ggml.pre";
    pub const BOS_ID: &str = "tokenizer.ggml.bos_token_id";
    pub const EOS_ID: &str = "tokenizer.ggml.eos_token_id";
    pub const EOT_ID: &str = "tokenizer.ggml.eot_token_id";
    pub const UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
    pub const PAD_ID: &str = "tokenizer.ggml.padding_token_id";
    pub const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    pub const ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
    pub const ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
    pub const CHAT_TEMPLATE: &str = "tokenizer.chat_template";
}

/// `{arch}.{suffix}`.
pub fn arch_key(arch: &str, suffix: &str) -> String {
    format!("{arch}.{suffix}")
}

/// Tensor names (without `.weight`), global and per block.
pub mod tensor {
    pub const TOKEN_EMBD: &str = "token_embd";
    pub const OUTPUT_NORM: &str = "output_norm";
    pub const OUTPUT: &str = "output";
    pub const ATTN_NORM: &str = "attn_norm";
    pub const ATTN_Q: &str = "attn_q";
    pub const ATTN_K: &str = "attn_k";
    pub const ATTN_V: &str = "attn_v";
    pub const ATTN_Q_NORM: &str = "attn_q_norm";
    pub const ATTN_K_NORM: &str = "attn_k_norm";
    pub const ATTN_OUTPUT: &str = "attn_output";
    pub const POST_ATTENTION_NORM: &str = "post_attention_norm";
    pub const FFN_NORM: &str = "ffn_norm";
    pub const FFN_GATE: &str = "ffn_gate";
    pub const FFN_UP: &str = "ffn_up";
    pub const FFN_DOWN: &str = "ffn_down";
    pub const POST_FFW_NORM: &str = "post_ffw_norm";

    // --- Gemma 4 tensors, llama.cpp's LLM_TENSOR_* spellings (src/llama-arch.cpp,
    // llama-cpp-sys-2 0.1.161). Kept in one block so parallel additions merge cleanly.
    /// Global: proportional-RoPE frequency factors of the full-attention layers.
    pub const ROPE_FREQS: &str = "rope_freqs";
    /// Global: the per-layer-embedding (PLE) table, `[n_embd_per_layer · n_layer, n_vocab]`.
    pub const PER_LAYER_TOKEN_EMBD: &str = "per_layer_token_embd";
    pub const PER_LAYER_MODEL_PROJ: &str = "per_layer_model_proj";
    pub const PER_LAYER_PROJ_NORM: &str = "per_layer_proj_norm";
    /// Per block: PLE gate, projection and norm.
    pub const PER_LAYER_INP_GATE: &str = "inp_gate";
    pub const PER_LAYER_PROJ: &str = "proj";
    pub const PER_LAYER_POST_NORM: &str = "post_norm";
    pub const LAYER_OUT_SCALE: &str = "layer_output_scale";
    /// Per block, MoE: router (`.weight`, and `.scale` = [`block_scale`]), experts, norms.
    pub const FFN_GATE_INP: &str = "ffn_gate_inp";
    pub const FFN_GATE_UP_EXPS: &str = "ffn_gate_up_exps";
    /// Separate gate and up experts (llama.cpp loads these when the fused one is absent).
    pub const FFN_GATE_EXPS: &str = "ffn_gate_exps";
    pub const FFN_UP_EXPS: &str = "ffn_up_exps";
    pub const FFN_DOWN_EXPS: &str = "ffn_down_exps";
    pub const FFN_PRE_NORM_2: &str = "pre_ffw_norm_2";
    pub const FFN_POST_NORM_1: &str = "post_ffw_norm_1";
    pub const FFN_POST_NORM_2: &str = "post_ffw_norm_2";

    /// `blk.{il}.{name}.scale`: the per-tensor scales beside a weight (`ffn_gate_inp.scale`,
    /// `ffn_down_exps.scale`).
    pub fn block_scale(il: usize, name: &str) -> String {
        format!("blk.{il}.{name}.scale")
    }
    // --- end of the Gemma 4 tensors.

    // --- Gemma 3n tensors, llama.cpp's LLM_TENSOR_* spellings (src/llama-arch.cpp,
    // llama-cpp-sys-2 0.1.161).
    /// Global: the AltUp stream projections, `[n_embd, n_embd, n_altup − 1]` each.
    pub const ALTUP_PROJ: &str = "altup_proj";
    pub const ALTUP_UNEMBD_PROJ: &str = "altup_unembd_proj";
    /// Per block: AltUp's router, its norm, the predict and correct coefficients, and the
    /// correction's output scale.
    pub const ALTUP_CORRECT_COEF: &str = "altup_correct_coef";
    pub const ALTUP_CORRECT_SCALE: &str = "altup_correct_scale";
    pub const ALTUP_PREDICT_COEF: &str = "altup_predict_coef";
    pub const ALTUP_ROUTER: &str = "altup_router";
    pub const ALTUP_ROUTER_NORM: &str = "altup_router_norm";
    /// Per block: LAuReL's low-rank residual (left `[n_embd, rank]`, right `[rank, n_embd]`).
    pub const LAUREL_L: &str = "laurel_l";
    pub const LAUREL_R: &str = "laurel_r";
    pub const LAUREL_POST_NORM: &str = "laurel_post_norm";
    // --- end of the Gemma 3n tensors.

    /// `name.weight`, a global tensor.
    pub fn global(name: &str) -> String {
        format!("{name}.weight")
    }

    /// `blk.{il}.{name}.weight`, a tensor of block `il`.
    pub fn block(il: usize, name: &str) -> String {
        format!("blk.{il}.{name}.weight")
    }
}
