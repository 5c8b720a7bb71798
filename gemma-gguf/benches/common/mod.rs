//! Shared by the benchmarks: the real model's path, if present.
use std::path::PathBuf;

/// `$GEMMA_TEST_MODEL`, else the workspace's `models/gemma-3-270m-q4_k_m.gguf`; `None` (with
/// a note) when neither exists, so benchmarks that need real data skip instead of failing.
pub fn real_model() -> Option<PathBuf> {
    let path = std::env::var_os("GEMMA_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/gemma-3-270m-q4_k_m.gguf"));
    if path.is_file() {
        Some(path)
    } else {
        eprintln!("note: {} not found (scripts/fetch-model.sh): skipping what needs it", path.display());
        None
    }
}
