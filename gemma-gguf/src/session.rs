//! A session: one conversation's KV cache and position, fed tokens in batches.
//!
//! Prefill feeds up to `n_ubatch` tokens per graph; decode feeds one. A graph is rebuilt
//! only when its shape changes (batch size, cells attended over, outputs read), so decode
//! steps reuse one graph for up to [`N_KV_PAD`](crate::kv_cache::N_KV_PAD) tokens and
//! allocate nothing per token.
#![forbid(unsafe_code)]

use crate::arch::{gemma, gemma2, gemma3, gemma3n, gemma4, Pass};
use crate::error::{Error, Result};
use crate::ggml::{Context, GraphId, Scheduler, TensorId, Type};
use crate::kv_cache::{v_trans_indices, BatchInputs, KindPlan, KvCache, KvInput, KvOptions, KvPlan};
use crate::model::{Arch, Model, NonCausal};

mod memory;
mod seqs;
pub use seqs::SeqTokens;

/// Largest batch fed in one graph by default (llama.cpp's default `n_ubatch`).
pub const DEFAULT_UBATCH: u32 = 512;
/// Default context when none is given.
pub const DEFAULT_CTX: u32 = 4096;

/// How a session runs.
#[derive(Debug, Clone, Copy)]
pub struct SessionOptions {
    /// Context size in tokens (at most the model's training context).
    pub n_ctx: u32,
    pub n_ubatch: u32,
    /// `ggml_flash_attn_ext` instead of separate matrix products and softmax.
    pub flash_attn: bool,
    /// KV cache type: f16, or q8_0 (needs flash attention).
    pub kv_type: Type,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { n_ctx: DEFAULT_CTX, n_ubatch: DEFAULT_UBATCH, flash_attn: false, kv_type: Type::F16 }
    }
}

/// Which positions of a batch need logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outputs {
    /// Only the last token (generation).
    Last,
    /// Every token (scoring, perplexity, comparisons).
    All,
}

/// The shape a graph was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GraphKey {
    n_tokens: u32,
    n_out: u32,
    n_kv: [u32; 2],
    /// Fed embeddings instead of token ids.
    embd: bool,
}

/// What one batch feeds: token ids, or rows of input embeddings (`n_embd` each).
#[derive(Clone, Copy)]
enum BatchInput<'a> {
    Tokens(&'a [u32]),
    Embd(&'a [f32]),
}

/// A built, allocated graph: its context and the ids of its inputs and output.
struct BuiltGraph {
    ctx: Context,
    ids: GraphIds,
}

struct GraphIds {
    key: GraphKey,
    graph: GraphId,
    tokens: TensorId,
    /// `[n_embd, n_tokens]` f32 rows fed instead of `tokens` (a graph keyed `embd`).
    embd: Option<TensorId>,
    pos: TensorId,
    out_ids: Option<TensorId>,
    /// Per kind of layer: row indices, mask, and with V transposed its element indices.
    kv: [Option<(TensorId, TensorId, Option<TensorId>)>; 2],
    /// `[kv_dim, n_cells]` of each kind, for the V element indices.
    kv_shape: [(i64, i64); 2],
    logits: TensorId,
    captured: Vec<(String, TensorId)>,
}

/// One conversation with a model.
pub struct Session<'m> {
    model: &'m Model,
    kv: KvCache,
    /// Tokens in the cache, per sequence.
    n_past: Vec<u32>,
    opts: SessionOptions,
    graph: Option<BuiltGraph>,
    /// Graph nodes to keep and read after each batch (debugging against llama.cpp's names).
    capture: Vec<String>,
    captured: Vec<(String, Vec<f32>)>,
    /// Largest compute buffer any graph of this session has needed, in bytes.
    compute_peak: usize,
    /// With layers on a device: the scheduler that splits each graph between it and the CPU.
    sched: Option<Scheduler<'m>>,
}

