//! Contexts, tensors, graphs and the operations the Gemma graphs use.
//!
//! A [`Context`] is always created with `no_alloc = true`: it holds tensor and graph
//! *objects* only. Their data lives in backend buffers that the context allocates and owns
//! ([`Context::alloc_tensors`], [`Context::alloc_graph`]), so the data cannot outlive the
//! tensors that point at it.
use super::backend::{Backend, RawBuffer, RawGallocr};
use super::{sys, Error, Result, Type};
use std::any::Any;
use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::Arc;

/// ggml's name limit, NUL included (`GGML_MAX_NAME` in ggml.h).
const MAX_NAME: usize = sys::GGML_MAX_NAME as usize;
/// ggml's dimension limit (`GGML_MAX_DIMS` in ggml.h).
const MAX_DIMS: usize = sys::GGML_MAX_DIMS as usize;

/// An owning handle on a `ggml_context` (tensor and graph objects, no tensor data).
///
/// The handle is shared: a context whose ops or graphs use tensors of another context keeps
/// that one alive, so a graph can never point at freed tensors.
pub struct Context {
    inner: Rc<Inner>,
}

#[doc(hidden)]
pub struct Inner {
    raw: NonNull<sys::ggml_context>,
    /// Contexts whose tensors this one's ops and graphs use.
    deps: RefCell<Vec<Rc<Inner>>>,
    /// This context's serial number, so ids from another context are refused.
    serial: u64,
    /// Every tensor created through this handle, in order ([`TensorId`] indexes it).
    tensors: RefCell<Vec<NonNull<sys::ggml_tensor>>>,
    /// Every graph created, with its capacity and the tensors it holds ([`GraphId`]).
    graphs: RefCell<Vec<GraphSlot>>,
    /// Owners of host memory that tensors of this context point into (mapped files).
    host_owners: RefCell<Vec<Arc<dyn Any + Send + Sync>>>,
    buffers: RefCell<Vec<RawBuffer>>,
    gallocrs: RefCell<Vec<RawGallocr>>,
}

/// Names a tensor of one context without borrowing it, for tables that live beside the
/// context (model weights, graph inputs). [`Context::tensor`] turns it back into a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorId {
    ctx: u64,
    index: usize,
}

/// Names a graph of one context without borrowing it ([`Context::graph`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GraphId {
    ctx: u64,
    index: usize,
}

struct GraphSlot {
    ptr: NonNull<sys::ggml_cgraph>,
    capacity: usize,
    /// Every tensor added so far, leaves and nodes: ggml aborts when either list overflows.
    seen: HashSet<*mut sys::ggml_tensor>,
}

static NEXT_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A tensor borrowed from its [`Context`]; `Copy`, like ggml's `ggml_tensor *`.
#[derive(Clone, Copy)]
pub struct Tensor<'ctx> {
    ptr: NonNull<sys::ggml_tensor>,
    owner: &'ctx Context,
}

/// A computation graph borrowed from its [`Context`].
pub struct Graph<'ctx> {
    ptr: NonNull<sys::ggml_cgraph>,
    ctx: &'ctx Context,
    index: usize,
}

impl std::ops::Deref for Context {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Buffers and allocators go first (their own Drop), then the objects that pointed
        // into them.
        self.gallocrs.borrow_mut().clear();
        self.buffers.borrow_mut().clear();
        self.host_owners.borrow_mut().clear();
        // SAFETY: `raw` came from ggml_init and is freed exactly once, here.
        unsafe { sys::ggml_free(self.raw.as_ptr()) }
    }
}

impl Context {
    /// A context with room for `max_tensors` tensor objects and one graph of
    /// `graph_nodes` nodes (0 for a context that only holds weights).
    pub fn new(max_tensors: usize, graph_nodes: usize) -> Result<Context> {
        // SAFETY: pure size queries.
        let (per_tensor, graph) = unsafe {
            let g = if graph_nodes > 0 { sys::ggml_graph_overhead_custom(graph_nodes, false) } else { 0 };
            (sys::ggml_tensor_overhead(), g)
        };
        let mem_size = max_tensors
            .checked_mul(per_tensor)
            .and_then(|t| t.checked_add(graph))
            .filter(|&m| m <= isize::MAX as usize / 2)
            .ok_or(Error::OutOfRange {
                what: "max_tensors",
                value: max_tensors.to_string(),
                why: "context size overflows",
            })?;
        let params = sys::ggml_init_params { mem_size, mem_buffer: std::ptr::null_mut(), no_alloc: true };
        // SAFETY: ggml_init copies the params; a null return is handled.
        let raw = NonNull::new(unsafe { sys::ggml_init(params) }).ok_or(Error::Null("ggml_init"))?;
        Ok(Context {
            inner: Rc::new(Inner {
                raw,
                deps: RefCell::default(),
                serial: NEXT_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                tensors: RefCell::default(),
                graphs: RefCell::default(),
                host_owners: RefCell::default(),
                buffers: RefCell::default(),
                gallocrs: RefCell::default(),
            }),
        })
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::ggml_context {
        self.raw.as_ptr()
    }

    /// Checks that one more object of `size` bytes fits in the context's pool; ggml would
    /// return null (release) or abort (debug) otherwise.
    fn ensure_room(&self, object_overhead: usize) -> Result<()> {
        // SAFETY: queries on a live context.
        let (used, size) = unsafe { (sys::ggml_used_mem(self.as_ptr()), sys::ggml_get_mem_size(self.as_ptr())) };
        let needed = used.saturating_add(object_overhead);
        if needed > size {
            return Err(Error::ContextFull { needed, available: size });
        }
        Ok(())
    }

    pub(super) fn wrap(&self, p: *mut sys::ggml_tensor, call: &'static str) -> Result<Tensor<'_>> {
        let ptr = NonNull::new(p).ok_or(Error::Null(call))?;
        self.tensors.borrow_mut().push(ptr);
        Ok(Tensor { ptr, owner: self })
    }

    /// The id of `t`, a tensor created through this context.
    pub fn id_of(&self, t: Tensor<'_>) -> Result<TensorId> {
        let index = self.tensors.borrow().iter().rposition(|p| *p == t.ptr);
        index.map(|index| TensorId { ctx: self.serial, index }).ok_or(Error::ForeignId { what: "tensor" })
    }

    /// The tensor named by `id`; an error for an id of another context.
    pub fn tensor(&self, id: TensorId) -> Result<Tensor<'_>> {
        let ptr = (id.ctx == self.serial)
            .then(|| self.tensors.borrow().get(id.index).copied())
            .flatten()
            .ok_or(Error::ForeignId { what: "tensor" })?;
        Ok(Tensor { ptr, owner: self })
    }

    /// The tensor of this context named `name`, if any (`ggml_get_tensor`).
    pub fn find(&self, name: &str) -> Option<Tensor<'_>> {
        let c = CString::new(name).ok()?;
        // SAFETY: live context, NUL-terminated name; null when absent.
        let p = unsafe { sys::ggml_get_tensor(self.as_ptr(), c.as_ptr()) };
        NonNull::new(p).map(|ptr| Tensor { ptr, owner: self })
    }

