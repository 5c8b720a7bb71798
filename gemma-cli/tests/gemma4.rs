//! The `gemma` commands on Gemma 4 files: `info`, `run`, `chat`, `bench`, `perplexity` and
//! `compare` on tiny random `gemma4` GGUFs (`gemma_tests::tiny_model`, Q8_0 weights: the
//! E2B-like file with per-layer embeddings and shared KV layers, and the one with experts).
//! The text is random-weight noise; what is checked is that every command runs the
//! architecture end to end and reports it (the logits themselves are checked against
//! libllama in tests/tests/exactness_gemma4.rs).

use gemma_gguf::gguf::GgmlType;
use gemma_tests::tiny_model::{TinyConfig, TinyModel};
use std::path::{Path, PathBuf};

/// Runs `args`, prints its output, requires success; returns (stdout, stderr).
fn ok(args: &[&str]) -> (String, String) {
    gemma_tests::cli::ok(Path::new(env!("CARGO_BIN_EXE_gemma")), args)
}

use gemma_tests::cli::{arg as p, text as s};

/// Both tiny Gemma 4 files, Q8_0, in `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    [("e2b", TinyConfig::gemma4()), ("experts", TinyConfig::gemma4_moe())]
        .into_iter()
        .map(|(name, cfg)| {
            let path = dir.join(format!("gemma4-{name}.gguf"));
            let cfg = TinyConfig { weight_type: GgmlType::Q8_0, n_ctx_train: 8192, ..cfg };
            TinyModel::new(cfg).write(&path).expect("write the tiny model");
            path
        })
        .collect()
}

#[test]
fn every_command_runs_gemma4_files() {
    let dir = tempfile::tempdir().unwrap();
    let text = gemma_tests::workspace_root().join("tests/data/text/alice.txt");
    for m in files(dir.path()) {
        let m = p(&m);
        let (info, _) = ok(&["info", m]);
        assert!(info.contains("gemma4"), "info names the architecture");
        let (json, _) = ok(&["info", m, "--json"]);
        let json: serde_json::Value = serde_json::from_str(&json).expect("info --json");
        assert_eq!(json["architecture"], "gemma4", "{json}");
        let (_, stderr) = ok(&["run", "-m", m, "-p", "hello world", "-n", "8", "--temp", "0", "-t", "1"]);
        assert!(stderr.contains("tokens/s") || stderr.contains("t/s"), "run reports its speed");
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
        let fig: f64 =
            ppl.trim().strip_prefix("PPL = ").and_then(|r| r.split(" +/- ").next()).unwrap().parse().unwrap();
        assert!(fig.is_finite() && fig > 1.0, "perplexity {fig}");
        let mut args = vec!["compare", "--base", m, m, "-f", p(&text), "--json", "-"];
        args.extend(small);
        let (out, _) = ok(&args);
        let json: serde_json::Value =
            serde_json::from_str(&out[out.find("\n{").expect("JSON after the table") + 1..]).unwrap();
        assert_eq!(json["models"][0]["kl_max"], 0.0, "a model against itself");
    }
}

/// `gemma sweep` on a Gemma 4 checkpoint: the tiny E2B-like one made by transformers
/// (tests/data/tiny/gemma4-e2b), converted to f16 and q8_0, compared, one recommended.
#[test]
fn sweep_converts_a_gemma4_checkpoint() {
    let root = gemma_tests::workspace_root();
    let hf = root.join("tests/data/tiny/gemma4-e2b");
    let dir = tempfile::tempdir().unwrap();
    let out_dir =
        gemma_tests::cli::sweep_recommends_q8(Path::new(env!("CARGO_BIN_EXE_gemma")), &hf, "gemma4-e2b", dir.path());
    for f in ["gemma4-e2b-f16.gguf", "gemma4-e2b-q8_0.gguf"] {
        assert!(out_dir.join(f).is_file(), "{f}");
    }
}
