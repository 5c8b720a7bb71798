//! The KV cache: a full cache for global layers, a window-sized ring for sliding-window
//! (local) layers, and the per-batch inputs that address it (row indices, masks).
//!
//! Each layer's K and V are `[head_dim·n_head_kv, n_cells]` tensors: one row per cell (V is
//! stored transposed in sessions without flash attention: [`v_trans_indices`]).
//! Global layers have `n_cells = n_ctx`; local layers keep `min(n_ctx, window + n_ubatch)`
//! cells rounded up to 256, enough that writing a batch never overwrites a key that a query
//! of the same batch still sees. Which cell a token goes to follows llama.cpp's KV cache
//! (`find_slot` and `apply_ubatch` in llama-kv-cache.cpp, llama-cpp-sys-2 0.1.161): from a
//! moving head, take empty cells or cells whose position has left the window, and purge older
//! positions than any overwritten one. The math would be the same with any placement, but
//! attention then sums the same terms in the same order, so our logits stay bit-identical to
//! llama.cpp's past the window too.
#![forbid(unsafe_code)]

use crate::error::{Error, Result};
use crate::ggml::{Backend, Context, Tensor, TensorId, Type};

/// Cells attended over grow in steps of this many, so graphs stay the same shape (and can be
/// reused) for that many decode steps (llama.cpp pads `n_kv` to 256 as well).
pub const N_KV_PAD: u32 = 256;

/// How the cache is laid out.
#[derive(Debug, Clone, Copy)]
pub struct KvOptions {
    /// Cells of the global layers, shared by every sequence.
    pub n_ctx: u32,
    /// Sequences the cache holds at once (each cell is tagged with its sequence); each has
    /// its own sliding window in the local layers.
    pub n_seq: u32,
    /// Largest batch fed in one graph.
    pub n_ubatch: u32,
    /// f16 (default) or q8_0 (needs flash attention, as in llama.cpp).
    pub type_k: Type,
    pub type_v: Type,
}

/// How an architecture's KV cache is laid out, layer by layer.
#[derive(Debug, Clone)]
pub struct KvLayout {
    /// Row length of a K or V cell of each layer: head_dim · n_head_kv. Equal across the
    /// layers of one kind (local or global), which share one set of row indices.
    pub kv_dim: Vec<u64>,
    /// `true` for sliding-window (local) layers, one entry per layer.
    pub is_local: Vec<bool>,
    /// The sliding window of local layers, `None` when there are none.
    pub window: Option<u32>,
    /// A layer that keeps no cache of its own reads this earlier layer's (Gemma 4's shared
    /// KV layers); `None` for a layer with its own cache.
    pub shared_from: Vec<Option<usize>>,
}

impl KvLayout {
    /// Every layer with its own cache of rows `kv_dim` (Gemma 1–3).
    pub fn uniform(kv_dim: u64, is_local: Vec<bool>, window: Option<u32>) -> KvLayout {
        let n = is_local.len();
        KvLayout { kv_dim: vec![kv_dim; n], is_local, window, shared_from: vec![None; n] }
    }

    /// The layers that hold a cache of their own.
    pub fn own_layers(&self) -> impl Iterator<Item = usize> + '_ {
        self.shared_from.iter().enumerate().filter(|(_, s)| s.is_none()).map(|(il, _)| il)
    }

    /// The widest cell row, for scratch estimates.
    pub fn max_kv_dim(&self) -> u64 {
        self.kv_dim.iter().copied().max().unwrap_or(0)
    }

    /// One entry per layer everywhere; a shared layer reads an earlier layer of its kind that
    /// has its own cache, with the same row length; one row length per kind.
    fn check(&self) -> Result<()> {
        let n = self.is_local.len();
        let bad = |why: &'static str| Error::OutOfRange { what: "KV cache layout", value: format!("{n} layers"), why };
        if self.kv_dim.len() != n || self.shared_from.len() != n || self.kv_dim.contains(&0) {
            return Err(bad("needs a row length > 0 and a sharing entry per layer"));
        }
        for (il, src) in self.shared_from.iter().enumerate() {
            if let Some(s) = *src {
                if s >= il || self.shared_from[s].is_some() || self.is_local[s] != self.is_local[il] {
                    return Err(bad("a shared layer must read an earlier layer of its kind with its own cache"));
                }
            }
        }
        for kind in [false, true] {
            let mut dims = (0..n).filter(|&il| self.is_local[il] == kind).map(|il| self.kv_dim[il]);
            if let Some(first) = dims.next() {
                if dims.any(|d| d != first) {
                    return Err(bad("layers of one kind must have one K/V row length"));
                }
            }
        }
        Ok(())
    }
}

