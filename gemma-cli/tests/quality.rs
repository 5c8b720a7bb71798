//! `gemma perplexity` and `gemma compare` end to end on the real 270M file and the shipped
//! text, with small chunks (-c 64, two chunks) to stay quick; and their bad inputs.

use gemma_gguf::gguf::{GgmlType, GgufFile, GgufWriter};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SMALL: [&str; 6] = ["-c", "64", "--chunks", "2", "-t", "2"];

fn text_file() -> PathBuf {
    gemma_tests::workspace_root().join("tests/data/text/alice.txt")
}

fn gemma(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gemma")).args(args).output().expect("spawn gemma")
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `gemma compare … --json -` parsed.
fn compare_json(args: &[&str]) -> serde_json::Value {
    let out = gemma(args);
    assert!(out.status.success(), "{}", s(&out.stderr));
    let stdout = s(&out.stdout);
    let json_start = stdout.find("\n{").expect("a JSON object after the table") + 1;
    serde_json::from_str(&stdout[json_start..]).unwrap()
}

/// A copy of `src` whose F32 tensor `name` is scaled by `factor`, written with GgufWriter.
fn damaged_copy(src: &Path, dst: &Path, name: &str, factor: f32) {
    let file = GgufFile::open(src).unwrap();
    let mut w = GgufWriter::create(dst).unwrap();
    for (key, value) in file.metadata() {
        w.add_kv(key, value.clone()).unwrap();
    }
    for t in file.tensors() {
        w.add_tensor_info(&t.name, &t.dims, t.ggml_type).unwrap();
    }
    for t in file.tensors() {
        let data = file.tensor_data(t).unwrap();
        if t.name == name {
            assert_eq!(t.ggml_type, GgmlType::F32);
            let scaled: Vec<u8> = data
                .chunks_exact(4)
                .flat_map(|b| (f32::from_le_bytes(b.try_into().unwrap()) * factor).to_le_bytes())
                .collect();
            w.write_tensor_data(&t.name, &scaled).unwrap();
        } else {
            w.write_tensor_data(&t.name, data).unwrap();
        }
    }
    w.finish().unwrap();
}

#[test]
fn perplexity_prints_llama_cpp_style_figures() {
    let Some(m) = gemma_tests::test_model() else { return };
    let text = text_file();
    let mut args = vec!["perplexity", "-m", p(&m), "-f", p(&text)];
    args.extend(SMALL);
    let out = gemma(&args);
    let (stdout, stderr) = (s(&out.stdout), s(&out.stderr));
    println!("{stdout}{stderr}");
    assert!(out.status.success());
    let fig: Vec<f64> = stdout
        .trim()
        .strip_prefix("PPL = ")
        .expect("PPL = x +/- y")
        .split(" +/- ")
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(fig[0] > 1.0 && fig[0] < 1000.0 && fig[1] > 0.0, "{fig:?}");
    assert!(stderr.contains("62 tokens scored: 2 chunks of 64"), "2 × (64 - 1 - 32)");
    args.push("--json");
    let json: serde_json::Value = serde_json::from_slice(&gemma(&args).stdout).unwrap();
    assert!((json["ppl"].as_f64().unwrap() - fig[0]).abs() < 1e-4, "same figure as JSON");
    assert_eq!(json["tokens_scored"], 62);
}

#[test]
fn perplexity_bad_inputs_are_one_line_errors() {
    let Some(m) = gemma_tests::test_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bad_utf8 = dir.path().join("bad.txt");
    std::fs::write(&bad_utf8, b"Alice \xff\xfe was here").unwrap();
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "Alice was beginning to get very tired.").unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "  \n").unwrap();
    let text = text_file();
    let cases: [(&[&str], &str); 6] = [
        (&["-f", p(&bad_utf8)], "not UTF-8"),
        (&["-f", p(&short)], "twice the chunk size"),
        (&["-f", p(&empty)], "is empty"),
        (&["-f", "/nonexistent/text.txt"], "reading /nonexistent/text.txt"),
        (&["-f", p(&text), "-c", "2"], "chunk size"),
        (&["-f", p(&text), "--chunks", "0"], "chunk count"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["perplexity", "-m", p(&m)];
        args.extend(extra);
        let out = gemma(&args);
        let err = s(&out.stderr);
        println!("{extra:?}: {err}");
        assert_eq!(out.status.code(), Some(1), "{extra:?}");
        assert!(err.starts_with("error: ") && err.contains(needle) && err.lines().count() == 1, "{extra:?}: {err}");
    }
}

