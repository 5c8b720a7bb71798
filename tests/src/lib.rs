//! Shared helpers for the cross-crate tests.
use std::path::{Path, PathBuf};

pub mod bench;
pub mod cli;
pub mod exact;
pub mod llama_logits;
pub mod llama_quantize;
pub mod llama_ref;
pub mod mtmd_ref;
pub mod serve;
pub mod tiny_golden;
pub mod tiny_model;
pub mod token_diff;
pub mod vision_golden;

/// The workspace root (the folder of the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// True when running under CI (`CI=true`), where tests must not skip for missing inputs.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The project's Python: `$GEMMA_PYTHON`, else `.venv/bin/python` under the workspace (the
/// virtual environment `scripts/venv.sh` makes and fills from scripts/requirements.txt). No
/// test runs the system Python: Debian 12 and Raspberry Pi OS refuse packages there (PEP 668).
/// `None` when neither exists; callers skip with a notice, or fail under CI.
pub fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GEMMA_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = workspace_root().join(".venv/bin/python");
    venv.is_file().then_some(venv)
}

/// The real test model, Gemma 3 270M Q4_K_M made by llama.cpp: `$GEMMA_TEST_MODEL`, else
/// `models/gemma-3-270m-q4_k_m.gguf` under the workspace (where `scripts/fetch-model.sh`
/// puts it). Missing: `None` with a notice, except under CI, where it panics.
pub fn test_model() -> Option<PathBuf> {
    let path = match std::env::var_os("GEMMA_TEST_MODEL") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join("models/gemma-3-270m-q4_k_m.gguf"),
    };
    if path.is_file() {
        return Some(path);
    }
    if in_ci() {
        panic!("the real test model is missing at {} (CI=true): run scripts/fetch-model.sh", path.display());
    }
    eprintln!("notice: {} is missing; run scripts/fetch-model.sh. Skipping the real-model part.", path.display());
    None
}

/// The real test model in Hugging Face form (scripts/make_hf_checkpoint.py): `$GEMMA_TEST_HF`,
/// else `models/gemma-3-270m-hf`. Missing: `None` with a notice, except under CI (panics).
pub fn test_hf_checkpoint() -> Option<PathBuf> {
    let dir = match std::env::var_os("GEMMA_TEST_HF") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join("models/gemma-3-270m-hf"),
    };
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    if in_ci() {
        panic!("{} is missing (CI=true): run scripts/make_hf_checkpoint.py", dir.display());
    }
    eprintln!("notice: {} is missing; run scripts/make_hf_checkpoint.py. Skipping.", dir.display());
    None
}