/// Cell bookkeeping for one kind of layer.
#[derive(Debug, Clone)]
struct Cells {
    /// Position held by each cell, −1 when empty.
    pos: Vec<i32>,
    /// The sequence of each cell (meaningless while it is empty).
    seq: Vec<u16>,
    /// Sliding window (local layers), `None` for global layers.
    window: Option<u32>,
    /// Where the search for free cells starts.
    head: u32,
}

impl Cells {
    fn n(&self) -> u32 {
        self.pos.len() as u32
    }
}

/// Row indices and mask for one kind of layer in one batch.
pub(crate) struct KvInput<'s> {
    pub idx: Tensor<'s>,
    pub mask: Tensor<'s>,
    pub n_kv: i64,
    /// Without flash attention V is stored transposed (see [`v_trans_indices`]): the
    /// element index of each of the batch's V values, `[kv_dim · n_tokens]`.
    pub v_idx: Option<Tensor<'s>>,
}

/// Where each V value of a batch goes when V is stored transposed.
///
/// Without flash attention, attention multiplies the scores by Vᵀ: `[n_kv, head_dim]` per
/// head, cells along the rows. With one row per cell, that needed a copy of every layer's V
/// cache into transposed form at every step (11% of a generated token's time on Gemma 3
/// 270M). So, as llama.cpp does without flash attention (`v_trans`, llama-kv-cache.cpp), the V
/// tensor of such a session holds dimension-major data: value `j` of cell `c` at element
/// `j · n_cells + c`; the product reads a strided view, and storing writes single elements.
/// Returns, for value `j` of token `i` (source element `i · kv_dim + j`), that index.
pub(crate) fn v_trans_indices(rows: &[i64], kv_dim: i64, n_cells: i64) -> Vec<i64> {
    rows.iter().flat_map(|&c| (0..kv_dim).map(move |j| j * n_cells + c)).collect()
}

/// The graph inputs of one batch.
pub(crate) struct BatchInputs<'s> {
    pub tokens: Tensor<'s>,
    pub pos: Tensor<'s>,
    pub out_ids: Option<Tensor<'s>>,
    pub global: Option<KvInput<'s>>,
    pub local: Option<KvInput<'s>>,
}

/// What a batch will do to the cache: cell rows to write and the masks to attend with.
#[derive(Debug, Clone)]
pub(crate) struct KvPlan {
    pub(crate) kinds: [Option<KindPlan>; 2],
}

#[derive(Debug, Clone)]
pub(crate) struct KindPlan {
    pub rows: Vec<i64>,
    pub n_kv: u32,
    /// `[n_kv, n_tokens]`, 0 or −∞.
    pub mask: Vec<f32>,
    new_pos: Vec<i32>,
    new_seq: Vec<u16>,
    new_head: u32,
}

/// K/V tensors of every layer, in one backend buffer.
pub struct KvCache {
    ctx: Context,
    layers: Vec<(TensorId, TensorId, bool)>,
    cells: [Option<Cells>; 2],
    bytes: usize,
    opts: KvOptions,
}

const GLOBAL: usize = 0;
const LOCAL: usize = 1;

/// Bytes the cache will take, with checked arithmetic (`None` on overflow). Layers that read
/// another layer's cache take none.
pub fn kv_bytes(layout: &KvLayout, o: &KvOptions) -> Option<u64> {
    let row = |t: Type, kv_dim: u64| t.row_size(kv_dim as i64).ok().map(|r| r as u64);
    let local_cells = local_cells(layout.window, o) as u64;
    layout.own_layers().try_fold(0u64, |acc, il| {
        let kv_dim = layout.kv_dim[il];
        let per_cell = row(o.type_k, kv_dim)?.checked_add(row(o.type_v, kv_dim)?)?;
        acc.checked_add(per_cell.checked_mul(if layout.is_local[il] { local_cells } else { o.n_ctx as u64 })?)
    })
}

/// Bytes of the cache of layers `first..` (their own caches; `None` on overflow).
fn kv_bytes_from(layout: &KvLayout, o: &KvOptions, first: usize) -> Option<u64> {
    let tail = KvLayout {
        kv_dim: layout.kv_dim.clone(),
        is_local: layout.is_local.clone(),
        window: layout.window,
        shared_from: layout
            .shared_from
            .iter()
            .enumerate()
            .map(|(il, s)| if il < first { Some(il) } else { *s })
            .collect(),
    };
    kv_bytes(&tail, o)
}