    /// The graph named by `id`; an error for an id of another context.
    pub fn graph(&self, id: GraphId) -> Result<Graph<'_>> {
        let ptr = (id.ctx == self.serial)
            .then(|| self.graphs.borrow().get(id.index).map(|g| g.ptr))
            .flatten()
            .ok_or(Error::ForeignId { what: "graph" })?;
        Ok(Graph { ptr, ctx: self, index: id.index })
    }

    /// Checks room for one more tensor and records the contexts of `inputs` as dependencies.
    pub(super) fn prepare(&self, inputs: &[Tensor<'_>]) -> Result<()> {
        self.room_for_tensor()?;
        self.depend(inputs);
        Ok(())
    }

    /// Keeps the contexts that own `inputs` alive as long as this one.
    pub(super) fn depend(&self, inputs: &[Tensor<'_>]) {
        for t in inputs {
            let other = &t.owner.inner;
            if Rc::ptr_eq(other, &self.inner) {
                continue;
            }
            let mut deps = self.deps.borrow_mut();
            if !deps.iter().any(|d| Rc::ptr_eq(d, other)) {
                deps.push(other.clone());
            }
        }
    }

    fn room_for_tensor(&self) -> Result<()> {
        // SAFETY: pure size query.
        self.ensure_room(unsafe { sys::ggml_tensor_overhead() })
    }

    /// A new tensor of `ty` with `dims` (ggml order, 1 to 4 of them, each ≥ 1).
    pub fn new_tensor(&self, ty: Type, dims: &[i64]) -> Result<Tensor<'_>> {
        check_dims(ty, dims)?;
        self.prepare(&[])?;
        // SAFETY: type valid, 1..=4 dims each ≥ 1, row size exact (checked), room checked.
        let p = unsafe { sys::ggml_new_tensor(self.as_ptr(), ty.raw(), dims.len() as i32, dims.as_ptr()) };
        self.wrap(p, "ggml_new_tensor")
    }

    /// A new graph that can hold `capacity` nodes (and as many leaves).
    pub fn new_graph(&self, capacity: usize) -> Result<Graph<'_>> {
        // SAFETY: pure size query.
        self.ensure_room(unsafe { sys::ggml_graph_overhead_custom(capacity, false) })?;
        // SAFETY: room checked; grads = false.
        let p = unsafe { sys::ggml_new_graph_custom(self.as_ptr(), capacity, false) };
        let ptr = NonNull::new(p).ok_or(Error::Null("ggml_new_graph_custom"))?;
        let mut graphs = self.graphs.borrow_mut();
        graphs.push(GraphSlot { ptr, capacity, seen: HashSet::new() });
        Ok(Graph { ptr, ctx: self, index: graphs.len() - 1 })
    }

    /// Allocates every tensor of this context that has no data yet in one buffer of
    /// `backend` (`ggml_backend_alloc_ctx_tensors`). The buffer is owned by the context.
    pub fn alloc_tensors(&self, backend: &Backend) -> Result<()> {
        // SAFETY: live context and backend. ggml returns null when there is nothing to
        // allocate or on failure; the first case is not an error for us.
        let p = unsafe { sys::ggml_backend_alloc_ctx_tensors(self.as_ptr(), backend.as_ptr()) };
        if let Some(buf) = RawBuffer::from_ptr(p) {
            // Fresh memory is not zeroed by ggml; zero it so no stale NaN can leak into a
            // masked computation (0 × NaN is NaN).
            // SAFETY: live buffer.
            unsafe { sys::ggml_backend_buffer_clear(buf.as_ptr(), 0) };
            self.buffers.borrow_mut().push(buf);
        } else if self.has_unallocated() {
            return Err(Error::Null("ggml_backend_alloc_ctx_tensors"));
        }
        Ok(())
    }

    /// Backs each of `tensors` with host memory owned by `owner` (a mapped file), without
    /// copying: `data(owner, tensor)` returns the tensor's bytes, exactly `nbytes()` long.
    /// The context keeps `owner` alive as long as the tensors. Only for backends whose
    /// buffers are host memory (the CPU backend); others copy with [`Tensor::set_bytes`].
    pub fn alloc_from_host<M: Any + Send + Sync>(
        &self,
        owner: Arc<M>,
        tensors: &[Tensor<'_>],
        data: impl for<'m> Fn(&'m M, &Tensor<'_>) -> Result<&'m [u8]>,
    ) -> Result<()> {
        for t in tensors {
            if t.is_allocated() {
                return Err(Error::OutOfRange { what: "tensor", value: t.name(), why: "is already allocated" });
            }
            let bytes = data(&owner, t)?;
            if bytes.len() != t.nbytes() {
                return Err(Error::Length {
                    what: format!("host data of {:?}", t.name()),
                    expected: t.nbytes(),
                    actual: bytes.len(),
                });
            }
            // SAFETY: `bytes` lives as long as `owner`, which the context keeps until after
            // its buffers are freed (Drop order). ggml only reads weights it does not own.
            let buf = unsafe { sys::ggml_backend_cpu_buffer_from_ptr(bytes.as_ptr() as *mut _, bytes.len()) };
            let buf = RawBuffer::from_ptr(buf).ok_or(Error::Null("ggml_backend_cpu_buffer_from_ptr"))?;
            // SAFETY: the buffer spans exactly the tensor's bytes (checked), at its start.
            let status = unsafe { sys::ggml_backend_tensor_alloc(buf.as_ptr(), t.as_ptr(), bytes.as_ptr() as *mut _) };
            if status != sys::GGML_STATUS_SUCCESS {
                return Err(Error::Compute { backend: "CPU (host buffer)".into(), status });
            }
            self.buffers.borrow_mut().push(buf);
        }
        self.host_owners.borrow_mut().push(owner);
        Ok(())
    }

    /// Allocates every tensor of this context that has no data yet in one buffer of type
    /// `buft` (`ggml_backend_alloc_ctx_tensors_from_buft`); data written afterwards with
    /// [`Tensor::set_bytes`] goes through the buffer type (e.g. repacked for the CPU).
    pub fn alloc_tensors_in(&self, buft: super::backend::BufferType) -> Result<()> {
        // SAFETY: live context and static buffer type; null is checked below.
        let p = unsafe { sys::ggml_backend_alloc_ctx_tensors_from_buft(self.as_ptr(), buft.as_ptr()) };
        if let Some(buf) = RawBuffer::from_ptr(p) {
            advise_huge_pages(&buf, buft);
            self.buffers.borrow_mut().push(buf);
        } else if self.has_unallocated() {
            return Err(Error::Null("ggml_backend_alloc_ctx_tensors_from_buft"));
        }
        Ok(())
    }

    /// Allocates `tensors` (none of them allocated yet), in order, in one new buffer of type
    /// `buft`, each at the buffer type's alignment; the context's other tensors are left as
    /// they are. Host memory of the CPU device is advised onto huge pages first (see
    /// `advise_huge_pages`). Data is written afterwards with [`Tensor::set_bytes`] or [`Tensor::set_bytes_at`].
    pub fn alloc_tensors_listed(&self, buft: super::backend::BufferType, tensors: &[Tensor<'_>]) -> Result<()> {
        if tensors.is_empty() {
            return Ok(());
        }
        // SAFETY: a static buffer type; pure size queries on live tensors of this context.
        let align = unsafe { sys::ggml_backend_buft_get_alignment(buft.as_ptr()) }.max(1);
        // One alignment of slack for where the buffer's base falls (ggml_tallocr_new pads it).
        let mut size = align;
        for t in tensors {
            if t.is_allocated() {
                return Err(Error::OutOfRange { what: "tensor", value: t.name(), why: "is already allocated" });
            }
            // SAFETY: as above.
            let s = unsafe { sys::ggml_backend_buft_get_alloc_size(buft.as_ptr(), t.as_ptr()) };
            size = s.checked_next_multiple_of(align).and_then(|s| size.checked_add(s)).ok_or(Error::OutOfRange {
                what: "buffer size",
                value: t.name(),
                why: "overflows usize",
            })?;
        }
        // SAFETY: a static buffer type; null (out of memory) is checked.
        let p = unsafe { sys::ggml_backend_buft_alloc_buffer(buft.as_ptr(), size) };
        let buf = RawBuffer::from_ptr(p).ok_or(Error::Null("ggml_backend_buft_alloc_buffer"))?;
        advise_huge_pages(&buf, buft);
        // SAFETY: a live buffer; the allocator only records offsets into it.
        let mut talloc = unsafe { sys::ggml_tallocr_new(buf.as_ptr()) };
        for t in tensors {
            // SAFETY: the buffer holds every tensor's padded size plus one alignment (summed
            // above with the same sizes ggml_tallocr_alloc pads), so it never runs out (which
            // would abort); each tensor is unallocated (checked above).
            let status = unsafe { sys::ggml_tallocr_alloc(&mut talloc, t.as_ptr()) };
            if status != sys::GGML_STATUS_SUCCESS {
                return Err(Error::Compute { backend: "CPU (weights buffer)".into(), status });
            }
        }
        self.buffers.borrow_mut().push(buf);
        Ok(())
    }

    /// Marks every buffer of this context as holding weights
    /// (`GGML_BACKEND_BUFFER_USAGE_WEIGHTS`): ggml's scheduler runs an op where its weights
    /// are, and lets a device take ops whose weights are in host memory.
    pub fn mark_weights(&self) {
        for b in self.buffers.borrow().iter() {
            // SAFETY: a live buffer owned by this context.
            unsafe { sys::ggml_backend_buffer_set_usage(b.as_ptr(), sys::GGML_BACKEND_BUFFER_USAGE_WEIGHTS) }
        }
    }

    fn has_unallocated(&self) -> bool {
        // SAFETY: iterates the context's own tensor list.
        unsafe {
            let mut t = sys::ggml_get_first_tensor(self.as_ptr());
            while !t.is_null() {
                if (*t).data.is_null() && (*t).view_src.is_null() {
                    return true;
                }
                t = sys::ggml_get_next_tensor(self.as_ptr(), t);
            }
        }
        false
    }

    /// Allocates the graph's intermediate tensors on `backend` with a graph allocator that
    /// this context keeps (and frees with it). Inputs marked with [`Tensor::set_input`] get
    /// their own memory and can be written after this call.
    pub fn alloc_graph(&self, graph: &Graph<'_>, backend: &Backend) -> Result<()> {
        let galloc = RawGallocr::new(backend)?;
        // SAFETY: live allocator and graph; failure is reported by the return value.
        if !unsafe { sys::ggml_gallocr_alloc_graph(galloc.as_ptr(), graph.ptr.as_ptr()) } {
            return Err(Error::GraphAlloc { backend: backend.name().to_string() });
        }
        self.gallocrs.borrow_mut().push(galloc);
        Ok(())
    }

    /// Bytes of the compute buffers that [`alloc_graph`](Self::alloc_graph) allocated for this
    /// context's graphs (`ggml_gallocr_get_buffer_size`).
    pub fn graph_buffer_bytes(&self) -> usize {
        let gallocrs = self.gallocrs.borrow();
        // SAFETY: live allocators owned by this context; each has one buffer (id 0).
        gallocrs.iter().map(|g| unsafe { sys::ggml_gallocr_get_buffer_size(g.as_ptr(), 0) }).sum()
    }
}

fn check_dims(ty: Type, dims: &[i64]) -> Result<()> {
    let bad = |why| Error::BadDims { dims: dims.to_vec(), why };
    if dims.is_empty() || dims.len() > MAX_DIMS {
        return Err(bad("a tensor has 1 to 4 dimensions"));
    }
    if dims.iter().any(|&d| d < 1) {
        return Err(bad("every dimension must be at least 1"));
    }
    let row = ty.row_size(dims[0])?;
    dims[1..]
        .iter()
        .try_fold(row, |acc, &d| acc.checked_mul(d as usize))
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or(bad("tensor size overflows"))?;
    Ok(())
}

impl<'ctx> Tensor<'ctx> {
    pub(crate) fn as_ptr(self) -> *mut sys::ggml_tensor {
        self.ptr.as_ptr()
    }

    fn raw(&self) -> &sys::ggml_tensor {
        // SAFETY: the tensor object lives in its context's pool for 'ctx; we only read.
        unsafe { self.ptr.as_ref() }
    }

    /// Sizes in ggml order (`ne[0]` is the row length).
    pub fn ne(&self) -> [i64; 4] {
        self.raw().ne
    }

    /// Strides in bytes.
    pub fn nb(&self) -> [usize; 4] {
        self.raw().nb
    }

    pub fn ty(&self) -> Type {
        // A tensor's type was validated when it was created (or set by a ggml op).
        Type::from_id(self.raw().type_).unwrap_or(Type::F32)
    }

    pub fn n_elements(&self) -> i64 {
        self.ne().iter().product()
    }

    /// Bytes of data (`ggml_nbytes`).
    pub fn nbytes(&self) -> usize {
        // SAFETY: live tensor.
        unsafe { sys::ggml_nbytes(self.as_ptr()) }
    }

    pub fn name(&self) -> String {
        // SAFETY: ggml keeps `name` NUL-terminated (it writes at most MAX_NAME-1 bytes).
        unsafe { CStr::from_ptr(self.raw().name.as_ptr()) }.to_string_lossy().into_owned()
    }

    /// Names the tensor (llama.cpp's `name-layer` convention). At most 63 bytes, no NUL.
    pub fn set_name(self, name: &str) -> Result<Self> {
        let c = checked_name(name)?;
        // SAFETY: `c` is NUL-terminated and shorter than GGML_MAX_NAME.
        unsafe { sys::ggml_set_name(self.as_ptr(), c.as_ptr()) };
        Ok(self)
    }

    /// Asks for f32 accumulation in this op (matrix products, attention), as llama.cpp does
    /// for attention scores. Ops without a precision setting ignore it.
    pub fn set_f32_accumulation(self) -> Self {
        // SAFETY: sets an op parameter on a live tensor; returns false when not applicable.
        unsafe { sys::ggml_prec_set_acc(self.as_ptr(), sys::GGML_PREC_F32) };
        self
    }

    /// Marks the tensor as a graph input (allocated apart, written before compute).
    pub fn set_input(self) -> Self {
        // SAFETY: sets a flag on a live tensor.
        unsafe { sys::ggml_set_input(self.as_ptr()) };
        self
    }

    /// Marks the tensor as a graph output (its memory is not reused inside the graph).
    pub fn set_output(self) -> Self {
        // SAFETY: sets a flag on a live tensor.
        unsafe { sys::ggml_set_output(self.as_ptr()) };
        self
    }

    /// Changes the element type of a tensor that has no memory yet (declared in a context
    /// without data, not a view), with the strides `ggml_new_tensor` gives a new tensor of
    /// that type and shape. The row length must be a whole number of `ty`'s blocks. Used at
    /// load to hold a weight in a wider type than the file's (`quant::widen_q5_0_to_q8_0`).
    pub(crate) fn retype(&self, ty: Type) -> Result<()> {
        let t = self.raw();
        if self.is_allocated() || !t.data.is_null() || !t.view_src.is_null() {
            return Err(Error::OutOfRange {
                what: "tensor",
                value: self.name(),
                why: "has memory already or is a view",
            });
        }
        let ne = self.ne();
        check_dims(ty, &ne)?;
        let mut nb = [0usize; 4];
        nb[0] = ty.type_size();
        nb[1] = ty.row_size(ne[0])?;
        for i in 2..4 {
            // No overflow: check_dims bounded the whole size.
            nb[i] = nb[i - 1] * ne[i - 1] as usize;
        }
        // SAFETY: the tensor object lives in its context's pool for 'ctx and has no data or
        // view that its type and strides describe (checked above); nothing reads it meanwhile
        // (the context is single-threaded: it is not Sync).
        unsafe {
            let p = self.as_ptr();
            (*p).type_ = ty.raw();
            (*p).nb = nb;
        }
        Ok(())
    }

    pub(crate) fn is_allocated(&self) -> bool {
        let t = self.raw();
        !t.buffer.is_null()
            || (!t.view_src.is_null() && {
                // SAFETY: view_src points to a live tensor of the same or an outliving context.
                unsafe { !(*t.view_src).buffer.is_null() }
            })
    }

    fn check_io(&self, len: usize) -> Result<()> {
        if !self.is_allocated() {
            return Err(Error::NotAllocated { name: self.name() });
        }
        // SAFETY: live tensor.
        if !unsafe { sys::ggml_is_contiguous(self.as_ptr()) } {
            return Err(Error::Shape {
                op: "tensor read/write",
                a: self.ne(),
                b: [0; 4],
                why: "tensor is not contiguous",
            });
        }
        if len != self.nbytes() {
            return Err(Error::Length {
                what: format!("data of tensor {:?}", self.name()),
                expected: self.nbytes(),
                actual: len,
            });
        }
        Ok(())
    }

    /// Copies raw bytes (exactly `nbytes()`) into the tensor's backend memory.
    pub fn set_bytes(&self, data: &[u8]) -> Result<()> {
        self.check_io(data.len())?;
        // SAFETY: allocated, contiguous, sizes equal (checked above).
        unsafe { sys::ggml_backend_tensor_set(self.as_ptr(), data.as_ptr().cast(), 0, data.len()) };
        Ok(())
    }

    /// Copies `data` into the tensor's backend memory at byte `offset` (a part of the tensor:
    /// `offset + data.len() <= nbytes()`). For buffers that take a tensor only whole (the
    /// CPU's repacking one), use [`set_bytes`](Self::set_bytes).
    pub fn set_bytes_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        // Allocated and contiguous (check_io's length test is trivially met here; the range
        // is checked next).
        self.check_io(self.nbytes())?;
        if offset.checked_add(data.len()).is_none_or(|end| end > self.nbytes()) {
            return Err(Error::Length {
                what: format!("data of tensor {:?} at offset {offset}", self.name()),
                expected: self.nbytes().saturating_sub(offset),
                actual: data.len(),
            });
        }
        // SAFETY: allocated and contiguous (checked above); the range lies inside the tensor.
        unsafe { sys::ggml_backend_tensor_set(self.as_ptr(), data.as_ptr().cast(), offset, data.len()) };
        Ok(())
    }

    /// Reads the tensor's bytes back from its backend memory.
    pub fn get_bytes(&self) -> Result<Vec<u8>> {
        let n = self.nbytes();
        self.check_io(n)?;
        let mut out = vec![0u8; n];
        // SAFETY: allocated, contiguous, `out` has nbytes bytes.
        unsafe { sys::ggml_backend_tensor_get(self.as_ptr(), out.as_mut_ptr().cast(), 0, n) };
        Ok(out)
    }

    fn expect_type(&self, ty: Type, expected: &'static str) -> Result<()> {
        if self.ty() != ty {
            return Err(Error::WrongTensorType { name: self.name(), expected, actual: self.ty().name().into() });
        }
        Ok(())
    }

    /// Writes f32 values into an F32 tensor.
    pub fn set_f32(&self, data: &[f32]) -> Result<()> {
        self.expect_type(Type::F32, "f32")?;
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.set_bytes(&bytes)
    }

    /// Writes i64 values into an I64 tensor (row indices).
    pub fn set_i64(&self, data: &[i64]) -> Result<()> {
        self.expect_type(Type::I64, "i64")?;
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.set_bytes(&bytes)
    }

    /// Writes f32 values into an F16 tensor (rounding to nearest).
    pub fn set_f32_as_f16(&self, data: &[f32]) -> Result<()> {
        self.expect_type(Type::F16, "f16")?;
        let bytes: Vec<u8> = data.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
        self.set_bytes(&bytes)
    }

    /// Writes i32 values into an I32 tensor (token ids, positions).
    pub fn set_i32(&self, data: &[i32]) -> Result<()> {
        self.expect_type(Type::I32, "i32")?;
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.set_bytes(&bytes)
    }

    /// Reads an F32 tensor's values.
    pub fn get_f32(&self) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.append_f32(&mut out)?;
        Ok(out)
    }

    /// Appends an F32 tensor's values to `out` (no allocation when `out` has the capacity).
    pub fn append_f32(&self, out: &mut Vec<f32>) -> Result<()> {
        self.expect_type(Type::F32, "f32")?;
        let n = self.nbytes();
        self.check_io(n)?;
        let start = out.len();
        out.resize(start + n / 4, 0.0);
        // SAFETY: allocated, contiguous F32 tensor of `n` bytes; the destination slice holds
        // exactly n / 4 floats (f32 has no invalid bit patterns).
        unsafe { sys::ggml_backend_tensor_get(self.as_ptr(), out[start..].as_mut_ptr().cast(), 0, n) };
        Ok(())
    }
}

