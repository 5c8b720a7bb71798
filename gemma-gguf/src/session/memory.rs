//! What a session will need in memory, before it exists: the KV cache and the largest
//! step's compute buffer, so a context that does not fit is refused before allocating.
#![forbid(unsafe_code)]

use super::{kv_options, Session, SessionOptions};
use crate::kv_cache::kv_bytes;
use crate::model::Model;

impl Session<'_> {
    /// Bytes the KV cache of a session with `opts` would take on `model`.
    pub fn kv_bytes_for(model: &Model, opts: &SessionOptions) -> Option<u64> {
        let l = model.arch.kv_layout();
        kv_bytes(&l, &kv_options(opts, 1))
    }

    /// An estimate of the compute buffer of the largest step a session with `opts` takes: a
    /// full micro-batch (`n_ubatch` tokens) against a full cache. ggml's graph allocator reuses
    /// memory (softmax, GELU and the gating product run in place; the attention block's
    /// intermediates are free before the feed-forward block's exist), so the peak is
    /// - the masks, inputs that live through the whole graph, one per kind of layer:
    ///   `n_kv × n_ubatch`, f32 (f16 with flash attention);
    /// - plus the larger of: the attention scores of a global layer without flash attention,
    ///   `n_head × n_ctx × n_ubatch` f32 (the term that makes a long context fail: 512 MiB
    ///   for Gemma 3 270M at 32 768 tokens, n_ubatch 512), and the feed-forward block's gate
    ///   and up projections, `2 × n_ff × n_ubatch` f32 (the widest FFN of the layers that run
    ///   on the whole batch, [`Arch::batch_ffn_width`]);
    /// - plus the rows around them: queries and attention output (`n_head × head_dim`), keys
    ///   and values, two residual rows (`n_embd`), each `n_ubatch` f32 rows;
    /// - plus what the architecture keeps besides ([`Arch::scratch_f32_per_token`]: Gemma 3n's
    ///   AltUp streams, the per-layer embedding inputs of 3n and Gemma 4), `n_ubatch` rows;
    /// - or, when larger, the making of the per-layer embedding inputs before the first layer,
    ///   when no layer's rows are alive yet: [`Arch::transient_f32_per_token`] rows beside the
    ///   kept ones.
    ///
    /// `tests/tests/memory_estimate.rs` compares it with the buffer ggml actually allocates.
    ///
    /// [`Arch::scratch_f32_per_token`]: crate::model::Arch::scratch_f32_per_token
    /// [`Arch::transient_f32_per_token`]: crate::model::Arch::transient_f32_per_token
    /// [`Arch::batch_ffn_width`]: crate::model::Arch::batch_ffn_width
    pub fn scratch_bytes_for(model: &Model, opts: &SessionOptions) -> Option<u64> {
        let d = model.arch.dims();
        let l = model.arch.kv_layout();
        let n_ub = opts.n_ubatch.clamp(1, opts.n_ctx.max(1)) as u64;
        let n_ctx = opts.n_ctx as u64;
        let kv = kv_options(opts, 1);
        let local = crate::kv_cache::local_cells(l.window, &kv) as u64;
        let has = |local_layer: bool| l.is_local.contains(&local_layer);
        let mask_cells = [(has(false), n_ctx), (has(true), local)]
            .iter()
            .filter(|(present, _)| *present)
            .try_fold(0u64, |acc, &(_, cells)| acc.checked_add(cells.checked_mul(n_ub)?))?;
        let mask = mask_cells.checked_mul(if opts.flash_attn { 2 } else { 4 })?;
        let widest = if has(false) { n_ctx } else { local };
        let scores = match opts.flash_attn {
            true => 0,
            false => (d.n_head as u64).checked_mul(widest)?.checked_mul(n_ub)?.checked_mul(4)?,
        };
        let ffn = (model.arch.batch_ffn_width() as u64).checked_mul(n_ub)?.checked_mul(2 * 4)?;
        let q_dim = d.n_head as u64 * d.head_dim as u64;
        let rows = (2 * q_dim + 2 * l.max_kv_dim() + 2 * d.n_embd as u64).checked_mul(n_ub)?.checked_mul(4)?;
        let arch = model.arch.scratch_f32_per_token().checked_mul(n_ub)?.checked_mul(4)?;
        let transient = model.arch.transient_f32_per_token().checked_mul(n_ub)?.checked_mul(4)?;
        let layers = mask.checked_add(scores.max(ffn))?.checked_add(rows)?.checked_add(arch)?;
        Some(layers.max(mask.checked_add(transient)?.checked_add(arch)?))
    }
}
