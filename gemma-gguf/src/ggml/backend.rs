//! Devices and backends from ggml's backend registry, backend buffers, graph allocators
//! and graph computation.
use super::context::Graph;
use super::{sys, Error, Result};
use std::ffi::{CStr, CString};
use std::ptr::NonNull;

/// Largest thread count accepted (ggml's own CLI tools cap at 512 as well).
pub const MAX_THREADS: usize = 512;

/// What kind of device a [`Device`] is (`enum ggml_backend_dev_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Gpu,
    IntegratedGpu,
    Accelerator,
    Other,
}

/// A device in ggml's registry. Devices are registered once per process and never freed.
#[derive(Clone, Copy)]
pub struct Device(NonNull<sys::ggml_backend_device>);

fn cstr(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: ggml returns NUL-terminated strings that live as long as the registry.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

impl Device {
    /// Every device of every backend built in (CPU always; Vulkan/CUDA when enabled).
    pub fn all() -> Vec<Device> {
        // SAFETY: registry queries; indices in bounds.
        let n = unsafe { sys::ggml_backend_dev_count() };
        (0..n).filter_map(|i| NonNull::new(unsafe { sys::ggml_backend_dev_get(i) }).map(Device)).collect()
    }

    /// The device named `name` (as `gemma --version` lists them), case-insensitively.
    pub fn by_name(name: &str) -> Result<Device> {
        let all = Device::all();
        all.iter().copied().find(|d| d.name().eq_ignore_ascii_case(name)).ok_or_else(|| Error::NoSuchDevice {
            name: name.into(),
            available: all.iter().map(|d| d.name()).collect::<Vec<_>>().join(", ")
                + &super::system::missing_device_hint(name),
        })
    }

    /// The CPU device.
    pub fn cpu() -> Result<Device> {
        // SAFETY: registry query; null handled.
        let p = unsafe { sys::ggml_backend_dev_by_type(sys::GGML_BACKEND_DEVICE_TYPE_CPU) };
        NonNull::new(p).map(Device).ok_or(Error::Null("ggml_backend_dev_by_type(CPU)"))
    }

    pub fn name(&self) -> String {
        // SAFETY: live registry device.
        cstr(unsafe { sys::ggml_backend_dev_name(self.0.as_ptr()) })
    }

    pub fn description(&self) -> String {
        // SAFETY: live registry device.
        cstr(unsafe { sys::ggml_backend_dev_description(self.0.as_ptr()) })
    }

    pub fn kind(&self) -> DeviceKind {
        // SAFETY: live registry device.
        match unsafe { sys::ggml_backend_dev_type(self.0.as_ptr()) } {
            sys::GGML_BACKEND_DEVICE_TYPE_CPU => DeviceKind::Cpu,
            sys::GGML_BACKEND_DEVICE_TYPE_GPU => DeviceKind::Gpu,
            sys::GGML_BACKEND_DEVICE_TYPE_IGPU => DeviceKind::IntegratedGpu,
            sys::GGML_BACKEND_DEVICE_TYPE_ACCEL => DeviceKind::Accelerator,
            _ => DeviceKind::Other,
        }
    }

    /// (free, total) memory in bytes. ggml's CPU device reports total RAM as free, so for the
    /// CPU the free figure is the kernel's `MemAvailable` where /proc/meminfo exists.
    pub fn memory(&self) -> (usize, usize) {
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: live device; out-pointers valid.
        unsafe { sys::ggml_backend_dev_memory(self.0.as_ptr(), &mut free, &mut total) };
        if self.kind() == DeviceKind::Cpu {
            if let Some(avail) = mem_available() {
                free = avail.min(total.max(avail));
            }
        }
        (free, total)
    }

    /// Name of the backend registry the device belongs to (`CPU`, `CUDA`, `Vulkan`).
    pub fn backend_name(&self) -> String {
        // SAFETY: live device and its registry.
        cstr(unsafe { sys::ggml_backend_reg_name(sys::ggml_backend_dev_backend_reg(self.0.as_ptr())) })
    }

    /// Bytes `t` takes in the device's default buffer, alignment included
    /// (`ggml_backend_buft_get_alloc_size`, padded to `ggml_backend_buft_get_alignment`).
    pub fn alloc_size(&self, t: super::Tensor<'_>) -> u64 {
        // SAFETY: live device; its default buffer type is static; live tensor (only read).
        let (size, align) = unsafe {
            let buft = sys::ggml_backend_dev_buffer_type(self.0.as_ptr());
            (sys::ggml_backend_buft_get_alloc_size(buft, t.as_ptr()), sys::ggml_backend_buft_get_alignment(buft))
        };
        size.div_ceil(align.max(1)).saturating_mul(align.max(1)) as u64
    }

    /// The device's default buffer type (its memory).
    pub fn buffer_type(&self) -> Result<BufferType> {
        // SAFETY: live device; the buffer type is a static object of its registry.
        let p = unsafe { sys::ggml_backend_dev_buffer_type(self.0.as_ptr()) };
        NonNull::new(p).map(BufferType).ok_or(Error::Null("ggml_backend_dev_buffer_type"))
    }

    pub(crate) fn reg(&self) -> sys::ggml_backend_reg_t {
        // SAFETY: live device.
        unsafe { sys::ggml_backend_dev_backend_reg(self.0.as_ptr()) }
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({})", self.name())
    }
}

/// An owning handle on an initialised backend (a stream on one device).
pub struct Backend {
    raw: NonNull<sys::ggml_backend>,
    name: String,
    device: Device,
    /// The CPU backend's persistent worker threads (without one, ggml starts and joins
    /// threads for every graph). Freed after the backend (field drop order, after `drop`).
    pool: std::cell::RefCell<Option<RawThreadpool>>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        // SAFETY: `raw` came from ggml_backend_dev_init and is freed once.
        unsafe { sys::ggml_backend_free(self.raw.as_ptr()) }
    }
}

