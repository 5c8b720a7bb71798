//! The `gemma` commands on Gemma 3n files: `info`, `run`, `chat`, `bench`, `perplexity`,
//! `compare`, `convert`, `quantize` and `sweep`, on a tiny random `gemma3n` GGUF
//! (`gemma_tests::tiny_model`, Q8_0 weights: 22 layers, AltUp, LAuReL, per-layer embeddings,
//! sparsity, shared KV) and on the tiny transformers checkpoint (tests/data/tiny/gemma3n-e2b).
//! The text is random-weight noise; what is checked is that every command runs the
//! architecture end to end and reports it (the logits themselves are checked against
//! libllama in tests/tests/exactness_gemma3n.rs and against transformers in
//! tests/tests/convert_gemma3n.rs).

use gemma_gguf::gguf::GgmlType;
use gemma_tests::tiny_model::{TinyConfig, TinyModel};
use std::path::Path;

/// Runs `args`, prints its output, requires success; returns (stdout, stderr).
fn ok(args: &[&str]) -> (String, String) {
    gemma_tests::cli::ok(Path::new(env!("CARGO_BIN_EXE_gemma")), args)
}

use gemma_tests::cli::{arg as p, text as s};

#[test]
fn every_command_runs_gemma3n_files() {
    let dir = tempfile::tempdir().unwrap();
    let text = gemma_tests::workspace_root().join("tests/data/text/alice.txt");
    let path = dir.path().join("gemma3n.gguf");
    let cfg = TinyConfig { weight_type: GgmlType::Q8_0, n_ctx_train: 8192, ..TinyConfig::gemma3n() };
    TinyModel::new(cfg).write(&path).expect("write the tiny model");
    let m = p(&path);
    let (info, _) = ok(&["info", m, "--tensors"]);
    assert!(info.contains("gemma3n") && info.contains("altup_proj"), "info names the architecture and tensors");
    let (json, _) = ok(&["info", m, "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json).expect("info --json");
    assert_eq!(json["architecture"], "gemma3n", "{json}");
    let (_, stderr) = ok(&["run", "-m", m, "-p", "hello world", "-n", "8", "--temp", "0", "-t", "1"]);
    assert!(stderr.contains("tokens/s") || stderr.contains("t/s"), "run reports its speed");
    ok(&["run", "-m", m, "-p", "hello world", "-n", "8", "--temp", "0", "-t", "1", "--flash-attn"]);
    let out = gemma_tests::cli::run(
        Path::new(env!("CARGO_BIN_EXE_gemma")),
        &["chat", "-m", m, "-n", "8", "--temp", "0", "-t", "1"],
        b"hello\n",
    );
    assert!(out.status.success(), "chat: {}", s(&out.stderr));
    let (table, _) = ok(&["bench", "-m", m, "-p", "16", "-n", "4", "-t", "1", "-r", "1"]);
    assert!(table.lines().any(|l| l.contains("pp16")) && table.lines().any(|l| l.contains("tg4")), "{table}");
    let small = ["-c", "64", "--chunks", "2", "-t", "1"];
    let mut args = vec!["perplexity", "-m", m, "-f", p(&text)];
    args.extend(small);
    let (ppl, _) = ok(&args);
    let fig: f64 = ppl.trim().strip_prefix("PPL = ").and_then(|r| r.split(" +/- ").next()).unwrap().parse().unwrap();
    assert!(fig.is_finite() && fig > 1.0, "perplexity {fig}");
    let mut args = vec!["compare", "--base", m, m, "-f", p(&text), "--json", "-"];
    args.extend(small);
    let (out, _) = ok(&args);
    let json: serde_json::Value =
        serde_json::from_str(&out[out.find("\n{").expect("JSON after the table") + 1..]).unwrap();
    assert_eq!(json["models"][0]["kl_max"], 0.0, "a model against itself");
}

/// `gemma convert`, `gemma quantize` and `gemma sweep` on the tiny transformers checkpoint.
#[test]
fn convert_quantize_sweep_a_gemma3n_checkpoint() {
    let root = gemma_tests::workspace_root();
    let hf = root.join("tests/data/tiny/gemma3n-e2b");
    let dir = tempfile::tempdir().unwrap();
    let f16 = dir.path().join("f16.gguf");
    ok(&["convert", p(&hf), "-o", p(&f16), "--type", "f16"]);
    assert!(f16.is_file());
    let q8 = dir.path().join("q8.gguf");
    ok(&["quantize", p(&f16), p(&q8), "--type", "q8_0"]);
    let (info, _) = ok(&["info", p(&q8)]);
    assert!(info.contains("gemma3n"));
    gemma_tests::cli::sweep_recommends_q8(Path::new(env!("CARGO_BIN_EXE_gemma")), &hf, "gemma3n-e2b", dir.path());
}
