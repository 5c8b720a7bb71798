//! `gemma bench` output formats on the real model (tiny -p/-n: seconds), its bad inputs, and
//! a context that does not fit refused before allocating, with the bytes it needs.
use serde_json::Value;
use std::process::{Command, Output};

fn gemma(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gemma")).args(args).output().expect("spawn gemma")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The signed percentage after "peak RSS x MiB (" in a memory line.
fn breakdown_off(line: &str) -> f64 {
    let rest = &line[line.find("MiB (").unwrap_or_else(|| panic!("no peak in {line:?}")) + 5..];
    rest[..rest.find('%').expect("a percentage")].parse().expect("a number")
}

#[test]
fn markdown_table_and_json() {
    let Some(m) = gemma_tests::test_model() else { return };
    let m = m.to_str().unwrap();
    let out = gemma(&["bench", "-m", m, "-p", "8,16", "-n", "4", "-t", "1", "-r", "2"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    println!("{stdout}{stderr}");
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "header, separator, pp8, pp16, tg4");
    assert!(lines[0].starts_with("| model | size | params | backend | threads | test | t/s | peak RSS |"));
    for (line, test) in lines[2..].iter().zip(["pp8", "pp16", "tg4"]) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(cells[5], "1", "{line}");
        assert_eq!(cells[6], test, "{line}");
        let (mean, sd) = cells[7].split_once(" ± ").expect("mean ± sd");
        assert!(mean.parse::<f64>().unwrap() > 0.0 && sd.parse::<f64>().unwrap() >= 0.0, "{line}");
        assert!(cells[8].ends_with("MiB"), "{line}");
        assert!(cells[1].starts_with("gemma3 270M Q4_K_M"), "{line}");
    }
    // One memory breakdown per test, within 10% of the measured peak RSS (the issue's bar).
    let memory: Vec<&str> = stderr.lines().filter(|l| l.starts_with("memory ")).collect();
    assert_eq!(memory.len(), 3);
    for line in memory {
        let off = breakdown_off(line);
        println!("breakdown vs peak RSS: {off:+.1}%");
        assert!(off.abs() <= 10.0, "{line}");
    }

    let out = gemma(&["bench", "-m", m, "-p", "8", "-n", "0", "-t", "1", "-r", "3", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let tests = v.as_array().expect("an array of tests");
    assert_eq!(tests.len(), 1);
    let t = &tests[0];
    assert_eq!((t["n_prompt"].as_u64(), t["n_gen"].as_u64(), t["n_threads"].as_u64()), (Some(8), Some(0), Some(1)));
    assert_eq!(t["samples_ts"].as_array().map(Vec::len), Some(3));
    assert_eq!(t["samples_ns"].as_array().map(Vec::len), Some(3));
    assert!(t["avg_ts"].as_f64().unwrap() > 0.0 && t["stddev_ts"].as_f64().unwrap() >= 0.0);
    for part in ["weights_mapped", "weights_repacked", "weights_copied", "kv_cache", "compute", "runtime"] {
        assert!(t["memory"][part].as_u64().is_some(), "memory.{part}");
    }
    assert!(t["peak_rss_bytes"].as_u64().unwrap() > t["memory"]["weights_mapped"].as_u64().unwrap() / 2);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let Some(m) = gemma_tests::test_model() else { return };
    let m = m.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["-r", "0"], "repetition"),
        (&["-p", "0", "-n", "0"], "nothing to measure"),
        (&["-t", "0"], "threads"),
        (&["-p", "40000", "-n", "0"], "context size"),
        (&["-o", "xml"], "xml"),
    ];
    for (args, needle) in cases {
        let out = gemma(&[&["bench", "-m", m][..], args].concat());
        let stderr = text(&out.stderr);
        println!("{args:?} → {}", stderr.lines().last().unwrap_or(""));
        assert!(!out.status.success() && !stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.to_lowercase().contains(needle), "{args:?}: {stderr} lacks {needle}");
    }
}

/// BAD-INPUTS.md §25 through the CLI: a file whose training context allows 2^31 − 1 tokens,
/// asked for all of them, is refused before the KV cache is allocated, naming the bytes.
#[test]
fn context_that_does_not_fit_is_refused_with_the_bytes_needed() {
    use gemma_tests::tiny_model::{key, TinyConfig, TinyModel};
    let dir = tempfile::tempdir().unwrap();
    let n_ctx = (1u32 << 31) - 1;
    let mut model = TinyModel::new(TinyConfig::default());
    model.set(&key(gemma_gguf::names::llm::CONTEXT_LENGTH), n_ctx);
    let path = model.write(&dir.path().join("huge-context.gguf")).unwrap();
    let start = std::time::Instant::now();
    let c = n_ctx.to_string();
    for cmd in ["run", "bench"] {
        let args: Vec<&str> = match cmd {
            "run" => vec!["run", "-m", path.to_str().unwrap(), "-p", "x", "-c", &c, "-t", "1"],
            _ => vec!["bench", "-m", path.to_str().unwrap(), "-p", "8", "-n", "0", "-c", &c, "-t", "1", "-r", "1"],
        };
        let out = gemma(&args);
        let stderr = text(&out.stderr);
        println!("{cmd}: {}", stderr.trim());
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let needed: u64 = stderr
            .split_once(" needs ")
            .and_then(|(_, r)| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no byte count in {stderr}"));
        assert!(needed > 1 << 36, "the KV cache of 2^31 cells takes far more than 64 GiB: {needed}");
    }
    // Refused, not attempted: allocating and zeroing even a fraction would take much longer.
    println!("both refusals in {:.2} s", start.elapsed().as_secs_f64());
}

/// The image test (`--mmproj --image`) on the tiny random Gemma 3 vision checkpoint converted
/// by the CLI: a row per thread count with the image's 16 tokens and its times (no bound on
/// them: only that they are measured), the JSON fields, and the flags' misuse as errors.
#[test]
fn image_encode_test() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.gguf").to_str().unwrap().to_string();
    let mmproj = dir.path().join("mmproj.gguf").to_str().unwrap().to_string();
    let tiny = gemma_tests::workspace_root().join("tests/data/tiny/gemma3-vision");
    let out = gemma(&["convert", tiny.to_str().unwrap(), "-o", &model, "-t", "f32", "--mmproj", &mmproj, "-q"]);
    assert!(out.status.success(), "convert: {}", text(&out.stderr));
    // A 97×41 PNG: the preprocessing resizes it to the projector's 64×64.
    let image = tiny.join("images/odd-97x41.png").to_str().unwrap().to_string();
    let bench = ["bench", "-m", &model, "--mmproj", &mmproj, "--image", &image, "-r", "2"];

    let out = gemma(&[&bench[..], &["-t", "1,2"]].concat());
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    println!("{stdout}{stderr}");
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "header, separator, an image row per thread count (no pp/tg by default)");
    assert!(lines[0].starts_with(
        "| projector | size | params | backend | threads | test | ms/image | preprocess ms | encode ms |"
    ));
    for (line, threads) in lines[2..].iter().zip(["1", "2"]) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert!(cells[1].starts_with("clip gemma3 F16"), "{line}");
        assert_eq!((cells[5], cells[6]), (threads, "image16"), "{line}");
        let ms: Vec<f64> =
            cells[7..10].iter().map(|c| c.split_once(" ± ").expect("mean ± sd").0.parse().expect("ms")).collect();
        assert!(ms.iter().all(|&m| m > 0.0), "{line}");
        assert!((ms[0] - ms[1] - ms[2]).abs() <= 0.02 + ms[0] * 1e-3, "total = preprocess + encode: {line}");
    }

    // JSON, with a prompt test beside it when -p is given, and the first run timed.
    let out = gemma(&[&bench[..], &["-t", "1", "-p", "8", "-o", "json", "--no-warmup"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let tests = v.as_array().expect("an array of tests");
    assert_eq!(tests.len(), 2, "pp8 and the image");
    assert_eq!(tests[0]["n_prompt"].as_u64(), Some(8));
    let t = &tests[1];
    assert_eq!(
        (t["n_image_tokens"].as_u64(), t["image_width"].as_u64(), t["n_threads"].as_u64()),
        (Some(16), Some(64), Some(1))
    );
    for k in ["samples_ns", "samples_preprocess_ns", "samples_encode_ns"] {
        assert_eq!(t[k].as_array().map(Vec::len), Some(2), "{k}");
    }
    assert!(t["avg_encode_ns"].as_u64().unwrap() > 0 && t["avg_ts"].as_f64().unwrap() > 0.0);

    let cases: [(Vec<&str>, &str); 4] = [
        (vec!["bench", "-m", &model, "--image", &image], "--mmproj"),
        (vec!["bench", "-m", &model, "--mmproj", &mmproj], "--image"),
        (vec!["bench", "-m", &model, "--mmproj", &mmproj, "--image", "/nonexistent.png"], "/nonexistent.png"),
        (vec!["bench", "-m", &model, "--mmproj", &model, "--image", &image], "projector"),
    ];
    for (args, needle) in cases {
        let out = gemma(&args);
        let stderr = text(&out.stderr);
        println!("{:?} → {}", &args[3..], stderr.trim());
        assert!(!out.status.success() && !stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr} lacks {needle}");
    }
}
