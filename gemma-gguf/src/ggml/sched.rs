//! ggml's backend scheduler (`ggml_backend_sched`): one graph split over several backends
//! (a GPU and the CPU), each node run where its weights are, with the copies between them.
//!
//! This is how a partly offloaded model runs, as in llama.cpp (`llama_context`, which makes
//! one scheduler over the model's devices with the CPU last): the scheduler assigns every node
//! to the backend that holds its weights (or, for ops without weights, a neighbour's), lets a
//! higher-priority backend take ops whose weights are in host memory when it asks for them
//! (`op_offload`, e.g. large prompt batches), falls back to the CPU for ops a device does not
//! support, allocates one compute buffer per backend and copies tensors across.
use super::backend::Backend;
use super::context::Graph;
use super::{sys, Error, Result};
use std::marker::PhantomData;
use std::ptr::NonNull;

/// A `ggml_backend_sched` over a device backend it owns and the CPU backend, borrowed for
/// `'b`. Each scheduler gets its own stream on the device, as each llama.cpp context creates
/// its own backends: ggml-vulkan's backend keeps state between graphs that refers to the
/// compute buffers of the scheduler that ran them, so two schedulers must not share one.
pub struct Scheduler<'b> {
    raw: RawSched,
    names: Vec<String>,
    backends: Vec<sys::ggml_backend_t>,
    /// Freed after `raw` (field order).
    device: Backend,
    _backends: PhantomData<&'b Backend>,
}

/// The owning handle. It has no lifetime: `ggml_backend_sched_free` frees the scheduler's own
/// allocations (compute buffers, graph copies, events of its copies) and never calls into the
/// backends, so freeing it after them is sound, and a session that holds a scheduler may be
/// dropped after its model in a temporary (the borrow checker's drop check needs that).
struct RawSched(NonNull<sys::ggml_backend_sched>);

impl Drop for RawSched {
    fn drop(&mut self) {
        // SAFETY: created by ggml_backend_sched_new, freed once (see the type's comment).
        unsafe { sys::ggml_backend_sched_free(self.0.as_ptr()) }
    }
}

impl<'b> Scheduler<'b> {
    /// The scheduler's own stream on the device.
    pub fn device_backend(&self) -> &Backend {
        &self.device
    }

    /// A scheduler over `device` (first, preferred) and `cpu` (last, as ggml requires).
    /// `graph_size` bounds the nodes of a graph it is given (ggml asserts it, so
    /// [`alloc`](Self::alloc) checks it first). `op_offload` as in llama.cpp's default
    /// (`llama_context_params::op_offload = true`).
    pub fn new(device: Backend, cpu: &'b Backend, graph_size: usize, op_offload: bool) -> Result<Scheduler<'b>> {
        if !cpu.is_cpu() || device.is_cpu() || graph_size == 0 {
            return Err(Error::OutOfRange {
                what: "scheduler backends",
                value: format!("{} + {}", device.name(), cpu.name()),
                why: "a device, then the CPU, and a non-empty graph size",
            });
        }
        let mut raw: Vec<sys::ggml_backend_t> = vec![device.as_ptr(), cpu.as_ptr()];
        // SAFETY: live backends (the device owned by the scheduler, the CPU borrowed for 'b),
        // CPU last; null bufts = each backend's default buffer type; not parallel.
        let p = unsafe {
            sys::ggml_backend_sched_new(
                raw.as_mut_ptr(),
                std::ptr::null_mut(),
                raw.len() as i32,
                graph_size,
                false,
                op_offload,
            )
        };
        let sched = NonNull::new(p).ok_or(Error::Null("ggml_backend_sched_new"))?;
        let names = vec![device.name().to_string(), cpu.name().to_string()];
        Ok(Scheduler { raw: RawSched(sched), names, backends: raw, device, _backends: PhantomData })
    }

    /// Splits `graph` over the backends and allocates its compute buffers (after forgetting
    /// the previous graph's assignment). Inputs can be written after this call.
    pub fn alloc(&self, graph: &Graph<'_>, graph_size: usize) -> Result<()> {
        if graph.n_nodes() > graph_size {
            return Err(Error::OutOfRange {
                what: "graph nodes",
                value: graph.n_nodes().to_string(),
                why: "more than the scheduler was made for",
            });
        }
        // SAFETY: live scheduler and graph; failure is reported by the return value.
        let ok = unsafe {
            sys::ggml_backend_sched_reset(self.raw.0.as_ptr());
            sys::ggml_backend_sched_alloc_graph(self.raw.0.as_ptr(), graph.as_ptr())
        };
        if !ok {
            return Err(Error::GraphAlloc { backend: self.names.join(" + ") });
        }
        Ok(())
    }

    /// Pins each layer's RMS norms to the device when `on_device(il)`, else the CPU, before
    /// [`alloc`](Self::alloc), as llama.cpp does for small batches and full offload
    /// (llama-context.cpp, `graph_get_cb`: the `norm` nodes of layer `il` go to the layer's
    /// device, so a norm is not run on the previous layer's backend). A norm is found as an
    /// `rms_norm` node whose next node multiplies it by a weight and is named `…-{il}`.
    pub fn pin_layer_norms(&self, graph: &Graph<'_>, on_device: impl Fn(usize) -> bool) {
        for i in 0..graph.n_nodes().saturating_sub(1) {
            let (Some(norm), Some(next)) = (graph.node(i), graph.node(i + 1)) else { continue };
            // SAFETY: live nodes of a live graph; only their op and first source are read.
            let is_norm = unsafe {
                (*norm.as_ptr()).op == sys::GGML_OP_RMS_NORM
                    && (*next.as_ptr()).op == sys::GGML_OP_MUL
                    && (*next.as_ptr()).src[0] == norm.as_ptr()
            };
            let il = next.name().rsplit_once('-').and_then(|(_, n)| n.parse::<usize>().ok());
            let (true, Some(il)) = (is_norm, il) else { continue };
            let backend = self.backends[usize::from(!on_device(il))];
            // SAFETY: live scheduler, node and backend; asked first whether it can run it.
            unsafe {
                if sys::ggml_backend_supports_op(backend, norm.as_ptr()) {
                    sys::ggml_backend_sched_set_tensor_backend(self.raw.0.as_ptr(), norm.as_ptr(), backend);
                }
            }
        }
    }

    /// Runs the graph last given to [`alloc`](Self::alloc), every split on its backend, and
    /// waits for it.
    pub fn compute(&self, graph: &Graph<'_>) -> Result<()> {
        // SAFETY: the graph was allocated by this scheduler (alloc), inputs written.
        let status = unsafe { sys::ggml_backend_sched_graph_compute(self.raw.0.as_ptr(), graph.as_ptr()) };
        if status != sys::GGML_STATUS_SUCCESS {
            return Err(Error::Compute { backend: self.names.join(" + "), status });
        }
        Ok(())
    }

    /// How many pieces the last graph was split into (1: it ran on one backend).
    pub fn n_splits(&self) -> usize {
        // SAFETY: live scheduler.
        unsafe { sys::ggml_backend_sched_get_n_splits(self.raw.0.as_ptr()) }.max(0) as usize
    }

    /// Bytes of the compute buffers held, all backends together.
    pub fn buffer_bytes(&self) -> usize {
        // SAFETY: live scheduler and its own backends (ggml asserts on any other).
        self.backends.iter().map(|&b| unsafe { sys::ggml_backend_sched_get_buffer_size(self.raw.0.as_ptr(), b) }).sum()
    }
}
