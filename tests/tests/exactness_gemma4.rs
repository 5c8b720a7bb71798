//! Gemma 4 (`gemma4`) against llama.cpp itself (libllama from llama-cpp-sys-2) on tiny random
//! GGUFs (`gemma_tests::tiny_model`): per-position logits of a prompt, then greedy
//! single-token steps, with the flash-attention kernel off and on; identical logits required.
//!
//! The files exercise every Gemma 4 path: sliding (head size 32) and full (64) layers with
//! their own rope bases, frequency factors on the full layers, per-layer embeddings, two
//! shared KV layers reading the caches of earlier ones, `layer_output_scale`, the final
//! soft-cap; and, in the experts file, 4 experts (top 2, fused gate/up, per-expert scales)
//! beside the dense FFN, K = V on full layers and per-layer KV head counts. The window is 8
//! tokens, so every prompt runs far past it; one (1000 tokens in a 1024 context, batches of
//! 512) wraps the sliding layers' window-sized cache around.

use gemma_gguf::gguf::GgmlType;
use gemma_gguf::model::{LoadOptions, Model};
use gemma_gguf::names::llm;
use gemma_gguf::session::{Outputs, Session, SessionOptions};
use gemma_tests::exact::{check_cases, max_diff, prompt, read_rows_only, write, N_CTX_TRAIN};
use gemma_tests::tiny_model::{Gemma4Shape, TinyConfig, TinyModel};
use std::path::Path;
use tempfile::TempDir;

#[test]
fn gemma4_logits_match_llama_cpp() {
    let q8 = TinyConfig { weight_type: GgmlType::Q8_0, ..TinyConfig::gemma4() };
    let q8_moe = TinyConfig { weight_type: GgmlType::Q8_0, ..TinyConfig::gemma4_moe() };
    check_cases(&[
        ("gemma4 E2B-like (PLE, shared KV)", TinyConfig::gemma4(), 256, 64),
        ("gemma4 E2B-like, Q8_0 weights", q8, 256, 64),
        ("gemma4 experts, K = V", TinyConfig::gemma4_moe(), 256, 64),
        ("gemma4 experts, Q8_0 weights", q8_moe, 256, 64),
        // 1000 tokens: the sliding layers' 768-cell cache wraps around.
        ("gemma4, ring past the window", TinyConfig::gemma4(), 1024, 1000),
    ]);
}

fn logits(path: &Path) -> Vec<f32> {
    let model = Model::load(path, &LoadOptions { threads: Some(1), ..Default::default() }).expect("load");
    let mut ses = Session::new(&model, SessionOptions { n_ctx: 256, ..Default::default() }).expect("session");
    ses.decode(&prompt(model.n_vocab(), 64), Outputs::All).expect("decode")
}

/// The positive controls: each Gemma 4 feature changes the logits by far more than rounding,
/// so a runtime that skipped one could not have matched llama.cpp above.
#[test]
fn gemma4_features_change_the_logits() {
    let dir = TempDir::new().expect("temp dir");
    let base = logits(&write(&dir, "base", TinyConfig::gemma4()));
    let no_share = Gemma4Shape { n_shared_kv: 0, ..Gemma4Shape::default() };
    let g4 = |gemma4| TinyConfig { gemma4, ..TinyConfig::gemma4() };
    let variants = [
        ("no shared KV layers", g4(no_share)),
        ("window 128 instead of 8", TinyConfig { sliding_window: 128, ..TinyConfig::gemma4() }),
        ("final soft-cap 30 instead of 1", TinyConfig { final_softcap: 30.0, ..TinyConfig::gemma4() }),
    ];
    for (i, (name, cfg)) in variants.into_iter().enumerate() {
        let d = max_diff(&base, &logits(&write(&dir, &format!("variant{i}"), cfg)));
        println!("{name}: max |Δlogit| = {d:.3}");
        assert!(d > 0.05, "{name}: the logits barely change ({d})");
    }
    // Without the per-layer embedding table rows the model is another one: zeroing the
    // table is not possible through the config, so drop PLE altogether.
    let no_ple = Gemma4Shape { n_embd_per_layer: 0, ..Gemma4Shape::default() };
    let d = max_diff(&base, &logits(&write(&dir, "no_ple", g4(no_ple))));
    println!("no per-layer embeddings: max |Δlogit| = {d:.3}");
    assert!(d > 0.05, "per-layer embeddings barely matter ({d})");
    // A file without `final_logit_softcapping` gets llama.cpp's 30 (llama-hparams.h).
    let mut m = TinyModel::new(TinyConfig { n_ctx_train: N_CTX_TRAIN, ..TinyConfig::gemma4() });
    let cap = m.key(llm::FINAL_LOGIT_SOFTCAPPING);
    m.remove(&cap);
    let defaults = dir.path().join("defaults.gguf");
    m.write(&defaults).expect("write");
    let explicit = write(&dir, "explicit", TinyConfig { final_softcap: 30.0, ..TinyConfig::gemma4() });
    assert_eq!(max_diff(&logits(&defaults), &logits(&explicit)), 0.0, "an absent soft-cap key is not 30");
}

/// Shared layers keep no cache: the E2B-like file's two shared layers (one of each kind)
/// cost nothing, so its cache is that of the 4 layers with their own K/V.
#[test]
fn gemma4_shared_layers_have_no_cache() {
    let dir = TempDir::new().expect("temp dir");
    let path = write(&dir, "e2b", TinyConfig::gemma4());
    let model = Model::load(&path, &LoadOptions { threads: Some(1), ..Default::default() }).expect("load");
    let layout = model.arch().kv_layout();
    println!("sharing: {:?}", layout.shared_from);
    assert_eq!(layout.shared_from, vec![None, None, None, None, Some(2), Some(3)]);
    let ses = Session::new(&model, SessionOptions { n_ctx: 1024, ..Default::default() }).expect("session");
    // f16 K and V (2 × 2 bytes a value), one KV head: two sliding layers with rows of 32 in
    // 768 cells (window 8 + n_ubatch 512, rounded up to 256) and two full layers with rows of
    // 64 in 1024 cells.
    let expected = 2 * 2 * (2 * 32 * 768 + 2 * 64 * 1024);
    println!("KV cache: {} bytes, expected {expected}", ses.kv_cache().bytes());
    assert_eq!(ses.kv_cache().bytes() as u64, expected, "KV bytes of the 4 layers with their own cache");
}

/// With only the last position's logits read, the shared-KV layers run on that row alone; the
/// logits must be those of the whole computation up to the kernels' rounding: no farther
/// than flash attention on against off (`gemma_tests::exact::read_rows_only`).
#[test]
fn gemma4_last_row_alone_equals_the_whole_prompt() {
    let dir = TempDir::new().expect("temp dir");
    let (d, yardstick) = read_rows_only(&write(&dir, "base", TinyConfig::gemma4()), 1024, &[64, 1000]);
    let (d_moe, y_moe) = read_rows_only(&write(&dir, "moe", TinyConfig::gemma4_moe()), 1024, &[64, 1000]);
    let (d, yardstick) = (d.max(d_moe), yardstick.max(y_moe));
    println!("largest: last row alone {d:.3e}, flash attention off/on {yardstick:.3e} (of the largest logit)");
    assert!(
        d <= yardstick,
        "the last row alone moved the logits by {d:e}, more than flash attention does ({yardstick:e})"
    );
}
