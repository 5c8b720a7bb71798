//! `gemma info`: the built binary on small GGUF files written here, on malformed files (one
//! case per defect), and on the real Gemma 3 270M Q4_K_M file.
//!
//! The real file is `$GEMMA_TEST_MODEL` or the workspace's `models/` copy. Without it that
//! test prints a notice and passes, except in CI (`CI=true`), where it fails.

use gemma_gguf::gguf::{GgmlType, GgufWriter};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh path under Cargo's per-crate temporary folder for integration tests.
fn temp_path(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gemma-info");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}-{name}", std::process::id()))
}

fn gemma_info(path: &Path, flags: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gemma"))
        .arg("info")
        .arg(path)
        .args(flags)
        .output()
        .expect("running the gemma binary")
}

/// Runs `gemma info` expecting success; returns stdout.
fn info_ok(path: &Path, flags: &[&str]) -> String {
    let out = gemma_info(path, flags);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gemma info failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn info_json(path: &Path, flags: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(flags);
    serde_json::from_str(&info_ok(path, &all)).expect("--json prints one JSON object")
}

/// A small gemma3-like file: hyper-parameters (one of them a 20-element array, to be
/// summarised), a 5-token vocabulary, a chat template, an unknown key and three tensors.
fn write_small(path: &Path) {
    let mut w = GgufWriter::create(path).unwrap();
    w.add_kv("general.architecture", "gemma3").unwrap();
    w.add_kv("general.name", "tiny").unwrap();
    w.add_kv("general.file_type", 15u32).unwrap();
    w.add_kv("gemma3.block_count", 2u32).unwrap();
    w.add_kv("gemma3.embedding_length", 64u32).unwrap();
    w.add_kv("gemma3.attention.layer_norm_rms_epsilon", 1e-6f32).unwrap();
    w.add_kv("gemma3.attention.sliding_window_pattern", vec![true; 20]).unwrap();
    w.add_kv("tokenizer.ggml.model", "llama").unwrap();
    let tokens: Vec<String> = ["<pad>", "<eos>", "<bos>", "a", "b"].map(String::from).into();
    w.add_kv("tokenizer.ggml.tokens", tokens).unwrap();
    w.add_kv("tokenizer.ggml.scores", vec![0f32; 5]).unwrap();
    w.add_kv("tokenizer.ggml.bos_token_id", 2u32).unwrap();
    w.add_kv("tokenizer.ggml.eos_token_id", 1u32).unwrap();
    w.add_kv("tokenizer.ggml.padding_token_id", 9u32).unwrap();
    w.add_kv("tokenizer.ggml.add_bos_token", true).unwrap();
    w.add_kv("tokenizer.chat_template", "{% for m in messages %}\n{{ m }}\n{% endfor %}").unwrap();
    w.add_kv("custom.note", "hello").unwrap();
    // Sizes: q8_0 is 34 bytes per 32 elements, q4_K 144 bytes per 256, f32 4 bytes each.
    let tensors = [
        ("token_embd.weight", vec![64, 5], GgmlType::Q8_0, 5 * 2 * 34),
        ("output_norm.weight", vec![64], GgmlType::F32, 64 * 4),
        ("blk.0.attn_q.weight", vec![256, 4], GgmlType::Q4_K, 4 * 144),
    ];
    for (name, dims, ty, _) in &tensors {
        w.add_tensor_info(name, dims, *ty).unwrap();
    }
    for (name, _, _, n_bytes) in &tensors {
        w.write_tensor_data(name, &vec![0u8; *n_bytes]).unwrap();
    }
    w.finish().unwrap();
}

/// `text` with every run of spaces squashed to one, so that checks do not depend on
/// column widths.
fn squash(text: &str) -> String {
    let lines = text.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "));
    lines.collect::<Vec<_>>().join("\n")
}

#[test]
fn small_file_text() {
    let path = temp_path("small-text.gguf");
    write_small(&path);
    let text = squash(&info_ok(&path, &[]));
    for expected in [
        "architecture gemma3",
        "name tiny",
        "hyper-parameters (gemma3.*)",
        "block_count 2",
        "attention.layer_norm_rms_epsilon 1e-6",
        "sliding_window_pattern [true, true, true, true, true, true, true, true, …] (20 × bool)",
        "vocabulary 5 tokens",
        "scores 5 × f32",
        "merges absent",
        "bos 2 \"<bos>\"",
        "padding 9 (not in the vocabulary)",
        "present, 44 bytes; first line \"{% for m in messages %}\"",
        "file_type 15 (Q4_K_M)",
        "other keys",
        "custom.note \"hello\"",
        "q4_K 1 1,024 576 49.1%",
        "total 3 1,408 1,172 100.0%",
        "(gemma info --tensors lists every tensor)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let tensors = squash(&info_ok(&path, &["--tensors"]));
    assert!(tensors.contains("\nblk.0.attn_q.weight q4_K 256 x 4 576"), "{tensors}");
    assert!(tensors.contains("\ntoken_embd.weight q8_0 64 x 5 340\n"), "{tensors}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn small_file_json() {
    let path = temp_path("small-json.gguf");
    write_small(&path);
    let j = info_json(&path, &[]);
    assert_eq!(j["file"]["gguf_version"], 3);
    assert_eq!(j["file"]["n_kv"], 16);
    assert_eq!(j["file"]["n_tensors"], 3);
    assert_eq!(j["file"]["size_bytes"], std::fs::metadata(&path).unwrap().len());
    assert_eq!(j["architecture"], "gemma3");
    assert_eq!(j["hparams"]["block_count"], 2);
    assert_eq!(j["hparams"]["attention.layer_norm_rms_epsilon"], 1e-6);
    let pattern = &j["hparams"]["attention.sliding_window_pattern"];
    assert_eq!(pattern["type"], "bool");
    assert_eq!(pattern["len"], 20);
    assert_eq!(pattern["first"].as_array().unwrap().len(), 8);
    let tok = &j["tokenizer"];
    assert_eq!(tok["vocab_size"], 5);
    assert_eq!(tok["scores"]["type"], "f32");
    assert_eq!(tok["merges"], Value::Null);
    assert_eq!(tok["special_tokens"]["bos"]["token"], "<bos>");
    assert_eq!(tok["special_tokens"]["padding"]["token"], Value::Null);
    assert_eq!(tok["settings"]["tokenizer.ggml.add_bos_token"], true);
    assert_eq!(j["chat_template"]["present"], true);
    assert_eq!(j["chat_template"]["bytes"], 44);
    assert_eq!(j["file_type"], "Q4_K_M");
    assert_eq!(j["other"]["custom.note"], "hello");
    assert!(j.get("tensors").is_none(), "tensors only with --tensors");
    assert_eq!(j["totals"]["parameters"], 64 * 5 + 64 + 256 * 4);
    assert_eq!(j["totals"]["bytes"], 340 + 256 + 576);
    // Most bytes first.
    let types: Vec<&str> = j["types"].as_array().unwrap().iter().map(|t| t["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["q4_K", "q8_0", "f32"]);
    let j = info_json(&path, &["--tensors"]);
    assert_eq!(j["tensors"][2]["name"], "blk.0.attn_q.weight");
    assert_eq!(j["tensors"][2]["shape"], serde_json::json!([256, 4]));
    std::fs::remove_file(&path).unwrap();
}

/// No metadata and no tensors: every section says what is absent, nothing divides by zero.
#[test]
fn empty_file() {
    let path = temp_path("empty.gguf");
    GgufWriter::create(&path).unwrap().finish().unwrap();
    let text = info_ok(&path, &[]);
    assert!(text.contains("(general.architecture is absent)"), "{text}");
    assert!(text.contains("absent (the Gemma turn format is built in)"), "{text}");
    let j = info_json(&path, &[]);
    assert_eq!(j["totals"]["parameters"], 0);
    assert_eq!(j["totals"]["bits_per_weight"], Value::Null);
    assert_eq!(j["chat_template"]["present"], false);
    std::fs::remove_file(&path).unwrap();
}

/// Runs `gemma info` on `bytes` expecting a one-line error containing `expected`.
fn assert_fails(name: &str, bytes: &[u8], expected: &str) {
    let path = temp_path(name);
    std::fs::write(&path, bytes).unwrap();
    let out = gemma_info(&path, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
    assert!(out.stdout.is_empty(), "{name}: printed to stdout");
    assert!(stderr.starts_with("error: "), "{name}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{name}: not one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    assert!(stderr.contains(expected), "{name}: expected {expected:?} in {stderr}");
    std::fs::remove_file(&path).unwrap();
}

fn small_bytes() -> Vec<u8> {
    let path = temp_path("small-source.gguf");
    write_small(&path);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    bytes
}

#[test]
fn malformed_files() {
    let good = small_bytes();
    let mut bad_magic = good.clone();
    bad_magic[..4].copy_from_slice(b"GGML");
    assert_fails("bad-magic.gguf", &bad_magic, "not a GGUF file");
    assert_fails("bad-magic-hint.gguf", &bad_magic, "convert_hf_to_gguf");
    assert_fails("empty-bytes.gguf", b"", "is this a GGUF file?");
    assert_fails("short-header.gguf", &good[..10], "ends inside n_tensors");
    assert_fails("cut-in-metadata.gguf", &good[..200], "cut short");
    assert_fails("cut-in-data.gguf", &good[..good.len() - 700], "outside the data section");
    let mut bad_version = good.clone();
    bad_version[4..8].copy_from_slice(&7u32.to_le_bytes());
    assert_fails("bad-version.gguf", &bad_version, "version 7 is not supported");
}

#[test]
fn missing_file_and_folder() {
    let out = gemma_info(Path::new("/nonexistent/model.gguf"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.starts_with("error: /nonexistent/model.gguf: "), "{stderr}");
    let out = gemma_info(Path::new(env!("CARGO_TARGET_TMPDIR")), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("is a folder"), "{stderr}");
}

#[test]
fn help_explains_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_gemma")).args(["info", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in ["--json", "--tensors", "<FILE>"] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

/// The real test model, found as every real-model test finds it.
fn model_path() -> Option<PathBuf> {
    gemma_tests::test_model()
}

/// Expected values: the model's config (Gemma 3 270M) and, for the tensor mix, gguf-py's
/// `GGUFReader` (llama.cpp's Python reader) run on the same file.
#[test]
fn real_model() {
    let Some(path) = model_path() else { return };
    let j = info_json(&path, &[]);
    assert_eq!(j["architecture"], "gemma3");
    assert_eq!(j["hparams"]["block_count"], 18);
    assert_eq!(j["hparams"]["embedding_length"], 640);
    assert_eq!(j["file"]["n_tensors"], 236);
    assert_eq!(j["tokenizer"]["vocab_size"], 262144);
    assert_eq!(j["tokenizer"]["special_tokens"]["bos"]["token"], "<bos>");
    assert_eq!(j["chat_template"]["present"], false);
    let count = |ty: &str| {
        let types = j["types"].as_array().unwrap();
        types.iter().find(|t| t["type"] == ty).map(|t| t["tensors"].as_u64().unwrap())
    };
    let expected = [("q4_K", 27), ("q5_0", 81), ("q6_K", 9), ("q8_0", 10), ("f32", 109)];
    for (ty, n) in expected {
        assert_eq!(count(ty), Some(n), "{ty}");
    }
    assert_eq!(j["types"].as_array().unwrap().len(), expected.len());
    assert_eq!(j["totals"]["parameters"], 268_098_176u64);
    assert_eq!(j["totals"]["bytes"], 246_587_904u64);
    // Tensor bytes + header + padding = file size; padding is under `alignment` per tensor.
    let size = std::fs::metadata(&path).unwrap().len();
    assert_eq!(j["file"]["size_bytes"], size);
    let header = j["file"]["data_offset"].as_u64().unwrap();
    let bytes = j["totals"]["bytes"].as_u64().unwrap();
    let slack = size - header - bytes;
    assert!(slack < 32 * 236, "{slack} bytes unaccounted for");
    let text = info_ok(&path, &[]);
    assert!(text.contains("absent (the Gemma turn format is built in)"));
    assert!(text.contains("7.36 bits per weight"), "{text}");
}
