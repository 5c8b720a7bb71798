//! ggml's own GGUF parser (`gguf.cpp`), exposed only to cross-check our pure-Rust reader.
use super::sys;

/// What ggml's `gguf_init_from_buffer` (with `no_alloc`, so no tensor data is read) makes of
/// `bytes`: `Some((n_kv, n_tensors))` when it accepts the file, `None` when it refuses it.
pub fn ggml_gguf_parse(bytes: &[u8]) -> Option<(i64, i64)> {
    let params = sys::gguf_init_params { no_alloc: true, ctx: std::ptr::null_mut() };
    // SAFETY: ggml reads at most `bytes.len()` bytes from the slice and returns null on
    // malformed input; the context is freed below.
    let ctx = unsafe { sys::gguf_init_from_buffer(bytes.as_ptr().cast(), bytes.len(), params) };
    if ctx.is_null() {
        return None;
    }
    // SAFETY: live context, freed once.
    unsafe {
        let counts = (sys::gguf_get_n_kv(ctx), sys::gguf_get_n_tensors(ctx));
        sys::gguf_free(ctx);
        Some(counts)
    }
}

extern "C" fn discard_log(
    _level: sys::ggml_log_level,
    _text: *const std::os::raw::c_char,
    _user: *mut std::ffi::c_void,
) {
}

/// Turns ggml's log output (to stderr by default) off or back on, process-wide.
pub fn set_logging(enabled: bool) {
    // SAFETY: installs a static callback (or restores ggml's default with null).
    unsafe {
        if enabled {
            sys::ggml_log_set(None, std::ptr::null_mut());
        } else {
            sys::ggml_log_set(Some(discard_log), std::ptr::null_mut());
        }
    }
}
