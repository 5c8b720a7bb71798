//! The projector file's (`mmproj-*.gguf`) key and tensor names, in llama.cpp's spelling, shared
//! by the converter and the runtime. Source: the `KEY_*` and `TN_*` macros of
//! `tools/mtmd/clip-impl.h` and what `clip_model_loader::load_hparams` / `load_tensors` read
//! for `PROJECTOR_TYPE_GEMMA3` (`tools/mtmd/clip.cpp`), llama-cpp-sys-2 0.1.161.

/// `general.architecture` of a projector file (clip.cpp does not read it; llama.cpp's
/// converter writes it, and tools list files by it).
pub const ARCH: &str = "clip";

/// Keys.
pub mod key {
    pub const HAS_VISION_ENCODER: &str = "clip.has_vision_encoder";
    /// `"gemma3"` for Gemma 3 (`PROJECTOR_TYPE_NAMES` in clip-impl.h).
    pub const PROJECTOR_TYPE: &str = "clip.projector_type";
    /// true: the encoder's MLP uses ggml's tanh-approximated GELU (`FFN_GELU`); without it
    /// clip.cpp falls back to quick-GELU, which is not SigLIP's activation.
    pub const USE_GELU: &str = "clip.use_gelu";
    pub const EMBEDDING_LENGTH: &str = "clip.vision.embedding_length";
    pub const FEED_FORWARD_LENGTH: &str = "clip.vision.feed_forward_length";
    pub const BLOCK_COUNT: &str = "clip.vision.block_count";
    /// The language model's embedding width (what the projector maps to).
    pub const PROJECTION_DIM: &str = "clip.vision.projection_dim";
    pub const HEAD_COUNT: &str = "clip.vision.attention.head_count";
    /// Optional; clip.cpp defaults it to the head count.
    pub const HEAD_COUNT_KV: &str = "clip.vision.attention.head_count_kv";
    pub const LAYER_NORM_EPS: &str = "clip.vision.attention.layer_norm_epsilon";
    pub const IMAGE_SIZE: &str = "clip.vision.image_size";
    /// The most pixels of a resized image. Written for Gemma 4 as its processor's
    /// `max_soft_tokens` × (patch × kernel)²; clip.cpp fixes gemma4v's limits itself (70..1120
    /// tokens) and does not read it for that type.
    pub const IMAGE_MAX_PIXELS: &str = "clip.vision.image_max_pixels";
    pub const PATCH_SIZE: &str = "clip.vision.patch_size";
    pub const IMAGE_MEAN: &str = "clip.vision.image_mean";
    pub const IMAGE_STD: &str = "clip.vision.image_std";
    /// The average-pooling kernel (patches per side / tokens per side); clip.cpp defaults it
    /// to 4 for Gemma 3 (`hparams.n_merge = 4`) and reads this key to override it.
    pub const PROJ_SCALE_FACTOR: &str = "clip.vision.projector.scale_factor";
}

/// The projector type string of Gemma 3.
pub const PROJECTOR_GEMMA3: &str = "gemma3";
/// The projector type string of Gemma 4's vision tower (`PROJECTOR_TYPE_GEMMA4V`).
pub const PROJECTOR_GEMMA4V: &str = "gemma4v";

/// Tensor names.
pub mod tensor {
    /// Patch embedding: a conv2d kernel, ggml `[patch, patch, 3, n_embd]`, and its bias.
    pub const PATCH_EMBD: &str = "v.patch_embd.weight";
    pub const PATCH_BIAS: &str = "v.patch_embd.bias";
    /// Learned position embedding `[n_embd, n_patches]`.
    pub const POSITION_EMBD: &str = "v.position_embd.weight";
    /// The encoder's final layer norm (`post_layernorm`).
    pub const POST_LN: &str = "v.post_ln";
    /// Gemma 3's projector: RMS norm (stored as 1 + w) and the projection `[n_embd_text, n_embd]`.
    pub const MM_SOFT_EMB_NORM: &str = "mm.soft_emb_norm.weight";
    pub const MM_INPUT_PROJECTION: &str = "mm.input_projection.weight";
    /// Gemma 4: standardisation of the pooled features, `(x - bias) * scale` (`TN_STD_*`).
    pub const STD_BIAS: &str = "v.std_bias";
    pub const STD_SCALE: &str = "v.std_scale";

    /// Block tensor roles (`TN_ATTN_Q` … `TN_LN_2` in clip-impl.h).
    pub const ATTN_Q: &str = "attn_q";
    pub const ATTN_K: &str = "attn_k";
    pub const ATTN_V: &str = "attn_v";
    pub const ATTN_OUT: &str = "attn_out";
    pub const LN1: &str = "ln1";
    pub const LN2: &str = "ln2";
    /// `ffn_up` is the first MLP matrix (`fc1`, `[n_embd, n_ff]`), `ffn_down` the second;
    /// clip.cpp swaps them back if a file has them the other way round.
    pub const FFN_UP: &str = "ffn_up";
    pub const FFN_DOWN: &str = "ffn_down";
    /// Gemma 4: the gated MLP's gate, per-head q/k RMS norms, and the sandwich norms after
    /// attention and MLP (`TN_FFN_GATE`, `TN_ATTN_{Q,K}_NORM`, `TN_{ATTN,FFN}_POST_NORM`).
    pub const FFN_GATE: &str = "ffn_gate";
    pub const ATTN_Q_NORM: &str = "attn_q_norm";
    pub const ATTN_K_NORM: &str = "attn_k_norm";
    pub const ATTN_POST_NORM: &str = "attn_post_norm";
    pub const FFN_POST_NORM: &str = "ffn_post_norm";

    /// `v.blk.{il}.{role}.{suffix}` (`suffix`: `weight` or `bias`).
    pub fn block(il: usize, role: &str, suffix: &str) -> String {
        format!("v.blk.{il}.{role}.{suffix}")
    }
}