fn checked_name(name: &str) -> Result<CString> {
    if name.len() >= MAX_NAME {
        return Err(Error::NameTooLong { name: name.into(), len: name.len() });
    }
    CString::new(name).map_err(|_| Error::NameHasNul { name: name.into() })
}

impl<'ctx> Graph<'ctx> {
    pub(crate) fn as_ptr(&self) -> *mut sys::ggml_cgraph {
        self.ptr.as_ptr()
    }

    /// This graph's id in its context.
    pub fn id(&self) -> GraphId {
        GraphId { ctx: self.ctx.serial, index: self.index }
    }

    /// Adds `t` and everything it depends on (`ggml_build_forward_expand`). Refused when the
    /// graph could overflow: ggml aborts on a full graph.
    pub fn expand(&mut self, t: Tensor<'ctx>) -> Result<()> {
        self.ctx.depend(&[t]);
        {
            let mut graphs = self.ctx.graphs.borrow_mut();
            let slot = &mut graphs[self.index];
            add_ancestry(&mut slot.seen, t, slot.capacity)?;
        }
        // SAFETY: the tensor and graph are live in contexts that outlive 'ctx; capacity
        // checked: the graph can hold every tensor reachable from `t`.
        unsafe { sys::ggml_build_forward_expand(self.as_ptr(), t.as_ptr()) };
        Ok(())
    }

