//! `gemma run` and `gemma chat` end to end on the real model, and their bad inputs.

use std::path::{Path, PathBuf};
use std::process::Output;

fn model() -> Option<PathBuf> {
    gemma_tests::test_model()
}

fn gemma(args: &[&str], stdin: Option<&[u8]>) -> Output {
    gemma_tests::cli::run(Path::new(env!("CARGO_BIN_EXE_gemma")), args, stdin.unwrap_or_default())
}

use gemma_tests::cli::text;

#[test]
fn run_streams_a_greedy_completion_with_stats() {
    let Some(m) = model() else { return };
    let m = m.to_str().unwrap();
    let out = gemma(&["run", "-m", m, "-p", "The capital of France is", "-n", "12", "--temp", "0", "-t", "2"], None);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    println!("{stdout}\n{stderr}");
    assert!(out.status.success());
    assert!(stdout.starts_with("The capital of France is"));
    assert!(stdout.len() > "The capital of France is".len() + 10, "some text was generated");
    for needle in ["load:", "prompt:", "tokens/s", "generation:", "peak RSS", "KV cache"] {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}");
    }
    // The same greedy run from standard input and from a file gives the same text.
    let piped = gemma(&["run", "-m", m, "-n", "12", "--temp", "0", "-t", "2"], Some(b"The capital of France is"));
    assert_eq!(text(&piped.stdout), stdout);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("prompt.txt");
    std::fs::write(&f, "The capital of France is").unwrap();
    let from_file = gemma(&["run", "-m", m, "-f", f.to_str().unwrap(), "-n", "12", "--temp", "0", "-t", "2"], None);
    assert_eq!(text(&from_file.stdout), stdout);
}

#[test]
fn seeded_sampling_is_reproducible() {
    let Some(m) = model() else { return };
    let m = m.to_str().unwrap();
    let args = ["run", "-m", m, "-p", "Once upon a time", "-n", "16", "--temp", "1.0", "--seed", "42", "-t", "2"];
    let a = gemma(&args, None);
    let b = gemma(&args, None);
    assert!(a.status.success());
    assert_eq!(text(&a.stdout), text(&b.stdout));
}

#[test]
fn chat_reads_piped_turns_and_commands() {
    let Some(m) = model() else { return };
    let m = m.to_str().unwrap();
    let out = gemma(
        &["chat", "-m", m, "--temp", "0", "-n", "8", "-t", "2", "-s", "Be brief."],
        Some(b"Hello\n/reset\nWhat is 2+2?\n/quit\nnever read\n"),
    );
    let stderr = text(&out.stderr);
    println!("{}\n{stderr}", text(&out.stdout));
    assert!(out.status.success());
    assert!(stderr.contains("(conversation reset)"));
}

#[test]
fn bad_inputs_are_clear_errors() {
    let Some(m) = model() else { return };
    let m = m.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad_utf8 = dir.path().join("bad.txt");
    std::fs::write(&bad_utf8, b"hello \xff\xfe world").unwrap();
    /// Arguments, standard input, and a word the error must contain.
    type Case<'a> = (Vec<&'a str>, Option<&'a [u8]>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["run", "-m", m, "-p", ""], None, "empty"),
        (vec!["run", "-m", m], Some(b"".as_slice()), "empty"),
        (vec!["run", "-m", m, "-f", bad_utf8.to_str().unwrap()], None, "UTF-8"),
        (vec!["run", "-m", "/nonexistent.gguf", "-p", "x"], None, "nonexistent"),
        (vec!["run", "-m", m, "-p", "x", "-c", "0"], None, "context size"),
        (vec!["run", "-m", m, "-p", "x", "-c", "4000000"], None, "context size"),
        (vec!["run", "-m", m, "-p", "x", "--temp=-1"], None, "temperature"),
        (vec!["run", "-m", m, "-p", "x", "--top-p", "1.5"], None, "top"),
        (vec!["run", "-m", m, "-p", "x", "-t", "0"], None, "threads"),
        (vec!["run", "-m", m, "-p", "x", "--cache-type", "q8_0"], None, "flash"),
        (vec!["run", "-m", m, "-p", "x", "--device", "NoSuchDevice"], None, "NoSuchDevice"),
    ];
    for (args, stdin, needle) in cases {
        let out = gemma(&args, stdin);
        let stderr = text(&out.stderr);
        println!("{:?} → {}", &args[3..], stderr.lines().last().unwrap_or(""));
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr.contains("error:") && !stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.to_lowercase().contains(&needle.to_lowercase()), "{args:?}: {stderr} lacks {needle}");
    }
}

/// Peak RSS of `gemma run` at 4096 context ≤ file size + KV cache + 100 MiB (issue budget).
#[test]
fn peak_memory_within_budget() {
    let Some(m) = model() else { return };
    let file = std::fs::metadata(&m).unwrap().len() as f64 / (1u64 << 20) as f64;
    let out = gemma(
        &[
            "run",
            "-m",
            m.to_str().unwrap(),
            "-p",
            "The capital of France is",
            "-n",
            "16",
            "--temp",
            "0",
            "-c",
            "4096",
            "-t",
            "2",
        ],
        None,
    );
    let stderr = text(&out.stderr);
    let mib_after = |key: &str| -> f64 {
        let rest = &stderr[stderr.find(key).unwrap_or_else(|| panic!("no {key:?} in {stderr}")) + key.len()..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    let (peak, kv) = (mib_after("peak RSS "), mib_after("KV cache "));
    let budget = file + kv + 100.0;
    println!("peak RSS {peak:.1} MiB; budget {budget:.1} MiB = file {file:.1} + KV {kv:.1} + 100");
    assert!(peak <= budget);
}
