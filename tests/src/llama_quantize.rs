//! llama.cpp's own quantiser (`llama_model_quantize` from the libllama that llama-cpp-sys-2
//! builds) as the reference for the converter's quantisation: same input file, same type,
//! and the blocks must be identical. Test and benchmark use only.
#![allow(unsafe_code)]

use llama_cpp_sys_2 as ll;
use std::ffi::CString;
use std::path::Path;

/// What to ask of `llama_model_quantize`.
#[derive(Debug, Clone, Copy)]
pub struct QuantizeRequest {
    /// `llama_ftype` (include/llama.h): 7 = Q8_0, 15 = Q4_K_M, 17 = Q5_K_M, 1 = F16…
    pub ftype: u32,
    /// llama-quantize's `--pure`: every matrix in the base type (fallbacks still apply).
    pub pure: bool,
    pub threads: i32,
}

/// Runs libllama's quantiser from `input` to `output`; `Err` with its return code.
pub fn llama_quantize(input: &Path, output: &Path, req: QuantizeRequest) -> Result<(), String> {
    let inp = CString::new(input.to_string_lossy().as_bytes()).map_err(|e| e.to_string())?;
    let out = CString::new(output.to_string_lossy().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: default params are plain data; the paths are NUL-terminated and outlive the
    // call; no imatrix/overrides pointers are set (null from the defaults).
    let rc = unsafe {
        ll::llama_backend_init();
        let mut params = ll::llama_model_quantize_default_params();
        params.ftype = req.ftype as _;
        params.pure_ = req.pure;
        params.nthread = req.threads;
        ll::llama_model_quantize(inp.as_ptr(), out.as_ptr(), &params)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("llama_model_quantize returned {rc}"))
    }
}

/// Asserts that two GGUF files hold the same tensors (names, dims, types, bytes); returns
/// how many.
pub fn compare_tensors(a: &Path, b: &Path) -> usize {
    use gemma_gguf::gguf::GgufFile;
    let (fa, fb) = (GgufFile::open(a).unwrap(), GgufFile::open(b).unwrap());
    assert_eq!(fa.tensors().len(), fb.tensors().len(), "tensor counts");
    for ta in fa.tensors() {
        let tb = fb.tensor(&ta.name).unwrap_or_else(|| panic!("{} missing in {}", ta.name, b.display()));
        assert_eq!(ta.ggml_type, tb.ggml_type, "{}: type", ta.name);
        assert_eq!(ta.dims, tb.dims, "{}: dims", ta.name);
        assert!(fa.tensor_data(ta).unwrap() == fb.tensor_data(tb).unwrap(), "{}: bytes differ", ta.name);
    }
    fa.tensors().len()
}