    /// Number of compute nodes.
    pub fn n_nodes(&self) -> usize {
        // SAFETY: live graph.
        unsafe { sys::ggml_graph_n_nodes(self.as_ptr()) as usize }
    }

    /// The i-th node.
    pub fn node(&self, i: usize) -> Option<Tensor<'ctx>> {
        if i >= self.n_nodes() {
            return None;
        }
        // SAFETY: index in bounds; nodes are tensors of contexts that outlive 'ctx.
        let p = unsafe { sys::ggml_graph_node(self.as_ptr(), i as i32) };
        NonNull::new(p).map(|ptr| Tensor { ptr, owner: self.ctx })
    }
}

/// Adds the tensors reachable from `t` to `seen`, failing when the graph could overflow
/// (conservative: nodes and leaves together within `capacity`). `seen` is left unchanged on
/// failure.
fn add_ancestry(seen: &mut HashSet<*mut sys::ggml_tensor>, t: Tensor<'_>, capacity: usize) -> Result<()> {
    let mut added = Vec::new();
    let mut stack = vec![t.as_ptr()];
    while let Some(p) = stack.pop() {
        if !seen.insert(p) {
            continue;
        }
        added.push(p);
        if seen.len() > capacity {
            for p in added {
                seen.remove(&p);
            }
            return Err(Error::GraphFull { capacity });
        }
        // SAFETY: `p` is a live tensor; `src` holds null or live tensors.
        for &s in unsafe { (*p).src.iter() } {
            if !s.is_null() {
                stack.push(s);
            }
        }
    }
    Ok(())
}

