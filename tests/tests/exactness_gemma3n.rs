//! Gemma 3n (`gemma3n`) against llama.cpp itself (libllama from llama-cpp-sys-2) on tiny random
//! GGUFs (`gemma_tests::tiny_model`): per-position logits of a prompt, then greedy
//! single-token steps, with the flash-attention kernel off and on; identical logits required.
//!
//! libllama hard-codes 3n's sizes (4 AltUp streams, per-layer embeddings of 256, LAuReL rank
//! 64, KV on layers < 20, sparsity on layers < 10), so the file has 22 layers
//! ([`Gemma3nShape::default`]): every path runs, AltUp predict and correct, LAuReL, the
//! per-layer embeddings, the Gaussian top-k on the first 10 layers and not after, two shared
//! layers (one sliding, one full) reading layers 18 and 19, the window of 8 on sliding
//! layers, the final soft-cap. One prompt (1000 tokens in a 1024 context, batches of 512)
//! wraps the sliding layers' window-sized cache around.

use gemma_gguf::gguf::GgmlType;
use gemma_gguf::model::{LoadOptions, Model};
use gemma_gguf::names::llm;
use gemma_gguf::session::{Outputs, Session, SessionOptions};
use gemma_tests::exact::{check_cases, max_diff, prompt, read_rows_only, write, N_CTX_TRAIN};
use gemma_tests::tiny_model::{Gemma3nShape, TinyConfig, TinyModel};
use std::path::Path;
use tempfile::TempDir;

#[test]
fn gemma3n_logits_match_llama_cpp() {
    let q8 = TinyConfig { weight_type: GgmlType::Q8_0, ..TinyConfig::gemma3n() };
    check_cases(&[
        ("gemma3n (AltUp, LAuReL, PLE)", TinyConfig::gemma3n(), 256, 64),
        ("gemma3n, Q8_0 weights", q8, 256, 64),
        // 1000 tokens: the sliding layers' 768-cell cache wraps around.
        ("gemma3n, ring past the window", TinyConfig::gemma3n(), 1024, 1000),
    ]);
}

fn logits(path: &Path) -> Vec<f32> {
    let model = Model::load(path, &LoadOptions { threads: Some(1), ..Default::default() }).expect("load");
    let mut ses = Session::new(&model, SessionOptions { n_ctx: 256, ..Default::default() }).expect("session");
    ses.decode(&prompt(model.n_vocab(), 64), Outputs::All).expect("decode")
}

/// The positive controls: each Gemma 3n feature changes the logits by far more than rounding,
/// so a runtime that skipped one could not have matched llama.cpp above. These variants are
/// ours only (libllama ignores the keys that make them).
#[test]
fn gemma3n_features_change_the_logits() {
    let dir = TempDir::new().expect("temp dir");
    let base = logits(&write(&dir, "base", TinyConfig::gemma3n()));
    let g3n = |gemma3n| TinyConfig { gemma3n, ..TinyConfig::gemma3n() };
    let dense = Gemma3nShape { sparsity: vec![f32::NEG_INFINITY; 22], ..Gemma3nShape::default() };
    let variants = [
        ("no activation sparsity", g3n(dense)),
        ("no shared KV layers", g3n(Gemma3nShape { n_shared_kv: 0, ..Gemma3nShape::default() })),
        ("active AltUp stream 1 instead of 0", g3n(Gemma3nShape { altup_active: 1, ..Gemma3nShape::default() })),
        ("window 128 instead of 8", TinyConfig { sliding_window: 128, ..TinyConfig::gemma3n() }),
        ("final soft-cap 1 instead of 30", TinyConfig { final_softcap: 1.0, ..TinyConfig::gemma3n() }),
    ];
    for (i, (name, cfg)) in variants.into_iter().enumerate() {
        let d = max_diff(&base, &logits(&write(&dir, &format!("variant{i}"), cfg)));
        println!("{name}: max |Δlogit| = {d:.4}");
        assert!(d > 1e-3, "{name}: the logits barely change ({d})");
    }
}

/// A file without 3n's own keys runs as libllama runs every file: 4 streams, active 0, PLE
/// 256, KV on layers < 20, sparsity 1.6448533 on layers < 10, soft-cap 30. The tiny file's
/// keys say exactly that, so dropping them changes nothing.
#[test]
fn gemma3n_absent_keys_take_llama_cpp_values() {
    let dir = TempDir::new().expect("temp dir");
    let explicit = logits(&write(&dir, "explicit", TinyConfig::gemma3n()));
    let mut m = TinyModel::new(TinyConfig { n_ctx_train: N_CTX_TRAIN, ..TinyConfig::gemma3n() });
    for suffix in [
        llm::ALTUP_ACTIVE_IDX,
        llm::ALTUP_NUM_INPUTS,
        llm::EMBEDDING_LENGTH_PER_LAYER_INPUT,
        llm::SHARED_KV_LAYERS,
        llm::ACTIVATION_SPARSITY_SCALE,
        llm::FINAL_LOGIT_SOFTCAPPING,
    ] {
        let key = m.key(suffix);
        m.remove(&key);
    }
    let path = dir.path().join("defaults.gguf");
    m.write(&path).expect("write");
    let d = max_diff(&explicit, &logits(&path));
    println!("keys absent against keys present: max |Δlogit| = {d:e}");
    assert_eq!(d, 0.0, "absent 3n keys do not default to llama.cpp's values");
}

/// Shared layers keep no cache: the 22-layer file's cache is that of its first 20 layers,
/// and layers 20 (sliding) and 21 (full) read layers 18 and 19, as libllama's do.
#[test]
fn gemma3n_shared_layers_have_no_cache() {
    let dir = TempDir::new().expect("temp dir");
    let path = write(&dir, "g3n", TinyConfig::gemma3n());
    let model = Model::load(&path, &LoadOptions { threads: Some(1), ..Default::default() }).expect("load");
    let layout = model.arch().kv_layout();
    println!("sharing: {:?}", &layout.shared_from[18..]);
    assert_eq!(layout.shared_from[..20], [None; 20]);
    assert_eq!(layout.shared_from[20..], [Some(18), Some(19)]);
    let ses = Session::new(&model, SessionOptions { n_ctx: 1024, ..Default::default() }).expect("session");
    // f16 K and V (2 × 2 bytes a value), one KV head of 32: of the first 20 layers, 16 are
    // sliding (768 cells: window 8 + n_ubatch 512, rounded up to 256) and 4 full (1024).
    let expected = 2 * 2 * 32 * (16 * 768 + 4 * 1024);
    println!("KV cache: {} bytes, expected {expected}", ses.kv_cache().bytes());
    assert_eq!(ses.kv_cache().bytes() as u64, expected, "KV bytes of the 20 layers with their own cache");
}

/// With only the last position's logits read, the shared-KV layers run on that row alone; the
/// logits must be those of the whole computation up to the kernels' rounding: no farther
/// than flash attention on against off (`gemma_tests::exact::read_rows_only`).
#[test]
fn gemma3n_last_row_alone_equals_the_whole_prompt() {
    let dir = TempDir::new().expect("temp dir");
    let (d, yardstick) = read_rows_only(&write(&dir, "base", TinyConfig::gemma3n()), 1024, &[64, 1000]);
    println!("largest: last row alone {d:.3e}, flash attention off/on {yardstick:.3e} (of the largest logit)");
    assert!(
        d <= yardstick,
        "the last row alone moved the logits by {d:e}, more than flash attention does ({yardstick:e})"
    );
}
