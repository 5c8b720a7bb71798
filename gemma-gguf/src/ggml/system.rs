//! What the linked ggml is and what it detected on this machine.
use super::backend::Device;
use super::sys;
use std::ffi::{CStr, CString};

/// ggml's version string and commit (`ggml_version`, `ggml_commit`).
pub fn ggml_version() -> (String, String) {
    // SAFETY: both return static NUL-terminated strings.
    unsafe {
        (
            CStr::from_ptr(sys::ggml_version()).to_string_lossy().into_owned(),
            CStr::from_ptr(sys::ggml_commit()).to_string_lossy().into_owned(),
        )
    }
}

/// One feature a backend reports (`AVX2 = 1`, `NEON = 1`, `CUDA_ARCH = 900`…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendFeature {
    pub name: String,
    pub value: String,
}

/// The features `device`'s backend reports through `ggml_backend_get_features` (for the
/// CPU backend: the instruction sets it was built with and detected at run time).
pub fn backend_features(device: Device) -> Vec<BackendFeature> {
    let name = CString::new("ggml_backend_get_features").expect("static name");
    // SAFETY: registry lookup of an optional function; null means none.
    let f = unsafe { sys::ggml_backend_reg_get_proc_address(device.reg(), name.as_ptr()) };
    if f.is_null() {
        return Vec::new();
    }
    // SAFETY: ggml documents this symbol with the `ggml_backend_get_features_t` type.
    let f: sys::ggml_backend_get_features_t = unsafe { std::mem::transmute(f) };
    let Some(f) = f else { return Vec::new() };
    let mut out = Vec::new();
    // SAFETY: returns a static array terminated by an entry whose name is null.
    unsafe {
        let mut p = f(device.reg());
        while !p.is_null() && !(*p).name.is_null() {
            out.push(BackendFeature {
                name: CStr::from_ptr((*p).name).to_string_lossy().into_owned(),
                value: if (*p).value.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr((*p).value).to_string_lossy().into_owned()
                },
            });
            p = p.add(1);
        }
    }
    out
}

/// The thread count used when none is given: the logical CPUs this process may run on.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(super::backend::MAX_THREADS)
}