/// Parameters of a rotary embedding (`ggml_rope_ext`).
#[derive(Debug, Clone, Copy)]
pub struct Rope {
    /// Rotated dimensions (even, at most the head size).
    pub n_dims: i32,
    /// NEOX ordering (halves rotated together) for Gemma; otherwise GPT-J pairs.
    pub neox: bool,
    pub freq_base: f32,
    /// 1 / linear scaling factor.
    pub freq_scale: f32,
    /// Original training context (used only with YaRN).
    pub n_ctx_orig: i32,
}

impl Context {
    pub(super) fn shape_err(op: &'static str, a: Tensor<'_>, b: Tensor<'_>, why: &'static str) -> Error {
        Error::Shape { op, a: a.ne(), b: b.ne(), why }
    }

    /// `b · aᵀ`: a `[k, m]`, b `[k, n, …]` → `[m, n, …]` (F32).
    pub fn mul_mat<'s>(&'s self, a: Tensor<'s>, b: Tensor<'s>) -> Result<Tensor<'s>> {
        let (na, nb) = (a.ne(), b.ne());
        if !a.ty().is_matmul_weight() || !b.ty().is_float() {
            return Err(Error::WrongTensorType {
                name: if a.ty().is_matmul_weight() { b.name() } else { a.name() },
                expected: "a float or quantised matrix times a float one",
                actual: format!("{} × {}", a.ty(), b.ty()),
            });
        }
        if na[0] != nb[0] {
            return Err(Self::shape_err("mul_mat", a, b, "row lengths (ne[0]) differ"));
        }
        if nb[2] % na[2] != 0 || nb[3] % na[3] != 0 {
            return Err(Self::shape_err("mul_mat", a, b, "a does not broadcast over b's dims 2 and 3"));
        }
        // SAFETY: live tensor.
        if unsafe { sys::ggml_is_transposed(a.as_ptr()) } {
            return Err(Self::shape_err("mul_mat", a, b, "a must not be transposed"));
        }
        self.prepare(&[a, b])?;
        // SAFETY: the checks ggml_mul_mat asserts were made above.
        self.wrap(unsafe { sys::ggml_mul_mat(self.as_ptr(), a.as_ptr(), b.as_ptr()) }, "ggml_mul_mat")
    }

    fn binary<'s>(
        &'s self,
        op: &'static str,
        f: unsafe extern "C" fn(
            *mut sys::ggml_context,
            *mut sys::ggml_tensor,
            *mut sys::ggml_tensor,
        ) -> *mut sys::ggml_tensor,
        a: Tensor<'s>,
        b: Tensor<'s>,
    ) -> Result<Tensor<'s>> {
        // The CPU kernels of add and mul take float operands only (others abort).
        if !a.ty().is_float() || !b.ty().is_float() {
            return Err(Error::WrongTensorType {
                name: if a.ty().is_float() { b.name() } else { a.name() },
                expected: "f32, f16 or bf16",
                actual: format!("{} and {}", a.ty(), b.ty()),
            });
        }
        // SAFETY: pure shape query.
        if !unsafe { sys::ggml_can_repeat(b.as_ptr(), a.as_ptr()) } {
            return Err(Self::shape_err(op, a, b, "b does not broadcast to a"));
        }
        self.prepare(&[a, b])?;
        // SAFETY: `f` is ggml_add/ggml_mul, whose only assert (b repeats to a) is checked.
        self.wrap(unsafe { f(self.as_ptr(), a.as_ptr(), b.as_ptr()) }, op)
    }

    /// Element-wise `a + b`, `b` broadcast to `a`.
    pub fn add<'s>(&'s self, a: Tensor<'s>, b: Tensor<'s>) -> Result<Tensor<'s>> {
        self.binary("ggml_add", sys::ggml_add, a, b)
    }

    /// Element-wise `a · b`, `b` broadcast to `a`.
    pub fn mul<'s>(&'s self, a: Tensor<'s>, b: Tensor<'s>) -> Result<Tensor<'s>> {
        self.binary("ggml_mul", sys::ggml_mul, a, b)
    }

    /// `a · s`.
    pub fn scale<'s>(&'s self, a: Tensor<'s>, s: f32) -> Result<Tensor<'s>> {
        let (ne, nb) = (a.ne(), a.nb());
        let padded_1d =
            nb[0] == a.ty().type_size() && nb[2] == nb[1] * ne[1] as usize && nb[3] == nb[2] * ne[2] as usize;
        if !padded_1d {
            return Err(Self::shape_err("ggml_scale", a, a, "rows must be packed (make it contiguous first)"));
        }
        self.prepare(&[a])?;
        // SAFETY: ggml_scale asserts only the packing checked above.
        self.wrap(unsafe { sys::ggml_scale(self.as_ptr(), a.as_ptr(), s) }, "ggml_scale")
    }

    /// RMS norm over rows: `x / sqrt(mean(x²) + eps)` (no weight).
    pub fn rms_norm<'s>(&'s self, a: Tensor<'s>, eps: f32) -> Result<Tensor<'s>> {
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(Error::OutOfRange {
                what: "rms_norm eps",
                value: eps.to_string(),
                why: "must be finite and ≥ 0",
            });
        }
        self.prepare(&[a])?;
        // SAFETY: ggml_rms_norm has no asserts beyond a live tensor.
        self.wrap(unsafe { sys::ggml_rms_norm(self.as_ptr(), a.as_ptr(), eps) }, "ggml_rms_norm")
    }

    /// GELU, tanh approximation (`ggml_gelu`), as Gemma's MLP uses.
    pub fn gelu<'s>(&'s self, a: Tensor<'s>) -> Result<Tensor<'s>> {
        // SAFETY: pure layout query.
        if !unsafe { sys::ggml_is_contiguous_1(a.as_ptr()) } {
            return Err(Self::shape_err("ggml_gelu", a, a, "rows must be contiguous"));
        }
        self.prepare(&[a])?;
        // SAFETY: ggml_unary asserts contiguous rows, checked above.
        self.wrap(unsafe { sys::ggml_gelu(self.as_ptr(), a.as_ptr()) }, "ggml_gelu")
    }

    /// Softmax over rows of `a · scale + mask` (`ggml_soft_max_ext`, no ALiBi).
    /// `mask` (F32 or F16) is `[ne0, ≥ ne1]` and broadcasts over `a`'s dims 2 and 3.
    pub fn soft_max_ext<'s>(&'s self, a: Tensor<'s>, mask: Option<Tensor<'s>>, scale: f32) -> Result<Tensor<'s>> {
        // SAFETY: pure layout queries.
        if !unsafe { sys::ggml_is_contiguous(a.as_ptr()) } {
            return Err(Self::shape_err("ggml_soft_max_ext", a, a, "a must be contiguous"));
        }
        if let Some(m) = mask {
            let (na, nm) = (a.ne(), m.ne());
            if m.ty() != Type::F32 && m.ty() != Type::F16 {
                return Err(Error::WrongTensorType {
                    name: m.name(),
                    expected: "f32 or f16",
                    actual: m.ty().name().into(),
                });
            }
            // SAFETY: pure layout query.
            let contiguous = unsafe { sys::ggml_is_contiguous(m.as_ptr()) };
            if !contiguous || nm[0] != na[0] || nm[1] < na[1] || na[2] % nm[2] != 0 || na[3] % nm[3] != 0 {
                return Err(Self::shape_err(
                    "ggml_soft_max_ext",
                    a,
                    m,
                    "mask must be contiguous [ne0, ≥ne1] and broadcast",
                ));
            }
        }
        self.prepare(&[a])?;
        if let Some(m) = mask {
            self.depend(&[m]);
        }
        let m = mask.map_or(std::ptr::null_mut(), |m| m.as_ptr());
        // SAFETY: every assert of ggml_soft_max_impl is checked above; max_bias = 0.
        self.wrap(unsafe { sys::ggml_soft_max_ext(self.as_ptr(), a.as_ptr(), m, scale, 0.0) }, "ggml_soft_max_ext")
    }

    /// Rotary position embedding of `a` `[head_dim, n_head, n_tokens]` at positions `pos`
    /// (I32, `[n_tokens]`).
    pub fn rope<'s>(&'s self, a: Tensor<'s>, pos: Tensor<'s>, p: Rope) -> Result<Tensor<'s>> {
        self.rope_ext(a, pos, None, p)
    }

    /// [`rope`](Self::rope) with frequency factors: rotation pair `i` turns at
    /// `θ_i / factors[i]` (f32, at least `n_dims / 2` entries); a huge factor leaves a pair
    /// unrotated (Gemma 4's proportional rope).
    pub fn rope_ext<'s>(
        &'s self,
        a: Tensor<'s>,
        pos: Tensor<'s>,
        factors: Option<Tensor<'s>>,
        p: Rope,
    ) -> Result<Tensor<'s>> {
        if let Some(f) = factors {
            if f.ty() != Type::F32 || f.ne()[0] < i64::from(p.n_dims / 2) {
                return Err(Self::shape_err(
                    "ggml_rope_ext",
                    a,
                    f,
                    "frequency factors must be f32 with n_dims/2 entries",
                ));
            }
        }
        if pos.ty() != Type::I32 || pos.ne()[1..] != [1, 1, 1] || pos.ne()[0] != a.ne()[2] {
            return Err(Self::shape_err("ggml_rope_ext", a, pos, "positions must be an i32 vector of a.ne[2] entries"));
        }
        if p.n_dims <= 0 || p.n_dims % 2 != 0 || i64::from(p.n_dims) > a.ne()[0] {
            return Err(Error::OutOfRange {
                what: "rope n_dims",
                value: p.n_dims.to_string(),
                why: "must be even and ≤ the head size",
            });
        }
        if a.ty() != Type::F32 && a.ty() != Type::F16 {
            return Err(Error::WrongTensorType {
                name: a.name(),
                expected: "f32 or f16",
                actual: a.ty().name().into(),
            });
        }
        self.prepare(&[a, pos])?;
        if let Some(f) = factors {
            self.depend(&[f]);
        }
        let mode = if p.neox { sys::GGML_ROPE_TYPE_NEOX as i32 } else { 0 };
        // SAFETY: positions are an I32 vector matching a.ne[2]; mode is a plain rope mode;
        // factors, when given, are f32 with n_dims/2 entries (checked); extrapolation off
        // (ext_factor 0), attn_factor 1.
        let t = unsafe {
            sys::ggml_rope_ext(
                self.as_ptr(),
                a.as_ptr(),
                pos.as_ptr(),
                factors.map_or(std::ptr::null_mut(), |f| f.as_ptr()),
                p.n_dims,
                mode,
                p.n_ctx_orig,
                p.freq_base,
                p.freq_scale,
                0.0,
                1.0,
                32.0,
                1.0,
            )
        };
        self.wrap(t, "ggml_rope_ext")
    }
}