pub(crate) fn local_cells(window: Option<u32>, o: &KvOptions) -> u32 {
    // llama-kv-cache-iswa.cpp: GGML_PAD(min(n_ctx, n_swa·n_seq + n_ubatch), 256), at most
    // n_ctx: every sequence keeps its own window.
    window.map_or(o.n_ctx, |w| {
        let n = o.n_ctx.min(w.saturating_mul(o.n_seq.max(1)).saturating_add(o.n_ubatch));
        n.div_ceil(N_KV_PAD).saturating_mul(N_KV_PAD).min(o.n_ctx)
    })
}

impl KvCache {
    /// A zeroed cache for the layers of `layout`, on `backend`. Refused before allocating
    /// when it would not fit the device's free memory.
    pub fn new(layout: &KvLayout, opts: KvOptions, backend: &Backend) -> Result<KvCache> {
        KvCache::new_split(layout, opts, backend, None)
    }

    /// A zeroed cache whose layers from `first` on live on `device` (the offloaded layers,
    /// as llama.cpp keeps each layer's cache on its layer's device), the rest on `cpu`.
    /// Each part is refused before allocating when it would not fit its device.
    pub fn new_split(
        layout: &KvLayout,
        opts: KvOptions,
        cpu: &Backend,
        device: Option<(&Backend, usize)>,
    ) -> Result<KvCache> {
        let first_dev = device.map_or(layout.is_local.len(), |(_, first)| first);
        if opts.n_ctx == 0 || opts.n_ubatch == 0 {
            return Err(Error::OutOfRange {
                what: "context size",
                value: opts.n_ctx.to_string(),
                why: "must be at least 1",
            });
        }
        layout.check()?;
        let need = kv_bytes(layout, &opts).ok_or(Error::OutOfRange {
            what: "context size",
            value: opts.n_ctx.to_string(),
            why: "KV cache size overflows",
        })?;
        let need_dev = kv_bytes_from(layout, &opts, first_dev).unwrap_or(need);
        for (backend, needed) in [(Some(cpu), need - need_dev), (device.map(|(b, _)| b), need_dev)] {
            let Some(backend) = backend.filter(|_| needed > 0) else { continue };
            let (free, _) = backend.device().memory();
            if needed > free as u64 {
                return Err(Error::TooLarge {
                    what: format!("KV cache for n_ctx = {} on {}", opts.n_ctx, backend.name()),
                    needed,
                    available: free as u64,
                });
            }
        }
        let is_local = &layout.is_local;
        let ctx = Context::new(2 * is_local.len(), 0)?;
        let n_local = local_cells(layout.window, &opts);
        let mut layers: Vec<(TensorId, TensorId, bool)> = Vec::with_capacity(is_local.len());
        for (il, &local) in is_local.iter().enumerate() {
            if il == first_dev {
                // The CPU's layers first (alloc_tensors takes every tensor not yet allocated).
                ctx.alloc_tensors(cpu)?;
            }
            if let Some(src) = layout.shared_from[il] {
                // Checked by `layout.check`: an earlier layer of the same kind with its own cache.
                layers.push(layers[src]);
                continue;
            }
            let n_cells = if local { n_local } else { opts.n_ctx } as i64;
            let kv_dim = layout.kv_dim[il] as i64;
            let k = ctx.new_tensor(opts.type_k, &[kv_dim, n_cells])?.set_name(&format!("cache_k_l{il}"))?;
            let v = ctx.new_tensor(opts.type_v, &[kv_dim, n_cells])?.set_name(&format!("cache_v_l{il}"))?;
            layers.push((ctx.id_of(k)?, ctx.id_of(v)?, local));
        }
        ctx.alloc_tensors(device.filter(|_| first_dev < is_local.len()).map_or(cpu, |(b, _)| b))?;
        let cells = |n: u32, window| Cells { pos: vec![-1; n as usize], seq: vec![0; n as usize], window, head: 0 };
        let has = |l: bool| is_local.contains(&l);
        Ok(KvCache {
            ctx,
            layers,
            cells: [has(false).then(|| cells(opts.n_ctx, None)), has(true).then(|| cells(n_local, layout.window))],
            bytes: need as usize,
            opts,
        })
    }