impl<'m> Session<'m> {
    /// Keeps the named graph nodes (llama.cpp's `name-layer` names) readable after each
    /// batch, for diffing activations against another runtime. Rebuilds the graph.
    pub fn capture_nodes(&mut self, names: &[&str]) {
        self.capture = names.iter().map(|s| s.to_string()).collect();
        self.graph = None;
    }

    /// The nodes captured by the last batch, in the order asked.
    pub fn captured(&self) -> &[(String, Vec<f32>)] {
        &self.captured
    }

    /// A session with an empty cache. `n_ctx` is checked against the model and against free
    /// memory before anything is allocated.
    pub fn new(model: &'m Model, opts: SessionOptions) -> Result<Session<'m>> {
        Session::with_sequences(model, opts, 1)
    }

    /// A session whose cache holds `n_seq` sequences at once, each of up to `n_ctx / n_seq`
    /// tokens, fed together by [`decode_seqs`](Self::decode_seqs) (llama.cpp's unified KV
    /// cache: cells are shared, each tagged with its sequence, and a token attends only to
    /// its own sequence's cells).
    pub fn with_sequences(model: &'m Model, opts: SessionOptions, n_seq: u32) -> Result<Session<'m>> {
        let bad_ctx = || Error::OutOfRange {
            what: "context size",
            value: opts.n_ctx.to_string(),
            why: "must be 1 to the model's training context",
        };
        // The context first: n_ctx 0 is a bad context, whatever the sequence count.
        if opts.n_ctx == 0 {
            return Err(bad_ctx());
        }
        if n_seq == 0 || n_seq > u16::MAX as u32 || opts.n_ctx < n_seq {
            return Err(Error::OutOfRange {
                what: "sequences",
                value: n_seq.to_string(),
                why: "must be 1 to 65535, and at most the context size",
            });
        }
        if opts.n_ctx / n_seq > model.n_ctx_train() {
            return Err(bad_ctx());
        }
        if opts.kv_type != Type::F16 && !opts.flash_attn {
            return Err(Error::TypeNotUsable {
                ty: opts.kv_type.name().into(),
                what: "a KV cache without flash attention (as in llama.cpp)",
            });
        }
        let kv_opts = kv_options(&SessionOptions { n_ubatch: opts.n_ubatch.clamp(1, opts.n_ctx), ..opts }, n_seq);
        let l = model.arch.kv_layout();
        // The cache and the largest step's scratch, together, before either is allocated.
        let kv_opts_bytes = SessionOptions { n_ubatch: kv_opts.n_ubatch, ..opts };
        let (free, _) = model.backend().device().memory();
        if let (Some(kv), Some(scratch)) =
            (Self::kv_bytes_for(model, &kv_opts_bytes), Self::scratch_bytes_for(model, &kv_opts_bytes))
        {
            let need = kv.saturating_add(scratch);
            if need > free as u64 {
                return Err(Error::TooLarge {
                    what: format!(
                        "n_ctx = {} (KV cache {kv} bytes, attention and other scratch {scratch} bytes)",
                        opts.n_ctx
                    ),
                    needed: need,
                    available: free as u64,
                });
            }
        }
        let device = model.offload.as_ref().map(|o| (o.backend(), o.first_layer()));
        let kv = KvCache::new_split(&l, kv_opts, &model.backend, device)?;
        let sched = match &model.offload {
            Some(o) => {
                let device = crate::ggml::Backend::new(o.backend().device())?;
                Some(Scheduler::new(device, &model.backend, 2 * graph_nodes(model), true)?)
            }
            None => None,
        };
        Ok(Session {
            model,
            kv,
            n_past: vec![0; n_seq as usize],
            opts: SessionOptions { n_ubatch: kv_opts.n_ubatch, ..opts },
            graph: None,
            capture: Vec::new(),
            captured: Vec::new(),
            compute_peak: 0,
            sched,
        })
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Tokens in the cache (of sequence 0).
    pub fn n_past(&self) -> u32 {
        self.n_past[0]
    }

    /// Tokens of sequence `seq` in the cache (0 for a sequence the session does not have).
    pub fn n_past_seq(&self, seq: u16) -> u32 {
        self.n_past.get(seq as usize).copied().unwrap_or(0)
    }

    /// The context of one sequence: the cells divided among the sequences.
    pub fn n_ctx(&self) -> u32 {
        self.opts.n_ctx / self.n_past.len() as u32
    }

    /// Sequences the session holds.
    pub fn n_seq(&self) -> u16 {
        self.n_past.len() as u16
    }

    /// The largest compute buffer (intermediate tensors of one graph) used so far, in bytes;
    /// one graph's buffer is held at a time.
    pub fn compute_bytes(&self) -> usize {
        self.compute_peak
    }

    /// Pieces the last graph was split into between the device and the CPU (1 without a
    /// device, or when everything ran on one backend).
    pub fn graph_splits(&self) -> usize {
        self.sched.as_ref().map_or(1, |s| s.n_splits())
    }

    pub fn kv_cache(&self) -> &KvCache {
        &self.kv
    }

    /// Empties the cache.
    pub fn reset(&mut self) {
        self.kv.clear();
        self.n_past.fill(0);
    }

    /// Empties sequence `seq`'s part of the cache.
    pub fn clear_seq(&mut self, seq: u16) {
        if let Some(n) = self.n_past.get_mut(seq as usize) {
            self.kv.clear_seq(seq);
            *n = 0;
        }
    }

    /// Feeds `tokens` after what the cache holds and returns logits, `n_vocab` per output
    /// row: one row (the last token) or one per token.
    pub fn decode(&mut self, tokens: &[u32], outputs: Outputs) -> Result<Vec<f32>> {
        let mut logits = Vec::new();
        self.decode_into(tokens, outputs, &mut logits)?;
        Ok(logits)
    }

    /// [`decode`](Self::decode) into a caller's buffer (cleared first), so a generation loop
    /// that reuses it allocates no logits per token.
    pub fn decode_into(&mut self, tokens: &[u32], outputs: Outputs, logits: &mut Vec<f32>) -> Result<()> {
        logits.clear();
        let n_vocab = self.model.n_vocab();
        if let Some(&id) = tokens.iter().find(|&&t| t >= n_vocab) {
            return Err(Error::BadToken { id, n_vocab });
        }
        if tokens.is_empty() {
            return Err(Error::OutOfRange {
                what: "tokens to decode",
                value: "0".into(),
                why: "give at least one token",
            });
        }
        if self.n_past[0] as usize + tokens.len() > self.n_ctx() as usize {
            return Err(Error::ContextOverflow { n_past: self.n_past[0], n_new: tokens.len(), n_ctx: self.n_ctx() });
        }
        let n_chunks = tokens.len().div_ceil(self.opts.n_ubatch as usize);
        for (i, chunk) in tokens.chunks(self.opts.n_ubatch as usize).enumerate() {
            // Rows of earlier batches are read only when every position is wanted.
            if outputs == Outputs::Last {
                logits.clear();
            }
            self.decode_ubatch(chunk, outputs == Outputs::All, logits)?;
            debug_assert!(outputs == Outputs::All || i + 1 < n_chunks || logits.len() == n_vocab as usize);
        }
        Ok(())
    }

    /// Feeds `n_tokens` rows of input embeddings (`embd`: `n_tokens × n_embd` floats, row by
    /// row, already in the model's embedding space: an image's, from the projector) at sequence
    /// 0's next positions, in one batch, reading no logits. With `causal` false every row
    /// also attends to the batch's later rows, on the layers the model's [`NonCausal`] names
    /// (an image's bidirectional attention; libmtmd's `mtmd_decode_use_non_causal` and
    /// llama.cpp's `non_causal_type`), so the rows must fit one batch.
    pub fn decode_embd(&mut self, embd: &[f32], causal: bool) -> Result<()> {
        self.decode_embd_seq(0, embd, causal)
    }

    /// [`decode_embd`](Self::decode_embd) at sequence `seq`'s next positions.
    pub fn decode_embd_seq(&mut self, seq: u16, embd: &[f32], causal: bool) -> Result<()> {
        let Some(&n_past) = self.n_past.get(seq as usize) else {
            return Err(Error::OutOfRange {
                what: "sequence",
                value: seq.to_string(),
                why: "the session has fewer sequences",
            });
        };
        let n_embd = self.model.dims().n_embd as usize;
        if embd.is_empty() || !embd.len().is_multiple_of(n_embd) {
            return Err(Error::OutOfRange {
                what: "input embeddings",
                value: embd.len().to_string(),
                why: "must be a positive multiple of the model's embedding width",
            });
        }
        let n = embd.len() / n_embd;
        if n > self.opts.n_ubatch as usize {
            return Err(Error::OutOfRange {
                what: "embeddings in one batch",
                value: n.to_string(),
                why: "an image must fit one batch: raise the batch size (n_ubatch)",
            });
        }
        if n_past as usize + n > self.n_ctx() as usize {
            return Err(Error::ContextOverflow { n_past, n_new: n, n_ctx: self.n_ctx() });
        }
        let positions: Vec<i32> = (0..n as i32).map(|i| n_past as i32 + i).collect();
        let mut discard = Vec::new();
        let last = [n as i32 - 1];
        self.run_batch(BatchInput::Embd(embd), &positions, &vec![seq; n], Some(&last), causal, &mut discard)?;
        self.n_past[seq as usize] += n as u32;
        Ok(())
    }

    /// One graph: `tokens` (at most n_ubatch) of sequence 0 at its next positions.
    fn decode_ubatch(&mut self, tokens: &[u32], all: bool, logits: &mut Vec<f32>) -> Result<()> {
        let positions: Vec<i32> = (0..tokens.len() as i32).map(|i| self.n_past[0] as i32 + i).collect();
        let last = [tokens.len() as i32 - 1];
        self.run_ubatch(tokens, &positions, &vec![0; tokens.len()], if all { None } else { Some(&last) }, logits)?;
        self.n_past[0] += tokens.len() as u32;
        Ok(())
    }

    /// One graph: token `i` at `positions[i]` of sequence `seqs[i]`; logits of the rows
    /// `out` (every row when `None`) appended to `logits`.
    fn run_ubatch(
        &mut self,
        tokens: &[u32],
        positions: &[i32],
        seqs: &[u16],
        out: Option<&[i32]>,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        self.run_batch(BatchInput::Tokens(tokens), positions, seqs, out, true, logits)
    }

    /// [`run_ubatch`](Self::run_ubatch) for token ids or embeddings, causal or not.
    fn run_batch(
        &mut self,
        input: BatchInput<'_>,
        positions: &[i32],
        seqs: &[u16],
        out: Option<&[i32]>,
        causal: bool,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        // Causal attention off: both ways within the batch on the layers the model says.
        let causal = match (causal, self.model.arch().non_causal()) {
            (true, _) => [true, true],
            (false, NonCausal::AllLayers) => [false, false],
            (false, NonCausal::SlidingOnly) => [true, false],
        };
        let plan = self.kv.plan(positions, seqs, causal)?;
        let n_tokens = positions.len();
        let out = out.filter(|o| o.len() < n_tokens);
        let n_out = out.map_or(n_tokens, |o| o.len()) as u32;
        let key = GraphKey {
            n_tokens: n_tokens as u32,
            n_out,
            n_kv: [0, 1].map(|k| plan.kinds[k].as_ref().map_or(0, |p| p.n_kv)),
            embd: matches!(input, BatchInput::Embd(_)),
        };
        if self.graph.as_ref().is_none_or(|g| g.ids.key != key) {
            self.graph = None;
            let n_nodes = graph_nodes(self.model);
            let ctx = Context::new(n_nodes, n_nodes)?;
            let ids = self.build(&ctx, key, n_nodes)?;
            let bytes = self.sched.as_ref().map_or_else(|| ctx.graph_buffer_bytes(), |s| s.buffer_bytes());
            self.compute_peak = self.compute_peak.max(bytes);
            self.graph = Some(BuiltGraph { ctx, ids });
        }
        let BuiltGraph { ctx, ids } = self.graph.as_ref().expect("built above");
        set_inputs(ctx, ids, input, positions, out, &plan, self.opts.flash_attn)?;
        match &self.sched {
            None => self.model.backend.compute(&ctx.graph(ids.graph)?)?,
            Some(sched) => sched.compute(&ctx.graph(ids.graph)?)?,
        }
        ctx.tensor(ids.logits)?.append_f32(logits)?;
        self.captured.clear();
        for (name, id) in &ids.captured {
            self.captured.push((name.clone(), ctx.tensor(*id)?.get_f32()?));
        }
        self.kv.commit(plan);
        Ok(())
    }

    /// Builds and allocates the forward graph for `key` in `ctx`.
    fn build(&self, ctx: &Context, key: GraphKey, n_nodes: usize) -> Result<GraphIds> {
        let n = key.n_tokens as i64;
        let tokens = ctx.new_tensor(Type::I32, &[n])?.set_input();
        let n_embd = self.model.dims().n_embd as i64;
        let embd = if key.embd { Some(ctx.new_tensor(Type::F32, &[n_embd, n])?.set_input()) } else { None };
        let pos = ctx.new_tensor(Type::I32, &[n])?.set_input();
        let out_ids = if key.n_out < key.n_tokens {
            Some(ctx.new_tensor(Type::I32, &[key.n_out as i64])?.set_input())
        } else {
            None
        };
        let mask_ty = if self.opts.flash_attn { Type::F16 } else { Type::F32 };
        let kv_shape = self.kv.shapes();
        let mut kv_in = [None, None];
        for (k, slot) in kv_in.iter_mut().enumerate() {
            if key.n_kv[k] > 0 {
                let idx = ctx.new_tensor(Type::I64, &[n])?.set_input();
                let mask = ctx.new_tensor(mask_ty, &[key.n_kv[k] as i64, n])?.set_input();
                let v_idx = match self.opts.flash_attn {
                    true => None,
                    false => Some(ctx.new_tensor(Type::I64, &[kv_shape[k].0 * n])?.set_input()),
                };
                *slot = Some(KvInput { idx, mask, n_kv: key.n_kv[k] as i64, v_idx });
            }
        }
        let [global, local] = kv_in;
        let inp = BatchInputs { tokens, pos, out_ids, global, local };
        let mut gf = ctx.new_graph(n_nodes)?;
        let pass = Pass { ctx, wctx: &self.model.wctx, kv: &self.kv, inp: &inp, flash_attn: self.opts.flash_attn };
        if embd.is_some() && !matches!(self.model.arch, Arch::Gemma3 { .. } | Arch::Gemma4 { .. }) {
            return Err(Error::Projector {
                what: format!(
                    "{} models take no input embeddings (Gemma 3 and Gemma 4 do here)",
                    self.model.arch.name()
                ),
            });
        }
        let logits = match &self.model.arch {
            Arch::Gemma { hp, weights: w } => gemma::Forward { pass, w, hp }.build(&mut gf)?,
            Arch::Gemma2 { hp, weights: w } => gemma2::Forward { pass, w, hp }.build(&mut gf)?,
            Arch::Gemma3 { hp, weights: w } => gemma3::Forward { pass, w, hp, embd }.build(&mut gf)?,
            Arch::Gemma4 { hp, weights: w } => gemma4::Forward { pass, w, hp, embd }.build(&mut gf)?,
            Arch::Gemma3n { hp, weights: w } => gemma3n::Forward { pass, w, hp }.build(&mut gf)?,
        };
        let logits = logits.set_output();
        gf.expand(logits)?;
        let mut captured = Vec::new();
        for name in &self.capture {
            if let Some(t) = ctx.find(name) {
                captured.push((name.clone(), ctx.id_of(t.set_output())?));
            }
        }
        match &self.sched {
            None => ctx.alloc_graph(&gf, &self.model.backend)?,
            Some(sched) => {
                // llama.cpp pins each layer's norms to the layer's device for batches under
                // 32 tokens and for full offload (llama-context.cpp, graph_get_cb).
                if let Some(off) = self.model.offload().filter(|o| key.n_tokens < 32 || o.on_device(0)) {
                    sched.pin_layer_norms(&gf, |il| off.on_device(il));
                }
                sched.alloc(&gf, 2 * n_nodes)?
            }
        }
        let ids = |k: &Option<KvInput<'_>>| -> Result<Option<(TensorId, TensorId, Option<TensorId>)>> {
            k.as_ref()
                .map(|k| Ok((ctx.id_of(k.idx)?, ctx.id_of(k.mask)?, k.v_idx.map(|t| ctx.id_of(t)).transpose()?)))
                .transpose()
        };
        Ok(GraphIds {
            key,
            graph: gf.id(),
            tokens: ctx.id_of(tokens)?,
            embd: embd.map(|t| ctx.id_of(t)).transpose()?,
            pos: ctx.id_of(pos)?,
            out_ids: out_ids.map(|t| ctx.id_of(t)).transpose()?,
            kv: [ids(&inp.global)?, ids(&inp.local)?],
            kv_shape,
            logits: ctx.id_of(logits)?,
            captured,
        })
    }
}

/// Writes one batch's inputs into a built graph.
fn set_inputs(
    ctx: &Context,
    g: &GraphIds,
    input: BatchInput<'_>,
    positions: &[i32],
    out: Option<&[i32]>,
    plan: &KvPlan,
    flash: bool,
) -> Result<()> {
    match (input, g.embd) {
        (BatchInput::Tokens(tokens), None) => {
            let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
            ctx.tensor(g.tokens)?.set_i32(&ids)?;
        }
        (BatchInput::Embd(rows), Some(id)) => ctx.tensor(id)?.set_f32(rows)?,
        _ => return Err(Error::Null("graph input kind (tokens or embeddings)")),
    }
    ctx.tensor(g.pos)?.set_i32(positions)?;
    if let (Some(id), Some(rows)) = (g.out_ids, out) {
        ctx.tensor(id)?.set_i32(rows)?;
    }
    for ((slot, kind), &(kv_dim, n_cells)) in g.kv.iter().zip(&plan.kinds).zip(&g.kv_shape) {
        if let (Some((idx, mask, v_idx)), Some(KindPlan { rows, mask: m, .. })) = (slot, kind) {
            ctx.tensor(*idx)?.set_i64(rows)?;
            if let Some(v_idx) = v_idx {
                ctx.tensor(*v_idx)?.set_i64(&v_trans_indices(rows, kv_dim, n_cells))?;
            }
            let mask = ctx.tensor(*mask)?;
            if flash {
                mask.set_f32_as_f16(m)?;
            } else {
                mask.set_f32(m)?;
            }
        }
    }
    Ok(())
}

/// Nodes (and leaves) a forward graph may hold: 8 per weight, and room for the rest.
fn graph_nodes(model: &Model) -> usize {
    64 * model.gguf.tensors().len() / 8 + 1024
}

/// The cache layout of a session with `opts` and `n_seq` sequences.
fn kv_options(opts: &SessionOptions, n_seq: u32) -> KvOptions {
    KvOptions { n_ctx: opts.n_ctx, n_seq, n_ubatch: opts.n_ubatch, type_k: opts.kv_type, type_v: opts.kv_type }
}