#[test]
fn a_model_against_itself_then_a_damaged_copy() {
    let Some(m) = gemma_tests::test_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (text, base, json_path, csv, svg, png) = (
        text_file(),
        dir.path().join("base.logits"),
        dir.path().join("r.json"),
        dir.path().join("r.csv"),
        dir.path().join("kl.svg"),
        dir.path().join("kl.png"),
    );
    // The model against itself, saving the base's logits, with every output.
    let mut args = vec!["compare", "--base", p(&m), p(&m), "-f", p(&text), "--save-base", p(&base)];
    args.extend(SMALL);
    args.extend(["--json", p(&json_path), "--csv", p(&csv), "--chart", p(&svg), "--chart", p(&png)]);
    let out = gemma(&args);
    println!("{}{}", s(&out.stdout), s(&out.stderr));
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let me = &json["models"][0];
    assert_eq!(me["kl_mean"], 0.0);
    assert_eq!(me["kl_max"], 0.0);
    assert_eq!(me["top1_agreement"], 1.0);
    assert_eq!(me["top5_overlap"], 1.0);
    assert_eq!(me["rms_dp"], 0.0);
    assert!((me["ppl_ratio"].as_f64().unwrap() - 1.0).abs() < 1e-6);
    assert!(me["bits_per_weight"].as_f64().unwrap() > 4.0 && me["bits_per_weight"].as_f64().unwrap() < 8.0);
    assert_eq!(json["base"]["tokens_scored"], 62);
    assert!(s(&out.stdout).contains("KL mean") && s(&out.stdout).contains("gemma-3-270m-q4_k_m.gguf"));
    let csv_text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(csv_text.lines().count(), 2, "header and one model");
    assert!(std::fs::read_to_string(&svg).unwrap().contains("gemma-3-270m-q4_k_m.gguf (KL 0)"));
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(base.is_file());

    // A copy with one layer's FFN norm scaled by 1.5, against the saved base: detected.
    let damaged = dir.path().join("damaged.gguf");
    damaged_copy(&m, &damaged, "blk.3.ffn_norm.weight", 1.5);
    let mut args = vec!["compare", "--base-logits", p(&base), p(&m), p(&damaged), "-t", "2", "--json", "-"];
    args.extend(["-f", p(&text)]);
    let json = compare_json(&args);
    let (same, bad) = (&json["models"][0], &json["models"][1]);
    println!("itself: {same}\ndamaged: {bad}");
    assert_eq!(same["kl_mean"], 0.0, "the saved base reproduces the live run exactly");
    let kl = bad["kl_mean"].as_f64().unwrap();
    assert!(kl > 1e-3, "damage detected: mean KL {kl}");
    assert!(bad["top1_agreement"].as_f64().unwrap() < 1.0);
    assert!(bad["kl_median"].as_f64().unwrap() <= bad["kl_p99"].as_f64().unwrap());
    assert!(bad["kl_p99"].as_f64().unwrap() <= bad["kl_max"].as_f64().unwrap());

    // Saved logits with another text: refused before any model runs.
    let other = dir.path().join("other.txt");
    std::fs::write(&other, "Call me Ishmael. ".repeat(200)).unwrap();
    let out = gemma(&["compare", "--base-logits", p(&base), p(&m), "-f", p(&other)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(s(&out.stderr).contains("tokenizes the text differently"), "{}", s(&out.stderr));
}

#[test]
fn compare_bad_inputs_are_one_line_errors() {
    let Some(m) = gemma_tests::test_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.logits");
    std::fs::write(&junk, b"GEMMABLG\x01\x00\x00\x00 not really").unwrap();
    let text = text_file();
    let cases: [(&[&str], &str); 4] = [
        (&["--base-logits", p(&junk), p(&m)], "base logits file"),
        (&["--base-logits", "/nonexistent.logits", p(&m)], "/nonexistent.logits"),
        (&["--base", p(&m), "-f", p(&text), "--chart", "x.jpg", p(&m)], "must end in .svg or .png"),
        (&["--base", p(&m), "-f", p(&text)], "at least one model"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["compare"];
        args.extend(extra);
        let out = gemma(&args);
        let err = s(&out.stderr);
        println!("{extra:?}: {err}");
        assert_eq!(out.status.code(), Some(1), "{extra:?}");
        assert!(err.contains(needle) && err.lines().count() == 1, "{extra:?}: {err}");
    }
}

/// The real 270M checkpoint in Hugging Face form (scripts/make_hf_checkpoint.py): required
/// under CI, a notice elsewhere.
fn hf_checkpoint() -> Option<PathBuf> {
    gemma_tests::test_hf_checkpoint()
}

#[test]
fn sweep_converts_compares_and_recommends() {
    let Some(hf) = hf_checkpoint() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("sweep");
    let text = text_file();
    let mut args = vec!["sweep", p(&hf), "--types", "q8_0,q4_0", "-f", p(&text), "-o", p(&out_dir)];
    args.extend(SMALL);
    args.extend(["--kl-budget", "1000", "--json", "-"]);
    let out = gemma(&args);
    let (stdout, stderr) = (s(&out.stdout), s(&out.stderr));
    println!("{stdout}{stderr}");
    assert!(out.status.success());
    assert!(stdout.contains("base gemma-3-270m-hf-q8_0.gguf"), "the highest-precision file is the base");
    assert!(stdout.contains("recommended: gemma-3-270m-hf-q4_0.gguf"), "within a generous budget: the smaller");
    for f in ["gemma-3-270m-hf-q8_0.gguf", "gemma-3-270m-hf-q4_0.gguf", "sweep.svg", "sweep.png"] {
        assert!(out_dir.join(f).is_file(), "{f}");
    }
    // A budget nothing meets: the base is kept.
    let mut args = vec!["sweep", p(&hf), "--types", "q8_0,q4_0", "-f", p(&text), "-o", p(&out_dir)];
    args.extend(SMALL);
    args.extend(["--kl-budget", "0"]);
    let out = gemma(&args);
    assert!(s(&out.stdout).contains("(the base): no smaller file"), "{}", s(&out.stdout));
    assert!(s(&out.stderr).contains("reusing"), "existing files are reused");
}