    /// Bytes held by the cache.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn options(&self) -> &KvOptions {
        &self.opts
    }

    /// Forgets every position (the memory is kept; masks hide stale cells).
    pub fn clear(&mut self) {
        for c in self.cells.iter_mut().flatten() {
            c.pos.fill(-1);
            c.head = 0;
        }
    }

    /// Forgets the positions of sequence `seq`.
    pub fn clear_seq(&mut self, seq: u16) {
        for c in self.cells.iter_mut().flatten() {
            c.pos.iter_mut().zip(&c.seq).filter(|(_, &s)| s == seq).for_each(|(p, _)| *p = -1);
        }
    }

    /// Keeps only the first `n` positions of sequence `seq`, when the cells still hold every
    /// position that the token at position `n` attends to (a local layer's ring may have
    /// dropped those older than its window); `false`, changing nothing, when not. The search
    /// for free cells restarts at the first cell freed, where a fresh run would write next.
    pub fn truncate_seq(&mut self, seq: u16, n: u32) -> bool {
        let n = n as i32;
        let complete = |c: &Cells| {
            let lo = c.window.map_or(0, |w| (n - w as i32 + 1).max(0));
            let held = c.pos.iter().zip(&c.seq).filter(|(&p, &s)| s == seq && p >= lo && p < n).count();
            held == (n - lo).max(0) as usize
        };
        if !self.cells.iter().flatten().all(complete) {
            return false;
        }
        for c in self.cells.iter_mut().flatten() {
            let mut first = None;
            for (i, (p, &s)) in c.pos.iter_mut().zip(&c.seq).enumerate() {
                if s == seq && *p >= n {
                    *p = -1;
                    first = first.or(Some(i as u32));
                }
            }
            if let Some(f) = first {
                c.head = f;
            }
        }
        true
    }

    /// Cells holding a token, in the global layers (or the local ones when there are none).
    pub fn cells_used(&self) -> usize {
        self.cells.iter().flatten().next().map_or(0, |c| c.pos.iter().filter(|&&p| p >= 0).count())
    }

    /// Plans writing a batch, token `i` at `positions[i]` of sequence `seqs[i]`, into every
    /// kind of cell; an error when no cells are free (cannot happen while the session keeps
    /// within n_ctx).
    /// `causal[k]` for the global (0) and local (1) cells: where false the batch's tokens also
    /// see the batch's later positions (an image's tokens), the window still applying to
    /// earlier positions (llama.cpp's `set_input_kq_mask` with `causal_attn` false, per cache:
    /// both for `LLAMA_NON_CAUSAL_TYPE_ALL`, the SWA one only for `SWA_ONLY`;
    /// llama-kv-cache.cpp).
    pub(crate) fn plan(&self, positions: &[i32], seqs: &[u16], causal: [bool; 2]) -> Result<KvPlan> {
        let plan = |k: usize| self.cells[k].as_ref().map(|c| plan_kind(c, positions, seqs, causal[k])).transpose();
        Ok(KvPlan { kinds: [plan(GLOBAL)?, plan(LOCAL)?] })
    }

    /// Records a computed batch's positions.
    pub(crate) fn commit(&mut self, plan: KvPlan) {
        for (cells, p) in self.cells.iter_mut().zip(plan.kinds) {
            if let (Some(c), Some(p)) = (cells, p) {
                c.pos = p.new_pos;
                c.seq = p.new_seq;
                c.head = p.new_head;
            }
        }
    }

    /// `[kv_dim, n_cells]` of the global and the local layers' tensors (`(0, 0)` for a kind
    /// the model does not have).
    pub(crate) fn shapes(&self) -> [(i64, i64); 2] {
        let mut out = [(0, 0); 2];
        for &(k, _, local) in &self.layers {
            if let Ok(t) = self.ctx.tensor(k) {
                out[if local { LOCAL } else { GLOBAL }] = (t.ne()[0], t.ne()[1]);
            }
        }
        out
    }

    /// Layer `il`'s K and V tensors and the batch inputs for its kind.
    pub(crate) fn layer<'s, 'i>(
        &'s self,
        il: usize,
        inp: &'i BatchInputs<'s>,
    ) -> Result<(Tensor<'s>, Tensor<'s>, &'i KvInput<'s>)> {
        let (k, v, local) = self.layers[il];
        let kin = if local { inp.local.as_ref() } else { inp.global.as_ref() };
        let kin = kin.ok_or(Error::Null("KV cache inputs for this layer kind"))?;
        Ok((self.ctx.tensor(k)?, self.ctx.tensor(v)?, kin))
    }
}

