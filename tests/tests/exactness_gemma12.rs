//! Gemma 1 (`gemma`) and Gemma 2 (`gemma2`) against llama.cpp itself (libllama from
//! llama-cpp-sys-2) on tiny random GGUFs (`gemma_tests::tiny_model`): per-position logits of
//! a prompt, then greedy single-token steps, with the flash-attention kernel off and on.
//!
//! The files exercise every path of the two architectures: several KV heads (4 heads, 2 KV
//! heads) and MQA (1 KV head); for Gemma 2, soft-caps small enough to bend the scores and
//! logits, and a 16-token window on the even layers with prompts far past it, one long
//! enough (1000 tokens in a 1024 context, batches of 512) that the window-sized cache of the
//! local layers (768 cells) wraps around. Both runtimes run the same ggml kernels on the
//! same data in the same order, so the logits are expected to be identical: the test prints
//! the max abs difference and requires 0.
//!
//! About 2 s in all (debug build); the models are 2 layers of width 64.

use gemma_gguf::gguf::GgmlType;
use gemma_gguf::model::{LoadOptions, Model};
use gemma_gguf::names::llm;
use gemma_gguf::session::{Outputs, Session, SessionOptions};
use gemma_tests::exact::{check_cases, max_diff, prompt, write, N_CTX_TRAIN};
use gemma_tests::tiny_model::{TinyConfig, TinyModel};
use std::path::Path;
use tempfile::TempDir;

#[test]
fn gemma_logits_match_llama_cpp() {
    let q8 = TinyConfig { weight_type: GgmlType::Q8_0, ..TinyConfig::gemma() };
    check_cases(&[
        ("gemma, 4 heads / 2 KV heads", TinyConfig::gemma(), 256, 64),
        ("gemma, MQA (1 KV head)", TinyConfig { n_head_kv: 1, ..TinyConfig::gemma() }, 256, 64),
        ("gemma, Q8_0 weights", q8, 256, 64),
    ]);
}

#[test]
fn gemma2_logits_match_llama_cpp() {
    let q8 = TinyConfig { weight_type: GgmlType::Q8_0, ..TinyConfig::gemma2() };
    check_cases(&[
        ("gemma2, 4 heads / 2 KV heads", TinyConfig::gemma2(), 256, 80),
        ("gemma2, MQA (1 KV head)", TinyConfig { n_head_kv: 1, ..TinyConfig::gemma2() }, 256, 80),
        ("gemma2, Q8_0 weights", q8, 256, 80),
        // 1000 tokens: the local layers' 768-cell cache wraps around.
        ("gemma2, ring past the window", TinyConfig::gemma2(), 1024, 1000),
    ]);
}

/// The positive controls for the Gemma 2 paths above: removing the soft-caps or the window
/// changes the logits by far more than any rounding, so a runtime that skipped either could
/// not have matched llama.cpp.
#[test]
fn gemma2_softcaps_and_window_change_the_logits() {
    let dir = TempDir::new().expect("temp dir");
    let logits = |path: &Path| {
        let model = Model::load(path, &LoadOptions { threads: Some(1), ..Default::default() }).expect("load");
        let mut ses = Session::new(&model, SessionOptions { n_ctx: 256, ..Default::default() }).expect("session");
        ses.decode(&prompt(model.n_vocab(), 80), Outputs::All).expect("decode")
    };
    let base = logits(&write(&dir, "base", TinyConfig::gemma2()));
    let variants = [
        ("attention soft-cap 50 instead of 1", TinyConfig { attn_softcap: 50.0, ..TinyConfig::gemma2() }),
        ("final soft-cap 30 instead of 0.5", TinyConfig { final_softcap: 30.0, ..TinyConfig::gemma2() }),
        ("window 128 instead of 16", TinyConfig { sliding_window: 128, ..TinyConfig::gemma2() }),
    ];
    for (i, (name, cfg)) in variants.into_iter().enumerate() {
        let d = max_diff(&base, &logits(&write(&dir, &format!("variant{i}"), cfg)));
        println!("{name}: max |Δlogit| = {d:.3}");
        assert!(d > 0.05, "{name}: the logits barely change ({d})");
    }
    // Sanity of the defaults: a file without the soft-cap keys gets Gemma 2's 50 and 30.
    let mut m = TinyModel::new(TinyConfig { n_ctx_train: N_CTX_TRAIN, ..TinyConfig::gemma2() });
    let (attn_cap, final_cap) = (m.key(llm::ATTN_LOGIT_SOFTCAPPING), m.key(llm::FINAL_LOGIT_SOFTCAPPING));
    m.remove(&attn_cap).remove(&final_cap);
    let defaults = dir.path().join("defaults.gguf");
    m.write(&defaults).expect("write");
    let explicit =
        write(&dir, "explicit", TinyConfig { attn_softcap: 50.0, final_softcap: 30.0, ..TinyConfig::gemma2() });
    assert_eq!(max_diff(&logits(&defaults), &logits(&explicit)), 0.0, "absent soft-cap keys are not 50 and 30");
}

/// Gemma 2's local layers (the even ones) keep a window-sized cache, as llama.cpp's iSWA
/// cache with `swa_full = false`: in a 1024 context with batches of 512 and a 16-token window,
/// 768 cells (528 rounded up to 256) instead of 1024; Gemma 1 keeps full caches.
#[test]
fn gemma2_local_layers_keep_a_window_sized_cache() {
    let dir = TempDir::new().expect("temp dir");
    let opts = SessionOptions { n_ctx: 1024, ..Default::default() };
    // f16 K and V rows of head_dim 16 × 2 KV heads: 2 × 64 bytes per cell.
    let per_cell = 2 * 2 * 16 * 2;
    for (name, cfg, cells) in [("gemma2", TinyConfig::gemma2(), 768 + 1024), ("gemma", TinyConfig::gemma(), 2 * 1024)] {
        let model = Model::load(write(&dir, name, cfg), &LoadOptions { threads: Some(1), ..Default::default() });
        let model = model.expect("load");
        let layout = model.arch().kv_layout();
        let bytes = Session::new(&model, opts).expect("session").kv_cache().bytes();
        println!("{name}: local layers {:?}, window {:?}, KV cache {bytes} bytes", layout.is_local, layout.window);
        assert_eq!(bytes, cells * per_cell, "{name}: KV cache size");
    }
}