/// Asks Linux to back a fresh host buffer with transparent huge pages (`madvise(MADV_HUGEPAGE)`
/// over the whole 2 MiB pages inside it), before anything is written to it. Weights are
/// streamed through once per token; with 4 KiB pages every 4 KiB of a matrix costs a TLB
/// entry, with 2 MiB pages one in 512. The bytes and hence the results are unchanged. Only
/// a hint: where THP is off, the buffer is not host memory, or the call fails, nothing
/// changes. Only for buffer types of the CPU device (the repacking one is not "host" to ggml,
/// its layout being its own, but its memory is). ggml allocates CPU buffers with
/// `posix_memalign`, which leaves fresh large blocks untouched, so the pages are faulted in
/// after the advice.
fn advise_huge_pages(buf: &RawBuffer, buft: super::backend::BufferType) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        /// `MADV_HUGEPAGE` in Linux's uapi `asm-generic/mman-common.h`.
        const MADV_HUGEPAGE: std::ffi::c_int = 14;
        extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: std::ffi::c_int) -> std::ffi::c_int;
        }
        // SAFETY: a live buffer and a static buffer type; only their device, base address
        // and size are read.
        let (host, base, size) = unsafe {
            let dev = sys::ggml_backend_buft_get_device(buft.as_ptr());
            // ggml's plain CPU buffer type has no device (ggml-backend.cpp,
            // ggml_backend_cpu_buffer_type: `.device = NULL`, marked FIXME there); it is host
            // memory.
            let cpu = if dev.is_null() {
                sys::ggml_backend_buft_is_host(buft.as_ptr())
            } else {
                sys::ggml_backend_dev_type(dev) == sys::GGML_BACKEND_DEVICE_TYPE_CPU
            };
            (
                cpu,
                sys::ggml_backend_buffer_get_base(buf.as_ptr()) as usize,
                sys::ggml_backend_buffer_get_size(buf.as_ptr()),
            )
        };
        let (start, end) = (base.next_multiple_of(HUGE), (base + size) / HUGE * HUGE);
        if host && base != 0 && start < end {
            // SAFETY: [start, end) lies inside the buffer's own allocation; MADV_HUGEPAGE
            // changes how its pages are backed, never their contents or the mapping.
            let _ = unsafe { madvise(start as *mut std::ffi::c_void, end - start, MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (buf, buft);
}
