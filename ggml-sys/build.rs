//! Runs bindgen over the ggml headers that llama-cpp-sys-2 installs (`DEP_LLAMA_ROOT`).
use std::{env, path::PathBuf};

fn main() {
    let root =
        PathBuf::from(env::var("DEP_LLAMA_ROOT").expect("DEP_LLAMA_ROOT is set by llama-cpp-sys-2 (links = llama)"));
    let include = root.join("include");
    let mut headers = vec!["ggml.h", "ggml-backend.h", "ggml-alloc.h", "ggml-cpu.h", "gguf.h"];
    if env::var_os("CARGO_FEATURE_VULKAN").is_some() {
        headers.push("ggml-vulkan.h");
    }
    if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        headers.push("ggml-cuda.h");
    }
    let mut builder = bindgen::Builder::default()
        .clang_arg(format!("-I{}", include.display()))
        .allowlist_function("ggml_.*|gguf_.*")
        .allowlist_type("ggml_.*|gguf_.*")
        .allowlist_var("GGML_.*|GGUF_.*")
        .prepend_enum_name(false)
        .derive_default(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for h in &headers {
        builder = builder.header(include.join(h).to_string_lossy());
    }
    let bindings = builder.generate().expect("bindgen over the ggml headers");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings.write_to_file(out).expect("write bindings.rs");
    println!("cargo:rerun-if-env-changed=DEP_LLAMA_ROOT");

    // How ggml was built, for `gemma system` and the build-type test: read back from the
    // CMake cache of llama-cpp-sys-2's build (cmake-rs builds in <root>/build).
    let cache = std::fs::read_to_string(root.join("build/CMakeCache.txt")).unwrap_or_default();
    let value = |key: &str| {
        cache.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.split_once('=').map(|(_, v)| v.to_owned()))
    };
    let build_type = value("CMAKE_BUILD_TYPE").unwrap_or_else(|| "unknown".into());
    let flags = value("CMAKE_C_FLAGS").unwrap_or_default();
    let type_flags = value(&format!("CMAKE_C_FLAGS_{}", build_type.to_uppercase())).unwrap_or_default();
    println!("cargo:rustc-env=GGML_SYS_BUILD_TYPE={build_type}");
    println!("cargo:rustc-env=GGML_SYS_C_FLAGS={} {}", flags.trim(), type_flags.trim());
    println!("cargo:rustc-env=GGML_SYS_OPENMP={}", value("GGML_OPENMP").unwrap_or_else(|| "unknown".into()));
    println!("cargo:rerun-if-changed={}", root.join("build/CMakeCache.txt").display());

    if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        link_shared_cublas(value("CUDA_cublas_LIBRARY"));
    }
}

/// cuBLAS as a shared library, for toolkits without the static one. On Linux llama-cpp-sys-2
/// 0.1.161 (build.rs) links `static=cublas_static` and `static=cublasLt_static`, but NVIDIA's
/// PyPI wheels (scripts/setup-cuda.sh) ship only `libcublas.so.13`/`libcublasLt.so.13`; there,
/// setup-cuda.sh puts empty stand-in archives under `lib/stubs`, and ggml's calls into cuBLAS
/// are resolved here, by the shared library in the folder where ggml's CMake found it
/// (`CUDA_cublas_LIBRARY`). Rust links the shared libraries of all crates after every rlib, so
/// these come after ggml-cuda's objects; with a full toolkit the static archives resolve the
/// calls first and `--as-needed` drops these. At run time `libcublas.so.13` is found through
/// the loader's path (scripts/setup-cuda.sh writes `.cuda/env.sh`).
fn link_shared_cublas(cublas: Option<String>) {
    let Some(cublas) = cublas.filter(|p| !p.is_empty() && !p.ends_with("-NOTFOUND")) else {
        return;
    };
    if let Some(dir) = std::path::Path::new(&cublas).parent() {
        println!("cargo:rustc-link-search=native={}", dir.display());
        println!("cargo:rustc-link-lib=dylib=cublas");
        println!("cargo:rustc-link-lib=dylib=cublasLt");
    }
}