/// An owning handle on a CPU thread pool (`ggml_threadpool_new`).
struct RawThreadpool(NonNull<sys::ggml_threadpool>);

impl RawThreadpool {
    /// `n` threads (the caller's included) with ggml's default parameters: normal priority,
    /// no pinning, polling level 50, as llama-bench and llama-cli create theirs.
    fn new(n: usize) -> Result<RawThreadpool> {
        // SAFETY: default parameters for n (checked ≤ MAX_THREADS by the caller); null handled.
        let p = unsafe {
            let mut params = sys::ggml_threadpool_params_default(n as i32);
            sys::ggml_threadpool_new(&mut params)
        };
        NonNull::new(p).map(RawThreadpool).ok_or(Error::Null("ggml_threadpool_new"))
    }
}

impl Drop for RawThreadpool {
    fn drop(&mut self) {
        // SAFETY: created by ggml_threadpool_new, freed once, after no backend uses it.
        unsafe { sys::ggml_threadpool_free(self.0.as_ptr()) }
    }
}

impl Backend {
    /// Initialises a backend on `device`.
    pub fn new(device: Device) -> Result<Backend> {
        // SAFETY: live device, no params; null handled.
        let p = unsafe { sys::ggml_backend_dev_init(device.0.as_ptr(), std::ptr::null()) };
        let raw = NonNull::new(p).ok_or(Error::Null("ggml_backend_dev_init"))?;
        // SAFETY: live backend.
        let name = cstr(unsafe { sys::ggml_backend_name(raw.as_ptr()) });
        Ok(Backend { raw, name, device, pool: Default::default() })
    }