/// Cells for the batch, the number of cells to attend over, and the mask.
fn plan_kind(c: &Cells, positions: &[i32], seqs: &[u16], causal: bool) -> Result<KindPlan> {
    let Placed { rows, pos: new_pos, seq: new_seq, head: new_head } = place(c, positions, seqs)?;
    // Attend over the used cells, rounded up to 256 (llama.cpp's `get_n_kv`).
    let used_max_p1 = new_pos.iter().rposition(|&p| p >= 0).map_or(0, |i| i as u32 + 1);
    let n_kv = used_max_p1.div_ceil(N_KV_PAD).saturating_mul(N_KV_PAD).max(N_KV_PAD).min(c.n());
    let mut mask = Vec::with_capacity(n_kv as usize * positions.len());
    for (&q, &s) in positions.iter().zip(seqs) {
        mask.extend(new_pos[..n_kv as usize].iter().zip(&new_seq).map(|(&p, &cs)| {
            // The window looks back only: a later position (non-causal batch) is inside it.
            let visible =
                p >= 0 && cs == s && (p <= q || !causal) && c.window.is_none_or(|w| (q as i64 - p as i64) < w as i64);
            if visible {
                0.0
            } else {
                f32::NEG_INFINITY
            }
        }));
    }
    Ok(KindPlan { rows, n_kv, mask, new_pos, new_seq, new_head })
}

/// Where a batch goes: a cell for each token, and the cells' positions, sequences and head
/// after writing it.
struct Placed {
    rows: Vec<i64>,
    pos: Vec<i32>,
    seq: Vec<u16>,
    head: u32,
}

/// Chooses a cell for each token.
fn place(c: &Cells, positions: &[i32], seqs: &[u16]) -> Result<Placed> {
    let n = c.n();
    let n_tokens = positions.len() as u32;
    let used = c.pos.iter().filter(|&&p| p >= 0).count() as u32;
    // The last position of each sequence.
    let n_seq = c.seq.iter().chain(seqs).map(|&s| s as usize + 1).max().unwrap_or(1);
    let mut seq_max = vec![-1i32; n_seq];
    for (&p, &s) in c.pos.iter().zip(&c.seq).filter(|(&p, _)| p >= 0) {
        seq_max[s as usize] = seq_max[s as usize].max(p);
    }
    // Cells whose position has slid out of the window of their sequence's next position are
    // reusable.
    let reusable = |i: usize| {
        let p = c.pos[i];
        p < 0 || c.window.is_some_and(|w| (seq_max[c.seq[i] as usize] + 1 - p) as i64 >= w as i64)
    };
    let mut head = if c.head > used.saturating_add(2 * n_tokens) { 0 } else { c.head };
    let (mut rows, mut tested) = (Vec::with_capacity(positions.len()), 0u32);
    while rows.len() < positions.len() {
        if head >= n {
            head = 0;
            continue;
        }
        let idx = head;
        head += 1;
        tested += 1;
        if reusable(idx as usize) {
            rows.push(idx as i64);
        }
        if rows.len() < positions.len() && tested >= n {
            return Err(Error::OutOfRange {
                what: "KV cache cells",
                value: n.to_string(),
                why: "no free cell for the batch",
            });
        }
    }
    // Write, then purge every position of a sequence older than one of its positions that
    // was overwritten, so the cache always holds a contiguous range of each sequence.
    let (mut new_pos, mut new_seq) = (c.pos.clone(), c.seq.clone());
    let mut max_overwritten = vec![-1i32; n_seq];
    for ((&r, &p), &s) in rows.iter().zip(positions).zip(seqs) {
        let r = r as usize;
        if new_pos[r] >= 0 {
            let old = &mut max_overwritten[new_seq[r] as usize];
            *old = (*old).max(new_pos[r]);
        }
        new_pos[r] = p;
        new_seq[r] = s;
    }
    let written: Vec<bool> = {
        let mut w = vec![false; n as usize];
        rows.iter().for_each(|&r| w[r as usize] = true);
        w
    };
    for i in 0..n as usize {
        if !written[i] && new_pos[i] >= 0 && new_pos[i] <= max_overwritten[new_seq[i] as usize] {
            new_pos[i] = -1;
        }
    }
    let new_head = rows.last().map_or(head, |&r| r as u32 + 1);
    Ok(Placed { rows, pos: new_pos, seq: new_seq, head: new_head })
}