    /// The CPU backend.
    pub fn cpu() -> Result<Backend> {
        Backend::new(Device::cpu()?)
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::ggml_backend {
        self.raw.as_ptr()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn is_cpu(&self) -> bool {
        // SAFETY: live backend.
        unsafe { sys::ggml_backend_is_cpu(self.as_ptr()) }
    }

    /// Sets the compute threads (1 ..= 512) on backends that have them (the CPU backend, which
    /// also gets a persistent thread pool of that size); other backends ignore it, as
    /// llama.cpp does.
    pub fn set_n_threads(&self, n: usize) -> Result<()> {
        if n == 0 || n > MAX_THREADS {
            return Err(Error::OutOfRange { what: "threads", value: n.to_string(), why: "must be 1 to 512" });
        }
        let name = CString::new("ggml_backend_set_n_threads").expect("static name");
        // SAFETY: registry lookup of an optional function; null means "not supported".
        let f = unsafe { sys::ggml_backend_reg_get_proc_address(self.device.reg(), name.as_ptr()) };
        if !f.is_null() {
            // SAFETY: ggml documents this symbol with the `ggml_backend_set_n_threads_t` type.
            let f: sys::ggml_backend_set_n_threads_t = unsafe { std::mem::transmute(f) };
            if let Some(f) = f {
                // SAFETY: live backend of this registry; n in range.
                unsafe { f(self.as_ptr(), n as i32) };
            }
        }
        if self.is_cpu() {
            let pool = RawThreadpool::new(n)?;
            // SAFETY: a CPU backend (checked) and a live pool, which `self` keeps (and frees
            // after the backend); ggml pauses the previous pool before switching.
            unsafe { sys::ggml_backend_cpu_set_threadpool(self.as_ptr(), pool.0.as_ptr()) };
            *self.pool.borrow_mut() = Some(pool);
        }
        Ok(())
    }

    /// Runs `graph` on this backend. Every node must be allocated and supported by the
    /// backend: the CPU backend aborts on an op/type it has no kernel for, so we ask first.
    pub fn compute(&self, graph: &Graph<'_>) -> Result<()> {
        for i in 0..graph.n_nodes() {
            let node = graph.node(i).ok_or(Error::Null("ggml_graph_node"))?;
            if !node.is_allocated() {
                return Err(Error::NotAllocated { name: node.name() });
            }
            // SAFETY: live backend and node.
            if !unsafe { sys::ggml_backend_supports_op(self.as_ptr(), node.as_ptr()) } {
                // SAFETY: live node; ggml_op_desc returns a static string.
                let op = cstr(unsafe { sys::ggml_op_desc(node.as_ptr()) });
                return Err(Error::Unsupported {
                    backend: self.name.clone(),
                    op,
                    name: node.name(),
                    ty: node.ty().name().into(),
                });
            }
        }
        // SAFETY: every node is allocated and supported (checked above).
        let status = unsafe { sys::ggml_backend_graph_compute(self.as_ptr(), graph.as_ptr()) };
        if status != sys::GGML_STATUS_SUCCESS {
            return Err(Error::Compute { backend: self.name.clone(), status });
        }
        Ok(())
    }
}

/// An owning handle on a backend buffer.
pub(crate) struct RawBuffer(NonNull<sys::ggml_backend_buffer>);

impl RawBuffer {
    pub(crate) fn from_ptr(p: sys::ggml_backend_buffer_t) -> Option<RawBuffer> {
        NonNull::new(p).map(RawBuffer)
    }

    pub(crate) fn as_ptr(&self) -> sys::ggml_backend_buffer_t {
        self.0.as_ptr()
    }
}

impl Drop for RawBuffer {
    fn drop(&mut self) {
        // SAFETY: the buffer was allocated by ggml and is freed once.
        unsafe { sys::ggml_backend_buffer_free(self.0.as_ptr()) }
    }
}

/// An owning handle on a graph allocator (`ggml_gallocr`).
pub(crate) struct RawGallocr(NonNull<sys::ggml_gallocr>);

impl RawGallocr {
    pub(crate) fn new(backend: &Backend) -> Result<RawGallocr> {
        // SAFETY: live backend; its default buffer type is static.
        let p = unsafe { sys::ggml_gallocr_new(sys::ggml_backend_get_default_buffer_type(backend.as_ptr())) };
        NonNull::new(p).map(RawGallocr).ok_or(Error::Null("ggml_gallocr_new"))
    }

    pub(crate) fn as_ptr(&self) -> sys::ggml_gallocr_t {
        self.0.as_ptr()
    }
}

impl Drop for RawGallocr {
    fn drop(&mut self) {
        // SAFETY: allocated by ggml_gallocr_new, freed once.
        unsafe { sys::ggml_gallocr_free(self.0.as_ptr()) }
    }
}

/// A backend buffer type (`ggml_backend_buffer_type_t`): where and how tensor data is stored.
/// Buffer types are static objects of their backend's registry.
#[derive(Clone, Copy)]
pub struct BufferType(NonNull<sys::ggml_backend_buffer_type>);

impl BufferType {
    pub(crate) fn as_ptr(&self) -> sys::ggml_backend_buffer_type_t {
        self.0.as_ptr()
    }

    pub fn name(&self) -> String {
        // SAFETY: static buffer type.
        cstr(unsafe { sys::ggml_backend_buft_name(self.0.as_ptr()) })
    }

    /// Whether `device` can run `mul_mat` with a weight of `ty` and shape `[ne0, ne1]` stored
    /// in this buffer type (llama.cpp asks the same way before repacking weights).
    pub fn supports_mul_mat_weight(&self, device: Device, ty: super::Type, ne0: i64, ne1: i64) -> bool {
        let Ok(ctx) = super::Context::new(3, 0) else {
            return false;
        };
        let Ok(w) = ctx.new_tensor(ty, &[ne0, ne1]) else {
            return false;
        };
        let Ok(b) = ctx.new_tensor(super::Type::F32, &[ne0, 512]) else {
            return false;
        };
        let Ok(op) = ctx.mul_mat(w, b) else {
            return false;
        };
        // SAFETY: a zero-size dummy buffer of this type is attached to the weight only for the
        // query (so the backend sees the buffer type) and detached and freed right after.
        unsafe {
            let dummy = sys::ggml_backend_buft_alloc_buffer(self.0.as_ptr(), 0);
            if dummy.is_null() {
                return false;
            }
            (*w.as_ptr()).buffer = dummy;
            let ok = sys::ggml_backend_dev_supports_op(device.0.as_ptr(), op.as_ptr());
            (*w.as_ptr()).buffer = std::ptr::null_mut();
            sys::ggml_backend_buffer_free(dummy);
            ok
        }
    }
}

impl Device {
    /// The device's extra buffer types (on the CPU: weight repacking for faster matrix
    /// kernels, and AMX where built in), in ggml's order of preference.
    pub fn extra_buffer_types(&self) -> Vec<BufferType> {
        let name = CString::new("ggml_backend_dev_get_extra_bufts").expect("static name");
        // SAFETY: registry lookup of an optional function; null means none.
        let f = unsafe { sys::ggml_backend_reg_get_proc_address(self.reg(), name.as_ptr()) };
        if f.is_null() {
            return Vec::new();
        }
        // SAFETY: ggml documents this symbol with the `ggml_backend_dev_get_extra_bufts_t` type.
        let f: sys::ggml_backend_dev_get_extra_bufts_t = unsafe { std::mem::transmute(f) };
        let Some(f) = f else { return Vec::new() };
        let mut out = Vec::new();
        // SAFETY: returns a static array terminated by null.
        unsafe {
            let mut p = f(self.0.as_ptr());
            while !p.is_null() && !(*p).is_null() {
                out.push(BufferType(NonNull::new_unchecked(*p)));
                p = p.add(1);
            }
        }
        out
    }
}

/// `MemAvailable` from /proc/meminfo, in bytes (Linux).
fn mem_available() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: usize = info.lines().find(|l| l.starts_with("MemAvailable:"))?.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}
